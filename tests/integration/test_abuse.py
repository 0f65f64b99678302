"""Hostile clients against a real sidecar (outbound relay -> the example app), with a raw HTTP/2
client that sends what grpcio never would. Each test checks that the limit holds and that a
well-behaved client beside the attacker is still served."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.example.server import EchoServer
from grpcmesh.relay import frames as f
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.relay import Relay
from grpcmesh.sidecar import Sidecar
from tests.conftest import Mesh
from tests.h2raw import RawClient, grpc_message, request_headers

UNARY = "/grpcmesh.example.v1.Echo/Unary"
STREAM = "/grpcmesh.example.v1.Echo/ServerStream"


@dataclass
class Setup:
    app: EchoServer
    sidecar: Sidecar
    stub: echo_pb2_grpc.EchoStub
    raws: list[RawClient]

    async def raw(self, settings: list[tuple[int, int]] | None = None,
                  preface: bool = True) -> RawClient:
        """A raw HTTP/2 connection to the sidecar's outbound port, closed after the test."""
        client = await RawClient.connect(self.sidecar.outbound_address, settings, preface)
        self.raws.append(client)
        return client

    async def well_behaved(self, calls: int = 20) -> None:
        """A normal client is still served: every call succeeds."""
        for n in range(calls):
            reply = await self.stub.Unary(pb.EchoRequest(message=f"m{n}"), timeout=5)
            assert reply.message == f"m{n}"


async def start(mesh: Mesh, **limits: float) -> AsyncIterator[Setup]:
    app = await mesh.app("a")
    await mesh.sidecar("echo", app, inbound=False)
    client = await mesh.sidecar("client", limits=RelayLimits(**limits))  # type: ignore[arg-type]
    await mesh.serving(client, "echo", 1)
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        setup = Setup(app, client, echo_pb2_grpc.EchoStub(channel), [])
        try:
            yield setup
        finally:
            for raw in setup.raws:
                raw.close()


def held(sidecar: Sidecar) -> int:
    """Bytes the sidecar's outbound relay holds for its clients: waiting for their windows,
    and written but not yet taken by the socket."""
    relay = sidecar.outbound_server
    assert isinstance(relay, Relay)
    total = 0
    for down in relay.downstreams:
        total += sum(len(p[0]) for leg in down.blocked for p in leg.pending)
        assert down.transport is not None
        total += down.transport.get_write_buffer_size()
    return total


