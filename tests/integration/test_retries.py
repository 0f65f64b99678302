"""services.NAME.retry enforced by real sidecars in front of real apps: what the protos mark
idempotent is retried, and nothing else is ever sent twice (the apps' own call counts)."""
from __future__ import annotations

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.admin import admin_get
from grpcmesh.registry.model import is_idempotent
from tests.conftest import Mesh, wait_for
from tests.integration.test_metrics import matching, scrape, value
from tests.integration.test_rules import ECHO, apply, running

RETRY = ("services:\n  echo:\n    balancer: round_robin\n"  # (bad keeps its share)
         "    retry: {attempts: 3, backoff: {base: 1ms, max: 5ms}}\n")


@pytest.mark.asyncio
async def test_idempotent_methods_are_retried_and_the_others_never_sent_twice(
        mesh: Mesh) -> None:
    good = await mesh.app("good")
    bad = await mesh.app("bad", fail_code=grpc.StatusCode.UNAVAILABLE.value[0])
    for app in (good, bad):
        await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 2)
    await wait_for(lambda: is_idempotent(client.routes.method(f"/{ECHO}/Get")), 5.0,
                   "the client sidecar to know Get is idempotent (from the app's protos)")
    await running(mesh.sidecars, await apply(mesh.registry, RETRY))
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        # Get (NO_SIDE_EFFECTS): a failure on bad is retried, on good this time
        for _ in range(30):
            reply = await stub.Get(pb.EchoRequest(message="x"), timeout=5)
            assert reply.instance == "good"
        assert bad.service.calls >= 10  # its share of them failed there first
        # Unary (no idempotency_level): what fails on bad reaches the client, sent once
        before = good.service.calls + bad.service.calls
        bad_before = bad.service.calls
        failed = 0
        for _ in range(30):
            try:
                await stub.Unary(pb.EchoRequest(message="x"), timeout=5)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE
                assert "bad fails on purpose" in (err.details() or "")
                failed += 1
    assert failed == bad.service.calls - bad_before > 0
    assert good.service.calls + bad.service.calls - before == 30  # no call was sent twice
    # The budget the retries drew from, as /endpoints shows it
    budget = (await admin_get(client.admin.address, "/endpoints"))["services"]["echo"][
        "retry_budget"]
    assert budget["calls"] == 60 and budget["retries"] == bad.service.calls - failed
    assert (budget["ratio"], budget["min_per_second"], budget["exhausted"]) == (0.2, 10, 0)
    # /metrics counts the same retries, by the failed attempt's status
    out = await scrape(client)
    assert matching(out, "grpcmesh_retries_total") == {
        frozenset({("service", "echo"), ("reason", "UNAVAILABLE")}): budget["retries"]}
    assert value(out, "grpcmesh_retry_budget_exhausted_total", service="echo") == 0
    assert value(out, "grpcmesh_calls_total", direction="outbound", service="echo",
                 method=f"{ECHO}/Get", code="OK") == 30
