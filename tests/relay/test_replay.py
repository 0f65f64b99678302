"""A call holds its request until an attempt commits, so that an attempt no app saw (the
endpoint's REFUSED_STREAM, or its GOAWAY below the attempt's stream) goes to another endpoint.
Fake transports, two endpoints, no sockets."""
from __future__ import annotations

import asyncio
import sys

import grpc
import hpack
import pytest

from grpcmesh.registry.model import Health, Instance
from grpcmesh.relay import frames as f
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.record import CallRecord
from grpcmesh.relay.upstreams import Upstream
from tests.relay.fakes import FakeTransport, attach
from tests.relay.test_relay import OK, REQUEST, RESPONSE, Mesh, client_status, message

OTHER = "127.0.0.1:10"
THIRD = "127.0.0.1:11"


class TwoEndpoints(Mesh):
    """Mesh's relay, client and first endpoint, and a second endpoint, connected too."""

    def __init__(self, limits: RelayLimits = RelayLimits()) -> None:
        super().__init__(limits=limits)
        self.other, self.other_t = self.add_endpoint("e2", OTHER)
        self.records: list[CallRecord] = []
        self.relay.observers.append(self.records.append)

    def add_endpoint(self, name: str, address: str) -> tuple[Upstream, FakeTransport]:
        self.pool.upsert(Instance("svc", name, address, health=Health.SERVING))
        up = Upstream(address, self.relay.upstreams)
        transport = attach(up)
        self.relay.upstreams._current[address] = up
        self.relay.upstreams._all.add(up)
        up.data_received(f.settings_frame([]))
        transport.frames()
        return up, transport

    def first(self) -> tuple[Upstream, FakeTransport, Upstream, FakeTransport]:
        """(the endpoint that got the call, its transport, the other one, its transport)."""
        if self.up.streams:
            return self.up, self.up_t, self.other, self.other_t
        return self.other, self.other_t, self.up, self.up_t

    def assert_clean(self) -> None:
        super().assert_clean()
        assert not self.other.streams
        assert self.relay.held == 0


def kinds(frames: list[tuple[int, int, int, bytes]]) -> list[int]:
    return [k for k, *_ in frames]


@pytest.mark.parametrize("refusal", ["goaway", "refused_stream"])
@pytest.mark.asyncio
async def test_a_call_no_app_saw_is_sent_to_the_other_endpoint_with_its_request(
        refusal: str) -> None:
    mesh = TwoEndpoints()
    mesh.request(body=message(b"hi"), headers=[*REQUEST, ("grpc-timeout", "5S")])
    first, first_t, second, second_t = mesh.first()
    assert kinds(first_t.frames()) == [f.HEADERS, f.DATA]
    mesh.clock.advance(1.0)
    if refusal == "goaway":
        first.data_received(f.goaway(0, f.NO_ERROR))
    else:
        first.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    mesh.down.data_received(f.frame(f.DATA, f.END_STREAM, 1, message(b"more")))
    await asyncio.sleep(0)
    sent = second_t.frames()
    # The request again, then what the client sent while it was on its way.
    assert kinds(sent) == [f.HEADERS, f.DATA, f.DATA]
    assert [p for k, _, _, p in sent if k == f.DATA] == [message(b"hi"), message(b"more")]
    headers = dict(hpack.Decoder().decode(sent[0][3]))
    assert f.parse_timeout(headers["grpc-timeout"]) == 4.0  # what is left of the deadline
    assert mesh.down_t.frames() == []  # the client saw nothing of the refusal
    second.data_received(f.frame(f.HEADERS, f.END_HEADERS, 1, hpack.Encoder().encode(RESPONSE))
                         + f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1,
                                   hpack.Encoder().encode(OK)))
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    assert [r.attempts for r in mesh.records] == [2]
    assert mesh.records[0].endpoint == second.address
    assert mesh.relay.retries == {(mesh.records[0].service, "refused"): 1}  # (/metrics)
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_call_whose_response_reached_the_client_is_not_sent_again() -> None:
    mesh = TwoEndpoints()
    mesh.request(body=message(b"hi"), end=True)
    first, _, _, second_t = mesh.first()
    first.data_received(mesh.headers(1, RESPONSE))  # committed: the client has its headers
    first.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    await asyncio.sleep(0)
    assert second_t.frames() == []
    got = mesh.down_t.frames()
    assert kinds(got) == [f.HEADERS, f.RST_STREAM]
    assert int.from_bytes(got[1][3], "big") == f.REFUSED_STREAM
    assert [r.code for r in mesh.records] == [grpc.StatusCode.UNAVAILABLE]
    mesh.assert_clean()