def upstream_streams(sidecar: Sidecar) -> int:
    """Streams the sidecar's outbound relay opened to apps."""
    relay = sidecar.outbound_server
    assert isinstance(relay, Relay)
    return sum((up.next_id - 1) // 2 for up in relay.upstreams.connections())


@pytest_asyncio.fixture
async def setup(mesh: Mesh) -> AsyncIterator[Setup]:
    async for s in start(mesh, handshake_timeout=0.5, stall_timeout=1.0):
        yield s


@pytest.mark.asyncio
async def test_streams_over_the_advertised_limit_are_refused(mesh: Mesh) -> None:
    async for s in start(mesh, max_concurrent_streams=5):
        raw = await s.raw()
        await raw.read()
        settings = f.parse_settings(next(p for k, fl, _, p in raw.frames
                                         if k == f.SETTINGS and not fl & f.ACK))
        assert (f.MAX_CONCURRENT_STREAMS, 5) in settings
        raw.send(f.frame(f.SETTINGS, f.ACK, 0))
        request = pb.EchoRequest(delay_ms=2000).SerializeToString()  # they stay open a while
        for sid in range(1, 2 * 7, 2):
            raw.send(raw.headers(sid, request_headers(UNARY))
                     + raw.data(sid, grpc_message(request), end=True))
        await raw.read(1.0, until_closed=True)
        refused = [sid for k, _, sid, p in raw.frames
                   if k == f.RST_STREAM and int.from_bytes(p, "big") == f.REFUSED_STREAM]
        assert refused == [11, 13]
        await s.well_behaved()


@pytest.mark.asyncio
async def test_rapid_reset_closes_the_connection_and_spares_the_app(setup: Setup) -> None:
    await setup.well_behaved(1)  # the connection to the app is up: calls go straight to it
    before = upstream_streams(setup.sidecar)
    raw = await setup.raw()
    batch = b""
    for sid in range(1, 2 * 2000, 2):
        batch += raw.headers(sid, request_headers(UNARY)) + f.rst_stream(sid, f.CANCEL)
        if sid % 200 == 199:
            raw.send(batch)
            batch = b""
            await asyncio.sleep(0)
    assert await raw.closed(5.0)
    assert raw.goaway() == f.ENHANCE_YOUR_CALM
    # The app saw a few of those calls at most: once the client looked like an attack, a
    # reset that came with its HEADERS ended the call before it went upstream.
    assert upstream_streams(setup.sidecar) - before <= 20
    await setup.well_behaved()


@pytest.mark.asyncio
async def test_a_request_that_is_not_grpc_gets_http_415(setup: Setup) -> None:
    raw = await setup.raw()
    raw.send(raw.headers(1, request_headers(UNARY, content_type="application/json"))
             + b"".join(f.frame(f.DATA, 0, 1, b"{" * 16_000) for _ in range(3))
             + f.frame(f.DATA, f.END_STREAM, 1, b"}"))
    assert (":status", "415") in await raw.answer(1)
    assert setup.app.service.calls == 0
    assert not raw.reader.at_eof()  # the connection stays: only the request was refused


@pytest.mark.asyncio
async def test_a_huge_path_is_answered_at_once_with_a_short_message(setup: Setup) -> None:
    raw = await setup.raw()
    raw.send(raw.headers(1, request_headers("/" + "x" * 200_000), end=True))
    trailers = dict(await raw.answer(1))
    assert trailers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert "request :path of 200001 bytes" in trailers["grpc-message"]
    assert len(trailers["grpc-message"]) < 300
    await setup.well_behaved()


@pytest.mark.asyncio
async def test_connections_that_send_no_preface_are_closed(setup: Setup) -> None:
    silent = await setup.raw(preface=False)
    half = await setup.raw(preface=False)
    half.send(f.PREFACE[:10])
    assert await silent.closed(3.0) and await half.closed(3.0)


@pytest.mark.asyncio
async def test_a_continuation_flood_is_cut_off(setup: Setup) -> None:
    raw = await setup.raw()
    block = raw.encoder.encode(request_headers(UNARY))
    raw.send(f.frame(f.HEADERS, 0, 1, block) + f.frame(f.CONTINUATION, 0, 1) * 100_000)
    assert await raw.closed(3.0)
    assert raw.goaway() == f.ENHANCE_YOUR_CALM
    await setup.well_behaved()


@pytest.mark.asyncio
async def test_a_ping_flood_is_cut_off(setup: Setup) -> None:
    raw = await setup.raw()
    raw.send(f.frame(f.PING, 0, 0, b"12345678") * 50_000)
    assert await raw.closed(3.0)
    assert raw.goaway() == f.ENHANCE_YOUR_CALM
    await setup.well_behaved()


@pytest.mark.asyncio
async def test_a_client_that_never_reads_holds_a_bounded_amount(mesh: Mesh) -> None:
    """It grants huge windows on server-streaming calls and never reads its socket: the app is
    held back by flow control instead of the sidecar buffering everything it sends."""
    async for s in start(mesh, stall_timeout=60.0):
        raw = await s.raw(settings=[(f.INITIAL_WINDOW_SIZE, f.MAX_WINDOW)])
        raw.send(f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW))
        request = pb.EchoRequest(payload=b"p" * 65_536, responses=100_000).SerializeToString()
        streams = 10
        for sid in range(1, 2 * streams, 2):
            raw.send(raw.headers(sid, request_headers(STREAM))
                     + raw.data(sid, grpc_message(request), end=True))
        await asyncio.sleep(3.0)  # and it reads nothing
        limits = RelayLimits()
        assert s.app.service.calls * 65_536 > streams * limits.stream_window  # it did stream
        # What the sidecar holds for it: a stream window each, and its output buffer.
        assert held(s.sidecar) <= streams * limits.stream_window + limits.write_buffer_bytes \
            + 256 * 1024
        await s.well_behaved()


@pytest.mark.asyncio
async def test_a_client_that_grants_no_window_does_not_starve_others(mesh: Mesh) -> None:
    """70 server-streaming calls whose client grants no window would fill the shared upstream
    connection's 16 MiB window if it were credited only as the client reads."""
    async for s in start(mesh):
        raw = await s.raw(settings=[(f.INITIAL_WINDOW_SIZE, 0)])
        request = pb.EchoRequest(payload=b"q" * 60_000, responses=20).SerializeToString()
        for sid in range(1, 2 * 70, 2):
            raw.send(raw.headers(sid, request_headers(STREAM))
                     + raw.data(sid, grpc_message(request), end=True))
        await asyncio.sleep(1.0)
        stalled = held(s.sidecar)
        assert 16 << 20 < stalled <= 70 * RelayLimits().stream_window  # a window each, no more
        await s.well_behaved(50)
