"""The mesh config's rules enforced by real sidecars (in-process) in front of real apps:
applied to a real registry, pushed to the sidecars, applied by their relays."""
from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from generated.grpcmesh.registry.v1 import registry_pb2 as rpb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh.registry.server import RegistryServer
from grpcmesh.sidecar import Sidecar
from tests.conftest import Mesh, wait_for

ECHO = "grpcmesh.example.v1.Echo"


async def apply(registry: RegistryServer | str, text: str) -> int:
    """Apply text to the registry (or the registry at this address); its version."""
    address = registry if isinstance(registry, str) else registry.address
    async with grpc.aio.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        resp = await stub.ApplyConfig(rpb.ApplyConfigRequest(text=text.encode(),
                                                              source="mesh.yaml"), timeout=10)
        return int(resp.config.version)


async def running(sidecars: list[Sidecar], version: int) -> None:
    await wait_for(lambda: all(s.config_version == version for s in sidecars), 2.0,
                   f"every sidecar to run config version {version}")


async def two_versions(mesh: Mesh) -> Sidecar:
    """echo instances v1 (a) and v2 (b), each behind its sidecar, and a client sidecar."""
    for name, version in (("a", "v1"), ("b", "v2")):
        app = await mesh.app(name)
        await mesh.sidecar("echo", app, labels=(("version", version),))
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 2)
    return client


@pytest.mark.asyncio
async def test_a_canary_split_and_a_metadata_match(mesh: Mesh) -> None:
    client = await two_versions(mesh)
    version = await apply(mesh.registry, """
services:
  echo:
    subsets:
      stable: {version: v1}
      canary: {version: v2}
    routes:
      - match: {method: /grpcmesh.example.v1.Echo/Unary, metadata: {x-canary: "1"}}
        to: {canary: 100}
      - match: {method: /grpcmesh.example.v1.Echo/*}
        to: {stable: 90, canary: 10}
""")
    await running(mesh.sidecars, version)
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        counts: collections.Counter[str] = collections.Counter()
        for start in range(0, 2000, 50):
            replies = await asyncio.gather(*(stub.Unary(pb.EchoRequest(message="x"), timeout=5)
                                             for _ in range(50)))
            counts.update(r.instance for r in replies)
        assert abs(counts["b"] / 2000 - 0.10) <= 0.03, counts
        marked = await asyncio.gather(*(stub.Unary(pb.EchoRequest(message="x"), timeout=5,
                                                   metadata=(("x-canary", "1"),))
                                        for _ in range(100)))
        assert {r.instance for r in marked} == {"b"}


@pytest.mark.asyncio
async def test_timeouts_faults_and_a_rate_limit(mesh: Mesh) -> None:
    app = await mesh.app("a", delay_ms=300)  # answers after 300 ms
    await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    version = await apply(mesh.registry, """
services:
  echo:
    timeout: 100ms
    faults:
      - match: {method: /grpcmesh.example.v1.Echo/ServerStream}
        abort: {code: UNAVAILABLE, percent: 100}
    rate_limit: {per_second: 1, burst: 3}
""")
    await running(mesh.sidecars, version)
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        # No deadline of its own: the config's 100 ms, enforced by the relay's timer.
        with pytest.raises(grpc.aio.AioRpcError) as slow:
            await stub.Unary(pb.EchoRequest(message="x"))
        assert slow.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(grpc.aio.AioRpcError) as fault:
            async for _ in stub.ServerStream(pb.EchoRequest(message="x"), timeout=5):
                pass
        assert fault.value.code() == grpc.StatusCode.UNAVAILABLE
        assert fault.value.details() == "fault injected by services.echo.faults[0]"
        # The rate limit is the instance's (its inbound sidecar's): 3 at once, then 1/s.
        quick = pb.EchoRequest(message="x", delay_ms=1)
        results = await asyncio.gather(*(stub.Unary(quick, timeout=5) for _ in range(6)),
                                       return_exceptions=True)
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(refused) >= 2 and all(
            r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            and r.details() == "rate limit of echo (1/s, burst 3) exceeded" for r in refused)


@pytest.mark.asyncio
async def test_a_services_balancer_comes_from_the_config(mesh: Mesh) -> None:
    from grpcmesh.balance.picker import RoundRobin

    client = await two_versions(mesh)
    method = f"/{ECHO}/Unary"
    assert not isinstance(client.routes.route(method, None).picker, RoundRobin)
    version = await apply(mesh.registry, "services:\n  echo:\n    balancer: round_robin\n")
    await running(mesh.sidecars, version)
    assert isinstance(client.routes.route(method, None).picker, RoundRobin)
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        replies = [await stub.Unary(pb.EchoRequest(message="x"), timeout=5) for _ in range(10)]
        assert collections.Counter(r.instance for r in replies) == {"a": 5, "b": 5}


@pytest.mark.asyncio
async def test_applying_configs_under_steady_load_fails_no_call(mesh: Mesh) -> None:
    client = await two_versions(mesh)
    configs = ["services:\n  echo:\n    subsets: {stable: {version: v1}, canary: {version: v2}}"
               f"\n    routes:\n      - to: {{stable: {w}, canary: {100 - w}}}\n    "
               "timeout: 5s\n" for w in (90, 50, 10, 99)]
    stop = asyncio.Event()
    done: collections.Counter[str] = collections.Counter()

    async def unary(stub: echo_pb2_grpc.EchoStub) -> None:
        while not stop.is_set():
            await stub.Unary(pb.EchoRequest(message="u"), timeout=5)
            done["unary"] += 1

    async def upload(stub: echo_pb2_grpc.EchoStub) -> None:
        while not stop.is_set():
            async def messages() -> AsyncIterator[pb.EchoRequest]:
                for n in range(20):
                    await asyncio.sleep(0.01)
                    yield pb.EchoRequest(message=str(n))
            reply = await stub.ClientStream(messages(), timeout=5)
            assert reply.message == ",".join(str(n) for n in range(20))
            done["stream"] += 1

    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        load = [asyncio.ensure_future(unary(stub)) for _ in range(4)]
        load += [asyncio.ensure_future(upload(stub)) for _ in range(2)]
        for text in configs:
            await asyncio.sleep(0.3)
            await running(mesh.sidecars, await apply(mesh.registry, text))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*load)  # any failed call raises here
    assert done["unary"] > 50 and done["stream"] > 5


@pytest.mark.asyncio
async def test_the_app_sees_the_configs_timeout_and_max_timeout(mesh: Mesh) -> None:
    from tests.probe import SERVICE, Probe

    probe = Probe(reflection=True)
    await probe.start()
    try:
        await mesh.sidecar("probe", probe)
        client = await mesh.sidecar("client")
        await mesh.serving(client, "probe", 1)
        version = await apply(mesh.registry,
                              "services:\n  probe:\n    timeout: 2s\n    max_timeout: 4s\n")
        await running(mesh.sidecars, version)
        async with grpc.aio.insecure_channel(client.outbound_address) as channel:
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            await unary(b"no deadline")
            await unary(b"a long one", timeout=60)
            await unary(b"a short one", timeout=1)
        no_deadline, cut, short = probe.time_remaining
        assert no_deadline is not None and 1.5 < no_deadline <= 2.0  # given the config's 2 s
        assert cut is not None and 3.5 < cut <= 4.0  # 60 s cut to 4 s
        assert short is not None and 0.5 < short <= 1.1  # a shorter one stays (grpc rounds up)
    finally:
        await probe.stop()