@pytest.mark.parametrize("limits", [RelayLimits(retry_buffer_bytes=8),
                                    RelayLimits(retry_buffer_total_bytes=8)],
                         ids=["per call", "all calls"])
@pytest.mark.asyncio
async def test_a_request_over_the_retry_buffer_commits_and_is_not_sent_again(
        limits: RelayLimits) -> None:
    mesh = TwoEndpoints(limits)
    mesh.request(body=message(b"more than eight bytes"), end=True)
    first, _, _, second_t = mesh.first()
    assert mesh.relay.held == 0  # nothing held: the attempt committed
    first.data_received(f.goaway(0, f.NO_ERROR))
    await asyncio.sleep(0)
    assert second_t.frames() == []
    got = mesh.down_t.frames()
    assert kinds(got) == [f.RST_STREAM]  # refused: the client may retry it itself
    assert int.from_bytes(got[0][3], "big") == f.REFUSED_STREAM
    assert mesh.relay.retries == {}  # (not sent again)
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_call_refused_everywhere_is_refused_to_its_client() -> None:
    mesh = TwoEndpoints()
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, second_t = mesh.first()
    first.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    await asyncio.sleep(0)
    assert kinds(second_t.frames()) == [f.HEADERS, f.DATA]
    second.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    await asyncio.sleep(0)
    got = mesh.down_t.frames()
    assert kinds(got) == [f.RST_STREAM]
    assert int.from_bytes(got[0][3], "big") == f.REFUSED_STREAM
    assert [(r.code, r.attempts) for r in mesh.records] == [(grpc.StatusCode.UNAVAILABLE, 2)]
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_client_that_leaves_while_its_call_is_sent_again_cancels_it() -> None:
    mesh = TwoEndpoints()
    mesh.request(body=message(b"hi"))
    first, _, _, second_t = mesh.first()
    first.data_received(f.goaway(0, f.NO_ERROR))
    mesh.down.data_received(f.rst_stream(1, f.CANCEL))
    await asyncio.sleep(0)
    assert second_t.frames() == []
    assert [r.code for r in mesh.records] == [grpc.StatusCode.CANCELLED]
    mesh.assert_clean()


@pytest.mark.parametrize("refusal", ["goaway", "refused_stream"])
@pytest.mark.asyncio
async def test_every_byte_the_client_sent_is_credited_once_across_refusals(
        refusal: str) -> None:
    mesh = TwoEndpoints()
    third, third_t = mesh.add_endpoint("e3", THIRD)
    ups = {mesh.up: mesh.up_t, mesh.other: mesh.other_t, third: third_t}
    for up, transport in ups.items():  # tiny windows: request DATA waits in the legs
        up.data_received(f.settings_frame([(f.INITIAL_WINDOW_SIZE, 5)]))
        transport.frames()
    window = RelayLimits().stream_window

    def credited() -> int:  # credit returned minus bytes received, on the client's stream
        leg = mesh.down.streams[1]
        return leg.recv + leg.unacked - window

    refuse = f.rst_stream(1, f.REFUSED_STREAM) if refusal == "refused_stream" else f.goaway(0)
    mesh.request(body=message(b"a" * 95))
    a = next(u for u in ups if u.streams)
    assert credited() == -95  # 5 bytes sent, 95 wait in a's window
    a.data_received(refuse)
    assert credited() == 0  # what waited was credited when a's stream was reset
    mesh.down.data_received(f.frame(f.DATA, 0, 1, message(b"b" * 45)))  # during the retry
    assert credited() == -50
    await asyncio.sleep(0)
    b = next(u for u in ups if u is not a and u.streams)
    assert credited() == -50  # it waits in b's window, behind the replay
    b.data_received(refuse)
    assert credited() == 0
    await asyncio.sleep(0)
    c = next(u for u in ups if u not in (a, b))
    sid = next(iter(c.streams))
    c.data_received(f.window_update(0, 1000) + f.window_update(sid, 1000))
    sent = b"".join(p for k, _, _, p in ups[c].frames() if k == f.DATA)
    assert sent == message(b"a" * 95) + message(b"b" * 45)
    assert credited() == 0
    mesh.down.data_received(f.frame(f.DATA, f.END_STREAM, 1, b""))
    c.data_received(f.frame(f.HEADERS, f.END_HEADERS, sid, mesh.server.encode(RESPONSE))
                    + f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, sid,
                              mesh.server.encode(OK)))
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    assert mesh.relay.held == 0 and mesh.relay.in_flight == 0
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())


