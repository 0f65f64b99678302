"""What the forwarder records for the balancer, seen through the admin port: latency to the
first response, penalised failures, cancellations not counted; and `grpcmesh endpoints`."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2, echo_pb2_grpc
from grpcmesh.admin import admin_get
from grpcmesh.sidecar import Sidecar
from tests.conftest import Mesh, wait_for


async def endpoint(sidecar: Sidecar, instance: str) -> dict[str, object]:
    body = await admin_get(sidecar.admin.address, "/endpoints")
    (found,) = [e for e in body["services"]["echo"]["endpoints"]
                if e["address"] == instance]
    return found


@pytest.mark.asyncio
async def test_latency_is_measured_to_the_first_response_of_a_stream(mesh: Mesh) -> None:
    app = await mesh.app("slowish", delay_ms=150)
    server = await mesh.sidecar("echo", app, inbound=False)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    async with grpc.aio.insecure_channel(client.outbound_address) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        got = [r.instance async for r in stub.ServerStream(
            echo_pb2.EchoRequest(message="x", responses=3), timeout=5)]  # ~150 ms apart
    assert got == ["slowish"] * 3
    e = await endpoint(client, app.address)
    assert e["calls"] == 1 and e["in_flight"] == 0 and e["failures"] == 0
    estimate = e["estimate_ms"]
    assert isinstance(estimate, float) and 140 < estimate < 300, e  # not ~450 ms (the end)
    assert server.registrar is not None


@pytest.mark.asyncio
async def test_fast_failures_are_penalised_and_cancellations_not_counted(mesh: Mesh) -> None:
    failing = await mesh.app("failing", fail_code=grpc.StatusCode.UNAVAILABLE.value[0])
    await mesh.sidecar("echo", failing, inbound=False)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    async with grpc.aio.insecure_channel(client.outbound_address) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        e = await endpoint(client, failing.address)
        assert (e["calls"], e["failures"]) == (1, 1)
        assert 4900 < e["estimate_ms"] <= 5000  # type: ignore[operator]  # the 5 s penalty

        call = stub.Unary(echo_pb2.EchoRequest(message="x", delay_ms=2000, fail_code=0),
                          timeout=5)
        await wait_for(lambda: client.outbound_server.in_flight == 1, 5, "the call to be in flight")
        call.cancel()
        await wait_for(lambda: client.outbound_server.in_flight == 0, 5, "the cancellation")
    await asyncio.sleep(0.1)
    e = await endpoint(client, failing.address)
    assert (e["calls"], e["failures"], e["in_flight"]) == (1, 1, 0)


@pytest.mark.asyncio
async def test_endpoints_command_prints_each_endpoint(mesh: Mesh) -> None:
    fast, slow = await mesh.app("fast"), await mesh.app("slow", delay_ms=40)
    for app in (fast, slow):
        await mesh.sidecar("echo", app, inbound=False)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 2)
    async with grpc.aio.insecure_channel(client.outbound_address) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        seen = [(await stub.Unary(echo_pb2.EchoRequest(message="x"), timeout=5)).instance
                for _ in range(30)]
    assert seen.count("fast") > seen.count("slow")  # peak-EWMA prefers the fast one
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "grpcmesh", "endpoints", "echo", "--admin",
                         client.admin.address], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SERVICE", "BALANCER", "ADDRESS", "HEALTH", "STATE", "ESTIMATE",
                                "MS", "IN", "FLIGHT", "COST", "MS", "CALLS", "FAILURES"]
    rows = {line.split()[2]: line.split() for line in lines[1:]}
    assert set(rows) == {fast.address, slow.address}
    assert rows[slow.address][1] == "peak_ewma" and rows[slow.address][3] == "SERVING"
    assert rows[slow.address][4] == "ok"  # (no outlier rule: nothing is ejected)
    assert float(rows[slow.address][5]) > float(rows[fast.address][5])
    assert int(rows[fast.address][8]) == seen.count("fast")
    missing = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "grpcmesh", "endpoints", "nope", "--admin",
                         client.admin.address], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1
    assert "knows no service 'nope'" in missing.stderr and "echo" in missing.stderr
