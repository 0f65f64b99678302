"""Whole calls through the relay on fake transports: a client connection, a Relay and one
upstream connection, driven frame by frame. No sockets. After each scenario nothing may be left
behind: no stream in a map, no call counted in flight, and every byte a peer sent credited
back to its connection window."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import hpack
import pytest

from grpcmesh.balance.endpoint import Endpoint
from grpcmesh.balance.pool import Pool
from grpcmesh.clock import FakeClock
from grpcmesh.interceptors import CallView, Interceptor
from grpcmesh.registry.model import Health, Instance
from grpcmesh.relay import downstream as downstream_module
from grpcmesh.relay import frames as f
from grpcmesh.relay.downstream import Downstream
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.peer import CONN_WINDOW
from grpcmesh.relay.record import CallRecord, status_of
from grpcmesh.relay.relay import Relay
from grpcmesh.relay.upstreams import Upstream
from grpcmesh.routing import Target
from tests.relay.fakes import attach

ADDRESS = "127.0.0.1:9"
REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/pkg.S/M"),
           (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")]
OK = [("grpc-status", "0")]
RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]


def message(body: bytes) -> bytes:
    return b"\0" + len(body).to_bytes(4, "big") + body


class Mesh:
    """A relay with one client connection and one upstream connection that is up."""

    def __init__(self, client_settings: list[tuple[int, int]] | None = None,
                 limits: RelayLimits = RelayLimits(),
                 interceptors: Sequence[Interceptor] = ()) -> None:
        self.pool = Pool("svc")
        self.pool.upsert(Instance("svc", "e1", ADDRESS, health=Health.SERVING))
        self.endpoint: Endpoint = self.pool.endpoints["e1"]
        self.target = Target("svc", (self.pool,))
        self.clock = FakeClock()
        self.relay = Relay(lambda path, override: self.target, limits=limits,
                           interceptors=interceptors, clock=self.clock)
        self.up = Upstream(ADDRESS, self.relay.upstreams)
        self.up_t = attach(self.up)
        self.relay.upstreams._current[ADDRESS] = self.up  # as if it had been connected
        self.relay.upstreams._all.add(self.up)
        self.up.data_received(f.settings_frame([]))  # the endpoint's SETTINGS
        self.down = Downstream(self.relay)
        self.down_t = attach(self.down)
        self.client = hpack.Encoder()
        self.server = hpack.Encoder()
        self.down.data_received(f.PREFACE + f.settings_frame(client_settings or []))
        self.down_t.frames()
        self.up_t.frames()

    def request(self, sid: int = 1, body: bytes | None = None, end: bool = False,
                headers: list[tuple[str, str]] = REQUEST) -> None:
        data = f.frame(f.HEADERS, f.END_HEADERS, sid, self.client.encode(headers))
        if body is not None:
            data += f.frame(f.DATA, f.END_STREAM if end else 0, sid, body)
        self.down.data_received(data)

    def respond(self, *frames: bytes) -> None:
        self.up.data_received(b"".join(frames))

    def headers(self, sid: int, headers: list[tuple[str, str]], end: bool = False) -> bytes:
        flags = f.END_HEADERS | (f.END_STREAM if end else 0)
        return f.frame(f.HEADERS, flags, sid, self.server.encode(headers))

    def assert_clean(self) -> None:
        for peer in (self.down, self.up):
            assert not peer.streams and not peer.blocked
            assert peer.recv_window + peer.conn_unacked == CONN_WINDOW
        assert self.relay.in_flight == 0
        assert self.endpoint.in_flight == 0


def client_trailers(frames: list[tuple[int, int, int, bytes]]) -> list[tuple[str, str]]:
    """The trailers among the frames the client got (header blocks decoded in order)."""
    decoder = hpack.Decoder()
    trailers = None
    for kind, flags, _, payload in frames:
        if kind == f.HEADERS:
            headers = [(str(k), str(v)) for k, v in decoder.decode(payload)]
            if flags & f.END_STREAM:
                trailers = headers
    assert trailers is not None, "no trailers reached the client"
    return trailers


def client_status(frames: list[tuple[int, int, int, bytes]]) -> grpc.StatusCode:
    return status_of(client_trailers(frames))[0]


def test_a_unary_call_is_relayed_and_leaves_nothing_behind() -> None:
    mesh = Mesh()
    mesh.request(body=message(b"hi"), end=True)
    sent = mesh.up_t.frames()
    assert [k for k, *_ in sent] == [f.HEADERS, f.DATA]
    mesh.respond(mesh.headers(1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"yo")),
                 mesh.headers(1, OK, end=True))
    got = mesh.down_t.frames()
    assert [k for k, *_ in got] == [f.HEADERS, f.DATA, f.HEADERS]
    assert client_status(got) == grpc.StatusCode.OK
    assert mesh.endpoint.calls == 1
    mesh.assert_clean()


def test_a_client_half_close_after_the_response_ended_frees_the_call() -> None:
    mesh = Mesh()
    mesh.request(body=message(b"hi"))  # a stream the client has not half-closed
    mesh.respond(mesh.headers(1, RESPONSE), mesh.headers(1, OK, end=True))
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    mesh.down.data_received(f.frame(f.DATA, f.END_STREAM, 1, b""))
    mesh.respond(f.rst_stream(1, f.NO_ERROR))
    mesh.assert_clean()


def test_an_upstream_reset_after_its_trailers_keeps_what_waits_for_the_client() -> None:
    mesh = Mesh(client_settings=[(f.INITIAL_WINDOW_SIZE, 0)])  # the client reads nothing yet
    mesh.request(body=message(b"hi"))
    mesh.respond(mesh.headers(1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"yo")),
                 mesh.headers(1, OK, end=True), f.rst_stream(1, f.NO_ERROR))
    assert [k for k, *_ in mesh.down_t.frames()] == [f.HEADERS]  # DATA waits for window
    mesh.down.data_received(f.window_update(1, 100))
    got = mesh.down_t.frames()
    assert [k for k, *_ in got] == [f.DATA, f.HEADERS, f.RST_STREAM]
    assert got[0][3] == message(b"yo")
    assert client_status(got) == grpc.StatusCode.OK
    assert got[2][3] == f.NO_ERROR.to_bytes(4, "big")  # then: stop sending, as a server does
    mesh.down.data_received(f.frame(f.DATA, 0, 1, message(b"late")))  # sent before it knew
    mesh.assert_clean()


def test_an_upstream_connection_lost_after_its_trailers_keeps_them() -> None:
    mesh = Mesh(client_settings=[(f.INITIAL_WINDOW_SIZE, 0)])
    mesh.request(body=message(b"hi"))  # not half-closed: the upstream stream stays open
    mesh.respond(mesh.headers(1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"yo")),
                 mesh.headers(1, OK, end=True))
    mesh.up.connection_lost(None)
    mesh.down.data_received(f.window_update(1, 100))
    got = mesh.down_t.frames()
    assert client_status(got) == grpc.StatusCode.OK
    assert got[-1][0] == f.RST_STREAM
    assert mesh.endpoint.calls == 1 and mesh.endpoint.failures == 0
    assert not mesh.down.streams and mesh.relay.in_flight == 0
    assert mesh.down.recv_window + mesh.down.conn_unacked == CONN_WINDOW


def test_an_upstream_connection_lost_mid_call_is_unavailable_naming_the_endpoint() -> None:
    mesh = Mesh()
    mesh.request(body=message(b"hi"), end=True)
    mesh.respond(mesh.headers(1, RESPONSE))
    mesh.up.connection_lost(None)
    got = mesh.down_t.frames()
    assert client_status(got) == grpc.StatusCode.UNAVAILABLE
    assert ADDRESS in dict(client_trailers(got))["grpc-message"]
    assert mesh.endpoint.failures == 1
    assert not mesh.down.streams and mesh.relay.in_flight == 0 and mesh.endpoint.in_flight == 0


def test_a_client_gone_with_response_data_waiting_credits_the_upstream_connection() -> None:
    mesh = Mesh(client_settings=[(f.INITIAL_WINDOW_SIZE, 0)])
    mesh.request(body=message(b"hi"), end=True)
    mesh.respond(mesh.headers(1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"x" * 10_000)))
    assert mesh.down.blocked  # the response waits for the client's window
    mesh.down.connection_lost(None)
    resets = [(sid, p) for k, _, sid, p in mesh.up_t.frames() if k == f.RST_STREAM]
    assert resets == [(1, f.CANCEL.to_bytes(4, "big"))]
    mesh.assert_clean()


def test_request_data_buffered_for_a_call_that_fails_is_credited_back() -> None:
    async def scenario() -> None:
        mesh = Mesh()
        mesh.pool.remove("e1")  # no instance: the call fails after its DATA was buffered
        body = b"x" * 10_000
        mesh.request(body=message(body))
        await asyncio.sleep(0)  # the slow path runs and answers UNAVAILABLE
        assert client_status(mesh.down_t.frames()) == grpc.StatusCode.UNAVAILABLE
        assert mesh.down.recv_window + mesh.down.conn_unacked == CONN_WINDOW
        assert not mesh.down.streams and mesh.relay.in_flight == 0

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_a_frame_over_the_advertised_size_ends_the_connection_before_it_is_read() -> None:
    mesh = Mesh()
    mesh.request()
    header = (f.DEFAULT_FRAME_SIZE + 1).to_bytes(3, "big") + bytes((f.DATA, 0)) + \
        (1).to_bytes(4, "big")
    mesh.down.data_received(header + b"x" * 100)  # the rest is never waited for
    goaway = [p for k, _, _, p in mesh.down_t.frames() if k == f.GOAWAY]
    assert int.from_bytes(goaway[0][4:8], "big") == f.FRAME_SIZE_ERROR
    assert mesh.down_t.closed and not mesh.down.buf


def test_frames_on_a_stream_the_relay_reset_are_ignored() -> None:
    mesh = Mesh()
    mesh.request(body=message(b"hi"))
    mesh.respond(f.rst_stream(1, f.INTERNAL_ERROR))  # the client's stream is reset too
    assert [k for k, *_ in mesh.down_t.frames()] == [f.RST_STREAM]
    late = f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, mesh.client.encode([("x", "y")]))
    mesh.down.data_received(f.frame(f.DATA, 0, 1, b"late") + late)
    assert not mesh.down_t.closed
    mesh.assert_clean()


def test_data_on_a_stream_never_opened_ends_the_connection() -> None:
    mesh = Mesh()
    mesh.down.data_received(f.frame(f.DATA, 0, 7, b"x"))
    goaway = [p for k, _, _, p in mesh.down_t.frames() if k == f.GOAWAY]
    assert int.from_bytes(goaway[0][4:8], "big") == f.PROTOCOL_ERROR


def test_oversized_metadata_fails_the_call_not_the_connection() -> None:
    mesh = Mesh()
    big = [*REQUEST, ("x-big", "v" * 100_000)]  # over hpack's default 64 KiB header list
    blocks = mesh.client.encode(big, huffman=False)
    chunks = [blocks[i:i + f.DEFAULT_FRAME_SIZE] for i in range(0, len(blocks), 16_384)]
    data = f.frame(f.HEADERS, 0, 1, chunks[0])
    for i, chunk in enumerate(chunks[1:], 1):
        data += f.frame(f.CONTINUATION, f.END_HEADERS if i == len(chunks) - 1 else 0, 1, chunk)
    mesh.down.data_received(data)
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not mesh.down_t.closed


def test_graceful_stop_serves_streams_sent_before_the_final_goaway() -> None:
    async def scenario() -> None:
        mesh = Mesh()
        stopping = asyncio.ensure_future(mesh.relay.stop(5.0))
        await asyncio.sleep(0)
        first = mesh.down_t.frames()
        assert [k for k, *_ in first] == [f.GOAWAY, f.PING]
        assert int.from_bytes(first[0][3][:4], "big") == f.MAX_WINDOW
        mesh.request(sid=1, body=message(b"hi"), end=True)  # sent before it saw the GOAWAY
        mesh.down.data_received(f.frame(f.PING, f.ACK, 0, first[1][3]))
        final = [p for k, _, _, p in mesh.down_t.frames() if k == f.GOAWAY]
        assert int.from_bytes(final[0][:4], "big") == 1  # stream 1 will be served
        await asyncio.sleep(0.01)
        assert not stopping.done()  # the call is still in flight
        mesh.respond(mesh.headers(1, RESPONSE), mesh.headers(1, OK, end=True))
        assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
        await asyncio.wait_for(stopping, 2)
        assert mesh.down_t.closed

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_graceful_stop_does_not_wait_the_grace_for_a_client_that_never_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(downstream_module, "DRAIN_PING_TIMEOUT", 0.05)

    async def scenario() -> None:
        mesh = Mesh()  # an idle client that will not answer the PING
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(mesh.relay.stop(30.0), 5)
        assert loop.time() - started < 1.0
        final = [p for k, _, _, p in mesh.down_t.frames() if k == f.GOAWAY][-1]
        assert int.from_bytes(final[:4], "big") == 0 and mesh.down_t.closed

    asyncio.run(asyncio.wait_for(scenario(), 5))


def goaway_code(frames: list[tuple[int, int, int, bytes]]) -> int | None:
    codes = [int.from_bytes(p[4:8], "big") for kind, _, _, p in frames if kind == f.GOAWAY]
    return codes[-1] if codes else None


def test_the_relay_advertises_its_stream_limit_and_refuses_streams_beyond_it() -> None:
    mesh = Mesh(limits=RelayLimits(max_concurrent_streams=2))
    down = Downstream(mesh.relay)
    hello = attach(down).frames()
    settings = f.parse_settings(next(p for k, fl, _, p in hello if k == f.SETTINGS))
    assert (f.MAX_CONCURRENT_STREAMS, 2) in settings
    mesh.down.data_received(f.frame(f.SETTINGS, f.ACK, 0))  # it knows the limit
    for sid in (1, 3, 5):
        mesh.request(sid)
    assert [(k, sid) for k, _, sid, _ in mesh.down_t.frames()] == [(f.RST_STREAM, 5)]
    assert len(mesh.up.streams) == 2  # the third never reached the upstream
    for sid in range(7, 7 + 2 * 3, 2):  # a client that keeps ignoring it loses its connection
        mesh.request(sid)
    assert goaway_code(mesh.down_t.frames()) == f.ENHANCE_YOUR_CALM


def test_rapid_resets_are_absorbed_and_the_client_disconnected() -> None:
    async def scenario() -> None:
        mesh = Mesh(limits=RelayLimits(reset_min_streams=100))
        opened = 0
        sid = 1
        while not mesh.down_t.closed:
            assert sid < 400, "never disconnected"
            mesh.down.data_received(
                f.frame(f.HEADERS, f.END_HEADERS, sid, mesh.client.encode(REQUEST))
                + f.rst_stream(sid, f.CANCEL))
            opened += 1
            sid += 2
            await asyncio.sleep(0)
        assert goaway_code(mesh.down_t.frames()) == f.ENHANCE_YOUR_CALM
        # Each reset came in the same read as its HEADERS: the call ended in the relay.
        assert [k for k, *_ in mesh.up_t.frames()] == [] and opened == 100
        await asyncio.sleep(0)
        assert mesh.relay.in_flight == 0

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_a_stream_reset_in_the_read_that_opened_it_reaches_no_interceptor() -> None:
    class Seen(Interceptor):
        def __init__(self) -> None:
            self.methods: list[str] = []

        def request(self, call: CallView) -> None:
            self.methods.append(call.method)

    async def scenario() -> None:
        seen = Seen()
        mesh = Mesh(interceptors=[seen])
        records: list[CallRecord] = []
        mesh.relay.observers.append(records.append)
        mesh.down.data_received(
            f.frame(f.HEADERS, f.END_HEADERS, 1, mesh.client.encode(REQUEST))
            + f.frame(f.DATA, 0, 1, message(b"hi")) + f.rst_stream(1, f.CANCEL))
        mesh.request(3, body=message(b"hi"), end=True)  # the next one goes on
        assert seen.methods == ["/pkg.S/M"]
        assert [k for k, _, sid, _ in mesh.up_t.frames()] == [f.HEADERS, f.DATA]
        assert [r.code for r in records] == [grpc.StatusCode.CANCELLED]
        mesh.respond(mesh.headers(1, RESPONSE), mesh.headers(1, OK, end=True))
        mesh.assert_clean()

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_a_request_that_is_not_grpc_gets_http_415_and_goes_nowhere() -> None:
    mesh = Mesh()
    json = [(k, "application/json" if k == "content-type" else v) for k, v in REQUEST]
    mesh.request(headers=json, body=b"{}" * 1000, end=True)
    got = mesh.down_t.frames()
    headers = client_trailers(got)
    assert (":status", "415") in headers
    assert "relays gRPC only" in dict(headers)["grpc-message"]
    assert mesh.up_t.frames() == []
    mesh.assert_clean()


def test_a_long_path_is_refused_quickly_with_a_short_message() -> None:
    mesh = Mesh()
    long = [(k, "/" + "p" * 200_000 if k == ":path" else v) for k, v in REQUEST]
    block = mesh.client.encode(long, huffman=False)  # hpack's Huffman coder is quadratic
    mesh.down.data_received(f.header_frames(1, block, True, f.DEFAULT_FRAME_SIZE))
    got = mesh.down_t.frames()
    trailers = dict(client_trailers(got))
    assert trailers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert len(trailers["grpc-message"]) < 300
    assert sum(len(p) for k, _, _, p in got if k == f.HEADERS) < 1000
    assert not mesh.down_t.closed
    mesh.assert_clean()


def test_a_client_that_reads_nothing_does_not_hold_the_shared_upstream_connection() -> None:
    mesh = Mesh(client_settings=[(f.INITIAL_WINDOW_SIZE, 0)])  # this client grants no window
    window = mesh.relay.limits.stream_window
    sids = list(range(1, 2 * 70, 2))
    for sid in sids:  # 70 streams x 256 KiB: more than the upstream connection's 16 MiB
        mesh.request(sid, body=message(b"go"), end=True)
    mesh.up_t.frames()
    body = message(b"r" * (window - 5))  # one message filling the stream window
    for sid in sids:
        mesh.respond(mesh.headers(sid, RESPONSE),
                     *[f.frame(f.DATA, 0, sid, body[i:i + 16_384])
                       for i in range(0, window, 16_384)])
    assert not mesh.up_t.closed  # never beyond the windows the relay granted
    updates = [p for k, _, sid, p in mesh.up_t.frames() if k == f.WINDOW_UPDATE and sid == 0]
    assert sum(int.from_bytes(p, "big") for p in updates) >= 70 * window - (16 << 20)
    held = sum(len(p[0]) for leg in mesh.down.blocked for p in leg.pending)
    assert held == 70 * window  # one stream window each, no more
    # Another call on the same upstream connection is answered at once.
    other = Downstream(mesh.relay)
    other_t = attach(other)
    other.data_received(f.PREFACE + f.settings_frame([]))
    other.data_received(f.frame(f.HEADERS, f.END_HEADERS, 1, hpack.Encoder().encode(REQUEST))
                        + f.frame(f.DATA, f.END_STREAM, 1, message(b"hi")))
    up_sid = max(mesh.up.streams)
    mesh.respond(mesh.headers(up_sid, RESPONSE), f.frame(f.DATA, 0, up_sid, message(b"ok")),
                 mesh.headers(up_sid, OK, end=True))
    assert client_status(other_t.frames()) == grpc.StatusCode.OK
    # The stalled client leaves: everything it held goes at once.
    mesh.down.connection_lost(None)
    assert not mesh.down.blocked and not mesh.up.streams


def test_rejected_header_blocks_are_never_cached() -> None:
    mesh = Mesh()
    mesh.down.data_received(f.frame(f.SETTINGS, f.ACK, 0))
    mesh.client.header_table_size = 0  # applies our setting: its blocks become verbatim
    for n in range(20):
        big = [*REQUEST, ("x-big", f"{n}" * 20_000)]  # over the metadata limit
        block = mesh.client.encode(big, huffman=False)
        mesh.down.data_received(f.header_frames(2 * n + 1, block, True, f.DEFAULT_FRAME_SIZE))
    assert mesh.down.blocks.verbatim and len(mesh.relay.cache) == 0
    mesh.request(99, body=message(b"ok"), end=True)  # an accepted block is kept
    assert len(mesh.relay.cache) == 1


def test_connections_without_a_preface_idle_or_stalled_are_closed_by_the_sweep() -> None:
    asyncio.run(asyncio.wait_for(sweep_scenario(), 5))


async def sweep_scenario() -> None:
    limits = RelayLimits(handshake_timeout=5, idle_timeout=60, stall_timeout=30)
    mesh = Mesh(limits=limits)
    silent = Downstream(mesh.relay)
    silent_t = attach(silent)
    mesh.relay.sweep(mesh.clock.now())
    assert not silent_t.closed
    mesh.clock.advance(6)
    mesh.relay.sweep(mesh.clock.now())
    assert silent_t.aborted  # it never spoke HTTP/2: no GOAWAY
    # mesh.down finished its handshake: it is idle (no stream) from the first sweep on.
    mesh.clock.advance(54)
    mesh.relay.sweep(mesh.clock.now())
    assert not mesh.down_t.closed and [k for k, *_ in mesh.down_t.frames()] == []
    mesh.clock.advance(1)
    mesh.relay.sweep(mesh.clock.now())
    got = [k for k, *_ in mesh.down_t.frames()]
    assert got == [f.GOAWAY, f.PING]  # a graceful close, as a drain
    # An upstream whose output does not drain is aborted after stall_timeout.
    mesh.up_t.high = 10
    mesh.up.queue(b"\0" * 100)
    mesh.relay.flusher.flush()
    assert mesh.up.paused
    mesh.clock.advance(31)
    mesh.relay.sweep(mesh.clock.now())
    assert mesh.up_t.aborted


def test_connections_over_the_limit_are_dropped_at_once() -> None:
    mesh = Mesh(limits=RelayLimits(max_connections=1))
    extra = Downstream(mesh.relay)
    extra_t = attach(extra)
    assert extra_t.aborted and extra not in mesh.relay.downstreams


def records(mesh: Mesh) -> list[CallRecord]:
    seen: list[CallRecord] = []
    mesh.relay.observers.append(seen.append)
    return seen


def test_each_call_ends_once_with_one_record_of_who_answered() -> None:
    mesh = Mesh()
    seen = records(mesh)
    mesh.request(1, body=message(b"hi"), end=True)
    mesh.respond(mesh.headers(1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"yo")),
                 mesh.headers(1, OK, end=True), f.rst_stream(1, f.NO_ERROR))
    mesh.down.data_received(f.rst_stream(1, f.CANCEL))  # late: the call is over already
    assert len(seen) == 1
    record = seen[0]
    assert (record.method, record.service, record.endpoint) == ("/pkg.S/M", "svc", ADDRESS)
    assert (record.code, record.by, record.reason, record.attempts) == (
        grpc.StatusCode.OK, "app", "", 1)
    assert record.request_bytes == len(message(b"hi"))
    assert record.response_bytes == len(message(b"yo"))
    assert record.first_byte is not None and record.first_byte <= record.duration
    mesh.assert_clean()


def test_the_proxys_own_answers_and_a_client_leaving_are_recorded_too() -> None:
    mesh = Mesh()
    seen = records(mesh)
    json = [(k, "application/json" if k == "content-type" else v) for k, v in REQUEST]
    mesh.request(1, headers=json, end=True)
    mesh.request(3, body=message(b"hi"))
    mesh.down.data_received(f.rst_stream(3, f.CANCEL))
    assert [(r.code, r.by, r.reason) for r in seen] == [
        (grpc.StatusCode.INTERNAL, "proxy", "not_grpc"),
        (grpc.StatusCode.CANCELLED, "client", "")]
    assert seen[1].endpoint == ADDRESS and seen[0].endpoint == ""
    assert mesh.endpoint.calls == 0  # a client that left is not the endpoint's fault
    mesh.assert_clean()


def test_the_relay_ends_a_call_whose_deadline_passes_and_cancels_the_upstream() -> None:
    async def scenario() -> None:
        mesh = Mesh()
        seen = records(mesh)
        mesh.request(1, headers=[*REQUEST, ("grpc-timeout", "20m")], body=message(b"hi"),
                     end=True)
        assert [k for k, *_ in mesh.up_t.frames()] == [f.HEADERS, f.DATA]
        await asyncio.sleep(0.1)  # the app never answers, and the client does nothing either
        assert client_status(mesh.down_t.frames()) == grpc.StatusCode.DEADLINE_EXCEEDED
        resets = [(sid, p) for k, _, sid, p in mesh.up_t.frames() if k == f.RST_STREAM]
        assert resets == [(1, f.CANCEL.to_bytes(4, "big"))]
        assert [(r.code, r.by, r.reason) for r in seen] == [
            (grpc.StatusCode.DEADLINE_EXCEEDED, "proxy", "deadline")]
        assert mesh.endpoint.failures == 0 and mesh.endpoint.calls == 1  # charged, not failed
        assert mesh.relay.in_flight == 0

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_a_call_answered_in_time_cancels_its_deadline_timer() -> None:
    async def scenario() -> None:
        mesh = Mesh()
        seen = records(mesh)
        mesh.request(1, headers=[*REQUEST, ("grpc-timeout", "30m")], body=message(b"hi"),
                     end=True)
        mesh.respond(mesh.headers(1, RESPONSE), mesh.headers(1, OK, end=True))
        await asyncio.sleep(0.06)
        assert [r.code for r in seen] == [grpc.StatusCode.OK]
        assert [k for k, *_ in mesh.up_t.frames() if k == f.RST_STREAM] == []

    asyncio.run(asyncio.wait_for(scenario(), 5))
