"""Transparent forwarding through client sidecar -> server sidecar -> app, on real servers."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status  # type: ignore[import-untyped, unused-ignore]

from generated.grpcmesh.example.v1 import echo_pb2, echo_pb2_grpc
from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.registry.client import RegistryClient
from grpcmesh.sidecar import Sidecar
from tests.conftest import Mesh
from tests.probe import HEADERS, METHODS, SERVICE, TRAILERS, Probe, rich_status

REQUEST_MD = (("x-request", "r"), ("x-request-bin", b"\x00\x01\x02"))


@pytest_asyncio.fixture
async def probe() -> AsyncIterator[Probe]:
    p = Probe(reflection=True)
    await p.start()
    yield p
    await p.stop()


async def _probe_client(mesh: Mesh, probe: Probe, **client_settings: Any) -> Sidecar:
    """A sidecar for the probe and a client-only sidecar routing test.v1.Probe to it, once
    it knows the probe's methods (from the probe's reflection, through the registry)."""
    # Like a real app with reflection, the probe needs no --proto-service.
    await mesh.sidecar("probe", probe)
    client = await mesh.sidecar("client", **client_settings)
    await mesh.serving(client, "probe", 1)
    for name, kind in METHODS.items():
        method = client.routes.method(f"/{SERVICE}/{name}")
        assert method is not None and method.kind == kind, name
    return client


@pytest_asyncio.fixture
async def channel(mesh: Mesh, probe: Probe) -> AsyncIterator[grpc.aio.Channel]:
    """A client channel to a client-only sidecar that routes test.v1.Probe to the probe."""
    client = await _probe_client(mesh, probe)
    async with grpc.aio.insecure_channel(client.outbound_address) as ch:
        yield ch


def _user_md(md: tuple[tuple[str, object], ...]) -> list[tuple[str, object]]:
    return [(k, v) for k, v in md if k.startswith("x-")]


@pytest.mark.asyncio
async def test_unary_passes_bytes_metadata_headers_and_trailers(
        channel: grpc.aio.Channel, probe: Probe) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Unary")(b"\x00raw\xff", metadata=REQUEST_MD,
                                                    timeout=5)
    assert await call == b"echo:\x00raw\xff"
    assert list(await call.initial_metadata()) == list(HEADERS)
    assert list(await call.trailing_metadata()) == list(TRAILERS)
    assert _user_md(probe.metadata[0]) == list(REQUEST_MD)


@pytest.mark.asyncio
async def test_server_streaming(channel: grpc.aio.Channel, probe: Probe) -> None:
    call = channel.unary_stream(f"/{SERVICE}/ServerStream")(b"m", metadata=REQUEST_MD,
                                                            timeout=5)
    assert [m async for m in call] == [b"m0", b"m1", b"m2"]
    assert list(await call.initial_metadata()) == list(HEADERS)
    assert list(await call.trailing_metadata()) == list(TRAILERS)
    assert _user_md(probe.metadata[0]) == list(REQUEST_MD)


@pytest.mark.asyncio
async def test_client_streaming(channel: grpc.aio.Channel, probe: Probe) -> None:
    call = channel.stream_unary(f"/{SERVICE}/ClientStream")(iter([b"a", b"b", b"c"]),
                                                            metadata=REQUEST_MD, timeout=5)
    assert await call == b"a|b|c"
    assert list(await call.initial_metadata()) == list(HEADERS)
    assert list(await call.trailing_metadata()) == list(TRAILERS)
    assert _user_md(probe.metadata[0]) == list(REQUEST_MD)


@pytest.mark.asyncio
async def test_bidirectional_streaming_interleaves(channel: grpc.aio.Channel,
                                                   probe: Probe) -> None:
    call = channel.stream_stream(f"/{SERVICE}/Bidi")(metadata=REQUEST_MD, timeout=5)
    for word in (b"one", b"two", b"three"):
        await call.write(word)
        assert await call.read() == b"re:" + word  # each answer arrives before the next write
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert list(await call.initial_metadata()) == list(HEADERS)
    assert list(await call.trailing_metadata()) == list(TRAILERS)
    assert _user_md(probe.metadata[0]) == list(REQUEST_MD)


@pytest.mark.asyncio
async def test_large_messages_stream_both_ways_under_flow_control(
        channel: grpc.aio.Channel) -> None:
    """64 messages of 256 KiB each way, with 8 in flight: more than every stream and connection
    window on the way, so it completes only if window updates are relayed correctly."""
    call = channel.stream_stream(f"/{SERVICE}/Bidi")(timeout=20)
    messages = [bytes([i]) * (256 * 1024) for i in range(64)]
    for message in messages[:8]:
        await call.write(message)
    for i, message in enumerate(messages):
        assert await call.read() == b"re:" + message
        if i + 8 < len(messages):
            await call.write(messages[i + 8])
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.OK


@pytest.mark.asyncio
async def test_error_status_message_and_rich_details_pass_unchanged(
        channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(f"/{SERVICE}/Fail")(b"", timeout=5)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "name is too short"
    assert rpc_status.from_call(err) == rich_status()


@pytest.mark.asyncio
async def test_error_after_a_streamed_message_passes_unchanged(
        channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream(f"/{SERVICE}/FailStream")(b"", timeout=5)
    assert await call.read() == b"partial"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "name is too short"
    assert rpc_status.from_call(err) == rich_status()


@pytest.mark.asyncio
async def test_error_after_a_request_stream_passes_unchanged(
        channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.stream_unary(f"/{SERVICE}/FailUpload")(iter([b"a", b"b"]), timeout=5)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "name is too short"
    assert rpc_status.from_call(err) == rich_status()


@pytest.mark.asyncio
async def test_deadline_is_propagated_and_expiry_cancels_upstream(
        channel: grpc.aio.Channel, probe: Probe) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(f"/{SERVICE}/Slow")(b"", timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2
    remaining = probe.time_remaining[0]
    # Only what was left went upstream (grpc-timeout rounds up, hence the 10 ms allowance).
    assert remaining is not None and 0 < remaining < 0.51
    await asyncio.wait_for(probe.cancelled.wait(), 2)


@pytest.mark.asyncio
async def test_no_deadline_means_no_upstream_deadline(
        channel: grpc.aio.Channel, probe: Probe) -> None:
    assert await channel.unary_unary(f"/{SERVICE}/Unary")(b"x") == b"echo:x"
    assert probe.time_remaining == [None]


@pytest.mark.asyncio
async def test_client_cancellation_cancels_upstream_at_once(
        channel: grpc.aio.Channel, probe: Probe) -> None:
    call = channel.unary_unary(f"/{SERVICE}/Slow")(b"", timeout=10)
    await asyncio.wait_for(probe.started.wait(), 5)
    cancelled_at = time.monotonic()
    call.cancel()
    await asyncio.wait_for(probe.cancelled.wait(), 2)
    assert time.monotonic() - cancelled_at < 1


@pytest.mark.asyncio
async def test_client_cancellation_of_a_response_stream_cancels_upstream(
        channel: grpc.aio.Channel, probe: Probe) -> None:
    call = channel.unary_stream(f"/{SERVICE}/SlowStream")(b"", timeout=10)
    assert await asyncio.wait_for(call.read(), 5) == b"first"
    await asyncio.wait_for(probe.started.wait(), 5)
    cancelled_at = time.monotonic()
    call.cancel()
    await asyncio.wait_for(probe.cancelled.wait(), 2)
    assert time.monotonic() - cancelled_at < 1


@pytest.mark.asyncio
async def test_message_size_limits(channel: grpc.aio.Channel) -> None:
    big = channel.unary_unary(f"/{SERVICE}/Big")
    assert len(await big(str(3 << 20).encode(), timeout=10)) == 3 << 20
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await big(str(5 << 20).encode(), timeout=10)  # response over 4 MiB
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(f"/{SERVICE}/Unary")(b"x" * (5 << 20), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.asyncio
async def test_unknown_service_is_unimplemented_naming_it(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary("/nowhere.v1.Missing/Get")(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "nowhere.v1.Missing" in info.value.details()


@pytest.mark.asyncio
async def test_sidecar_serves_its_own_health(mesh: Mesh) -> None:
    client = await mesh.sidecar("client")
    async with grpc.aio.insecure_channel(client.outbound_address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)

        async def status() -> int:
            resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            return int(resp.status)
        deadline = time.monotonic() + 5
        while await status() != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "sidecar never reported SERVING"
            await asyncio.sleep(0.05)


async def _register(mesh: Mesh, service: str, address: str, health: pb.HealthStatus) -> None:
    client = RegistryClient([mesh.registry.address])
    try:
        await client.call("Register", pb.RegisterRequest(ttl_seconds=30, instance=pb.Instance(
            service=service, instance_id=address, address=address,
            proto_services=["grpcmesh.example.v1.Echo"], health=health)))
    finally:
        await client.close()


async def _echo(sidecar: Sidecar, **kw: object) -> echo_pb2.EchoResponse:
    async with grpc.aio.insecure_channel(sidecar.outbound_address) as ch:
        response: echo_pb2.EchoResponse = await echo_pb2_grpc.EchoStub(ch).Unary(
            echo_pb2.EchoRequest(message="x"), timeout=5, **kw)
        return response


@pytest.mark.asyncio
async def test_no_healthy_instance_is_unavailable_at_once(mesh: Mesh) -> None:
    app = await mesh.app("a")
    await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    await app.set_serving(False)
    await mesh.serving(client, "echo", 0)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _echo(client)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no healthy instance of grpcmesh.example.v1.Echo" in info.value.details()
    assert "echo: 1 known, 0 serving" in info.value.details()
    assert time.monotonic() - started < 0.5


@pytest.mark.asyncio
async def test_refused_connection_is_tried_on_another_instance(mesh: Mesh) -> None:
    app = await mesh.app("alive")
    await mesh.sidecar("echo", app)
    # Instances that claim to serve but accept no connections: the call never left, so it
    # goes elsewhere even though it is not known to be idempotent.
    for port in (1, 2, 3):
        await _register(mesh, "echo", f"127.0.0.1:{port}", pb.SERVING)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 4)
    for _ in range(8):
        assert (await _echo(client)).instance == "alive"


@pytest.mark.asyncio
async def test_only_refusing_instances_give_unavailable_naming_them(mesh: Mesh) -> None:
    await _register(mesh, "echo", "127.0.0.1:1", pb.SERVING)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _echo(client)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "127.0.0.1:1" in info.value.details()


@pytest.mark.asyncio
async def test_service_header_names_the_mesh_service(mesh: Mesh) -> None:
    for service, name in (("echo-blue", "blue"), ("echo-green", "green")):
        await mesh.sidecar(service, await mesh.app(name))
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo-blue", 1)
    await mesh.serving(client, "echo-green", 1)
    for _ in range(4):
        resp = await _echo(client, metadata=(("grpcmesh-service", "echo-green"),))
        assert resp.instance == "green"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _echo(client, metadata=(("grpcmesh-service", "nope"),))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "'nope'" in info.value.details()


class _HideUnary(grpc.aio.ServerInterceptor):
    """Rejects Echo/Unary before reading its request (as an auth or feature-flag interceptor
    might), although reflection describes it."""

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        if details.method.endswith("/Unary"):
            return None  # grpcio answers UNIMPLEMENTED at once
        return await continuation(details)


@pytest.mark.asyncio
async def test_early_rejections_keep_their_status(mesh: Mesh) -> None:
    """An app's status that arrives before it read the request reaches the client unchanged
    (a grpcio client call in a proxy could turn it into INTERNAL, grpc/grpc#36066; the relay
    forwards frames, so it cannot)."""
    from grpcmesh.example.server import EchoBehaviour, EchoServer

    app = EchoServer("127.0.0.1:0", EchoBehaviour("a"))
    app.server = grpc.aio.server(interceptors=[_HideUnary()])
    await app.start()
    mesh.apps.append(app)
    await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    codes: dict[str, int] = {}
    async with grpc.aio.insecure_channel(client.outbound_address) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        for _ in range(300):
            try:
                await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
                codes["OK"] = codes.get("OK", 0) + 1
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] = codes.get(err.code().name, 0) + 1
    assert codes == {"UNIMPLEMENTED": 300}


@pytest.mark.asyncio
async def test_oversized_request_metadata_is_refused_by_the_proxy(
        mesh: Mesh, probe: Probe) -> None:
    """The proxy checks metadata size itself (grpcio's own check can be bypassed by HEADERS
    sent before SETTINGS are acknowledged); a lower limit shows the proxy's check at work."""
    from grpcmesh.relay.settings import ForwardSettings

    client = await _probe_client(mesh, probe, forward=ForwardSettings(max_metadata_bytes=4096))
    big = tuple((f"x-big-{i}", "v" * 1000) for i in range(5))  # ~5.2 KB
    async with grpc.aio.insecure_channel(client.outbound_address) as ch:
        unary = ch.unary_unary(f"/{SERVICE}/Unary")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await unary(b"x", metadata=big, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"request metadata of /{SERVICE}/Unary is" in info.value.details()
        assert "the proxy's limit is 4096" in info.value.details()
        assert probe.metadata == []  # it never reached the app
        assert await unary(b"x", metadata=big[:3], timeout=5) == b"echo:x"
