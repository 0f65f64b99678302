"""Instances come, go and turn unhealthy while a client keeps calling through its sidecar."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2, echo_pb2_grpc
from grpcmesh.registry.server import RegistryServer
from tests.conftest import Mesh, wait_for


@dataclass
class Load:
    """Calls in a loop; records (start, end, instance or error) for every call."""

    target: str
    results: list[tuple[float, float, str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    resp = await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=3)
                    outcome = resp.instance
                except grpc.aio.AioRpcError as err:
                    outcome = f"error {err.code().name}: {err.details()}"
                self.results.append((start, time.monotonic(), outcome))
                await asyncio.sleep(0.002)

    def errors(self) -> list[tuple[float, float, str]]:
        return [r for r in self.results if r[2].startswith("error")]

    def calls_to(self, name: str, started_after: float) -> int:
        return sum(1 for start, _, who in self.results if who == name and start > started_after)

    def first_call_to(self, name: str) -> float | None:
        return min((start for start, _, who in self.results if who == name), default=None)


@pytest.mark.asyncio
async def test_churn_never_fails_calls_to_instances_gone_for_a_second(mesh: Mesh) -> None:
    apps = [await mesh.app(n) for n in ("a", "b", "c", "d")]
    sidecars = [await mesh.sidecar("echo", app) for app in apps[:3]]
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 3)
    load = Load(client.outbound_address)
    workers = [asyncio.create_task(load.worker()) for _ in range(4)]
    try:
        await asyncio.sleep(0.3)

        # A new instance gets calls within a second of registering.
        joined = time.monotonic()
        await mesh.sidecar("echo", apps[3])
        await wait_for(lambda: load.first_call_to("d"), 3, "calls to the new instance d")
        assert load.first_call_to("d") - joined < 1.5  # includes its first health check

        # An instance turning unhealthy stops getting calls within a second.
        await apps[0].set_serving(False)
        unhealthy_at = time.monotonic()
        await asyncio.sleep(1.5)
        assert load.calls_to("a", started_after=unhealthy_at + 1.0) == 0

        # A graceful shutdown (deregister, drain, stop) loses nothing.
        await sidecars[1].shutdown()
        await apps[1].stop(1.0)
        gone_at = time.monotonic()

        # A crash: the app and its sidecar vanish without deregistering; the lease is still
        # live, but connections are refused, so calls go elsewhere.
        sidecars[2].outbound_server, inbound = sidecars[2].outbound_server, \
            sidecars[2].inbound_server
        assert inbound is not None
        await inbound.stop(None)
        crashed_at = time.monotonic()
        await asyncio.sleep(1.5)
        assert load.calls_to("b", started_after=gone_at + 1.0) == 0
        assert load.calls_to("c", started_after=crashed_at) == 0
    finally:
        load.stop.set()
        await asyncio.gather(*workers)
    assert load.calls_to("d", started_after=0) > 0
    # A call may only fail if it was already on its way to c when c crashed.
    late_errors = [e for e in load.errors() if e[0] > crashed_at or e[1] < crashed_at]
    assert late_errors == [], late_errors[:5]
    assert len(load.results) > 200


@pytest.mark.asyncio
async def test_calls_keep_flowing_while_the_registry_is_down_and_after_it_returns(
        mesh: Mesh) -> None:
    registry = mesh.registry
    a, b = await mesh.app("a"), await mesh.app("b")
    await mesh.sidecar("echo", a)
    await mesh.sidecar("echo", b)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 2)
    load = Load(client.outbound_address)
    workers = [asyncio.create_task(load.worker()) for _ in range(2)]
    try:
        await registry.stop(0)
        down_at = time.monotonic()
        await wait_for(lambda: not client.registry_up, 5, "the client to notice")
        await asyncio.sleep(1.0)
        assert load.calls_to("a", down_at) > 0 and load.calls_to("b", down_at) > 0

        # The registry comes back empty (memory store) on the same address: its snapshots are
        # partial while it warms up, so the client keeps its endpoints; the sidecars register
        # again on their own and the client's watch resumes.
        restarted = RegistryServer(registry.address, check_interval=0.1, warmup=3.0)
        await restarted.start()
        mesh.registry = restarted
        try:
            await wait_for(lambda: len([i for i in restarted.view.instances()
                                        if i.service == "echo"]) == 2, 10,
                           "the echo sidecars to register again")  # (and the client's)
            await wait_for(lambda: client.registry_up, 10, "the client's watch to resume")
            c = await mesh.app("c")
            await mesh.sidecar("echo", c)
            await wait_for(lambda: load.first_call_to("c"), 5, "calls to the new instance c")
            await wait_for(lambda: not restarted.view.partial, 5, "the warm-up to end")
            after_warmup = time.monotonic()
            await asyncio.sleep(0.3)
            assert all(load.calls_to(n, after_warmup) > 0 for n in ("a", "b", "c"))
        finally:
            load.stop.set()
            await asyncio.gather(*workers)
            await mesh.close()
            mesh.sidecars.clear()
            mesh.apps.clear()
            await restarted.stop(0)
    finally:
        load.stop.set()
        await asyncio.gather(*workers)
    assert load.errors() == []