@pytest.mark.asyncio
async def test_what_a_call_holds_in_memory_is_what_it_counts_whatever_the_frames() -> None:
    """1-byte DATA frames, each followed by as many empty ones as --max-empty-frames allows,
    must not make the held request cost more memory than its byte count says."""
    mesh = TwoEndpoints()
    n = 20_000
    mesh.request(body=b"\0" + n.to_bytes(4, "big"))  # one message of n bytes follows
    one = f.frame(f.DATA, 0, 1, b"x") + f.frame(f.DATA, 0, 1, b"") * 10
    for _ in range(n // 1000):
        mesh.down.data_received(one * 1000)
        while mesh.down.buf:  # (the rest of a read is taken on later turns)
            await asyncio.sleep(0)
        for up, transport in ((mesh.up, mesh.up_t), (mesh.other, mesh.other_t)):
            if up.streams:  # the app reads: its windows come back
                up.data_received(f.window_update(0, 1000) + f.window_update(1, 1000))
            transport.frames()
    call = mesh.down.streams[1].call
    assert call.sent is not None and call.held == n + 5 == mesh.relay.held
    assert sys.getsizeof(call.sent) < 2 * call.held + 1024


@pytest.mark.asyncio
async def test_request_headers_that_do_not_end_the_stream_are_malformed() -> None:
    """Only one header block may follow a request's headers, its trailers, and it ends the
    stream (RFC 9113 8.1): others are not forwarded, nor held, but reset the stream."""
    mesh = TwoEndpoints()
    mesh.request()
    _, first_t, _, _ = mesh.first()
    first_t.frames()
    mesh.down.data_received(f.frame(f.HEADERS, f.END_HEADERS, 1,
                                    mesh.client.encode([("x-pad", "v" * 1000)])))
    got = mesh.down_t.frames()
    assert kinds(got) == [f.RST_STREAM]
    assert int.from_bytes(got[0][3], "big") == f.PROTOCOL_ERROR
    assert kinds(first_t.frames()) == [f.RST_STREAM]  # the attempt is cancelled
    assert [(r.code, r.reason) for r in mesh.records] == [(grpc.StatusCode.INTERNAL,
                                                           "malformed")]
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_call_sent_again_that_no_endpoint_takes_is_refused_to_its_client() -> None:
    """The other endpoint cannot be reached now (its connect backs off): the client's stream
    is refused, which gRPC clients retry transparently, rather than answered UNAVAILABLE."""
    mesh = TwoEndpoints()
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, _ = mesh.first()
    mesh.relay.upstreams._current.pop(second.address)  # its connection broke ...
    mesh.relay.upstreams._failed[second.address] = (mesh.clock.now() + 2, 0.2, "refused")
    first.data_received(f.goaway(0, f.NO_ERROR))
    for _ in range(3):
        await asyncio.sleep(0)
    got = mesh.down_t.frames()
    assert kinds(got) == [f.RST_STREAM]
    assert int.from_bytes(got[0][3], "big") == f.REFUSED_STREAM
    assert [(r.code, r.reason) for r in mesh.records] == [(grpc.StatusCode.UNAVAILABLE,
                                                           "refused")]
    second.close()
    await asyncio.sleep(0)
