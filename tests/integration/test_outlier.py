"""services.NAME.outlier applied by a real client sidecar: an app that fails every call is
ejected (no calls reach it, /endpoints and `grpcmesh endpoints` say so) and comes back once
it recovers and its ejection ends."""
from __future__ import annotations

import asyncio
import collections
import subprocess
import sys

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.admin import admin_get
from grpcmesh.sidecar import Sidecar
from tests.conftest import Mesh, wait_for
from tests.integration.test_rules import apply, running

RULE = """
services:
  echo:
    balancer: round_robin   # (peak-EWMA would steer away from the failures by itself)
    outlier: {consecutive_failures: 5, interval: 1s, base_ejection: 2s,
              max_ejection_percent: 50}
"""


async def calls(stub: echo_pb2_grpc.EchoStub, n: int) -> collections.Counter[str]:
    """n calls one after another: who answered each, or the status it failed with."""
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        try:
            seen[(await stub.Unary(pb.EchoRequest(message="x"), timeout=5)).instance] += 1
        except grpc.aio.AioRpcError as err:
            seen[err.code().name] += 1
    return seen


async def bad_view(client: Sidecar, address: str) -> dict[str, object]:
    body = await admin_get(client.admin.address, "/endpoints")
    return next(e for e in body["services"]["echo"]["endpoints"] if e["address"] == address)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_failing_endpoint_is_ejected_and_comes_back(mesh: Mesh) -> None:
    bad_app = await mesh.app("bad", fail_code=grpc.StatusCode.INTERNAL.value[0])
    bad = await mesh.sidecar("echo", bad_app)
    for name in ("a", "b"):
        await mesh.sidecar("echo", await mesh.app(name))
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 3)
    await running(mesh.sidecars, await apply(mesh.registry, RULE))
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        before = await calls(stub, 30)  # 5 failures in a row on bad eject it
        assert before["INTERNAL"] == 5 and bad.inbound_address in client.routes.pools[
            "echo"].ejected, before
        view = await bad_view(client, bad.inbound_address)
        assert view["ejected"] is True and str(view["ejected_until"]).endswith("Z")
        assert "5 consecutive failures (the last: INTERNAL" in str(view["ejection_reason"])
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "grpcmesh", "endpoints", "echo", "--admin",
                             client.admin.address], capture_output=True, text=True, timeout=30)
        states = {line.split()[2]: line.split()[4] for line in result.stdout.splitlines()[1:]}
        assert states[bad.inbound_address] == "ejected"
        assert sorted(states.values()) == ["ejected", "ok", "ok"]
        during = await calls(stub, 40)
        assert set(during) == {"a", "b"}, during  # the others take every call
        bad_app.service.behaviour.recover()
        pool = client.routes.pools["echo"]
        await wait_for(lambda: bad.inbound_address not in pool.ejected, 5.0,
                       "the ejection to end (2 s, then the 1 s timer)")
        assert (await bad_view(client, bad.inbound_address))["ejected"] is False
        after = await calls(stub, 30)
        assert after["bad"] > 0 and "INTERNAL" not in after, after

