"""/metrics on real sidecars after known traffic, parsed with prometheus-client's parser: the
counts and codes are exact, a made-up method counts as method="unknown", the histogram agrees
with the counts, and the rules' answers are counted by reason (retries: test_retries.py)."""
from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from grpcmesh.admin import admin_fetch
from grpcmesh.sidecar import Sidecar
from tests.conftest import Mesh, wait_for
from tests.integration.test_rules import ECHO, apply, running

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(sidecar: Sidecar) -> Samples:
    text = (await admin_fetch(sidecar.admin.address, "/metrics")).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def matching(samples: Samples, name: str, **labels: str) -> dict[frozenset[Any], float]:
    want = set(labels.items())
    return {key: v for (n, key), v in samples.items() if n == name and want <= key}


async def call(channel: grpc.aio.Channel, path: str, request: pb.EchoRequest
               ) -> grpc.StatusCode:
    unary = channel.unary_unary(path, request_serializer=pb.EchoRequest.SerializeToString,
                                response_deserializer=pb.EchoResponse.FromString)
    try:
        await unary(request, timeout=5)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def echo_and_client(mesh: Mesh) -> tuple[Sidecar, Sidecar]:
    """An echo app behind its sidecar, and a client sidecar that routes to it."""
    server = await mesh.sidecar("echo", await mesh.app("a"))
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    return server, client


@pytest.mark.asyncio
async def test_metrics_count_known_traffic_exactly(mesh: Mesh) -> None:
    server, client = await echo_and_client(mesh)
    await wait_for(lambda: client.routes.method(f"/{ECHO}/Unary") is not None, 5.0,
                   "the client sidecar to know the echo methods")
    unary = f"/{ECHO}/Unary"
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        codes = [await call(channel, unary, pb.EchoRequest(message="x")) for _ in range(5)]
        codes += [await call(channel, unary, pb.EchoRequest(fail_code=5)) for _ in range(2)]
        codes.append(await call(channel, f"/{ECHO}/MadeUp{id(codes)}", pb.EchoRequest()))
        codes.append(await call(channel, "/nowhere.v1.Nope/Call", pb.EchoRequest()))
    assert codes == [grpc.StatusCode.OK] * 5 + [grpc.StatusCode.NOT_FOUND] * 2 + [
        grpc.StatusCode.UNIMPLEMENTED] * 2

    out = await scrape(client)
    calls = "grpcmesh_calls_total"
    method = f"{ECHO}/Unary"
    assert matching(out, calls, direction="outbound") == {
        frozenset({("direction", "outbound"), ("service", "echo"), ("method", method),
                   ("code", "OK")}): 5,
        frozenset({("direction", "outbound"), ("service", "echo"), ("method", method),
                   ("code", "NOT_FOUND")}): 2,
        frozenset({("direction", "outbound"), ("service", "echo"), ("method", "unknown"),
                   ("code", "UNIMPLEMENTED")}): 1,
        frozenset({("direction", "outbound"), ("service", "unknown"), ("method", "unknown"),
                   ("code", "UNIMPLEMENTED")}): 1}
    # The histogram: 7 calls of Unary, buckets cumulative up to +Inf
    hist = "grpcmesh_call_duration_seconds"
    labels = {"direction": "outbound", "service": "echo", "method": method}
    assert value(out, hist + "_count", **labels) == 7
    buckets = sorted((float(dict(k)["le"]), v)
                     for k, v in matching(out, hist + "_bucket", **labels).items())
    assert len(buckets) == 15 and buckets[0][0] == 0.001 and buckets[-2][0] == 30.0
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == 7
    assert 0 < (value(out, hist + "_sum", **labels) or 0) < 7 * 5
    # The proxy answered the call to a service it has no route to
    assert matching(out, "grpcmesh_proxy_answers_total") == {
        frozenset({("service", "unknown"), ("reason", "no_route")}): 1}
    # The endpoint: every call that reached it, its estimate, cost and ejection
    endpoint = server.inbound_address
    assert matching(out, "grpcmesh_endpoint_calls_total") == {
        frozenset({("service", "echo"), ("endpoint", endpoint), ("code", "OK")}): 5,
        frozenset({("service", "echo"), ("endpoint", endpoint), ("code", "NOT_FOUND")}): 2,
        frozenset({("service", "echo"), ("endpoint", endpoint), ("code", "UNIMPLEMENTED")}): 1}
    where = {"service": "echo", "endpoint": endpoint}
    assert 0 < (value(out, "grpcmesh_endpoint_latency_estimate_seconds", **where) or 0) < 5
    assert value(out, "grpcmesh_endpoint_cost", **where) is not None
    assert value(out, "grpcmesh_endpoint_ejected", **where) == 0
    assert value(out, "grpcmesh_calls_in_flight", direction="outbound", service="echo") is None
    assert value(out, "grpcmesh_registry_connected") == 1
    assert value(out, "grpcmesh_config_version") == client.config_version
    assert matching(out, "grpcmesh_retries_total") == {}

    # The echo sidecar saw the same calls inbound (but the one with no route)
    inbound = await scrape(server)
    assert matching(inbound, calls, direction="inbound") == {
        frozenset({("direction", "inbound"), ("service", "echo"), ("method", method),
                   ("code", "OK")}): 5,
        frozenset({("direction", "inbound"), ("service", "echo"), ("method", method),
                   ("code", "NOT_FOUND")}): 2,
        frozenset({("direction", "inbound"), ("service", "echo"), ("method", "unknown"),
                   ("code", "UNIMPLEMENTED")}): 1}
    assert matching(inbound, "grpcmesh_endpoint_calls_total") == {}


@pytest.mark.asyncio
async def test_no_metrics_means_no_route_and_no_observer(mesh: Mesh) -> None:
    client = await mesh.sidecar("client", metrics=False)
    assert client.outbound_server.observers == []
    with pytest.raises(ValueError, match="404"):
        await admin_fetch(client.admin.address, "/metrics")


@pytest.mark.asyncio
async def test_the_rules_answers_are_counted_by_reason(mesh: Mesh) -> None:
    server, client = await echo_and_client(mesh)
    await running(mesh.sidecars, await apply(mesh.registry, f"""
services:
  echo:
    faults:
      - match: {{method: /{ECHO}/Get}}
        abort: {{code: UNAVAILABLE, percent: 100}}
    rate_limit: {{per_second: 0.001, burst: 2}}
"""))
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        faulted = [await call(channel, f"/{ECHO}/Get", pb.EchoRequest()) for _ in range(3)]
        limited = [await call(channel, f"/{ECHO}/Unary", pb.EchoRequest()) for _ in range(5)]
    assert faulted == [grpc.StatusCode.UNAVAILABLE] * 3
    assert limited == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
    # The fault is the caller's sidecar's answer; the rate limit the instance's inbound one.
    assert matching(await scrape(client), "grpcmesh_proxy_answers_total") == {
        frozenset({("service", "echo"), ("reason", "fault")}): 3}
    assert matching(await scrape(server), "grpcmesh_proxy_answers_total") == {
        frozenset({("service", "echo"), ("reason", "rate_limited")}): 3}


@pytest.mark.asyncio
async def test_calls_in_flight_by_direction_and_service(mesh: Mesh) -> None:
    server, client = await echo_and_client(mesh)
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        slow = [asyncio.ensure_future(call(channel, f"/{ECHO}/Unary",
                                           pb.EchoRequest(delay_ms=1000))) for _ in range(3)]
        await wait_for(lambda: client.outbound_server.in_flight == 3, 5.0, "3 calls in flight")
        await wait_for(lambda: server.inbound_server is not None
                       and server.inbound_server.in_flight == 3, 5.0, "3 calls at the app")
        out, inbound = await scrape(client), await scrape(server)
        assert await asyncio.gather(*slow) == [grpc.StatusCode.OK] * 3
    assert matching(out, "grpcmesh_calls_in_flight") == {
        frozenset({("direction", "outbound"), ("service", "echo")}): 3}
    assert matching(inbound, "grpcmesh_calls_in_flight") == {
        frozenset({("direction", "inbound"), ("service", "echo")}): 3}
    assert value(await scrape(client), "grpcmesh_calls_in_flight", direction="outbound",
                 service="echo") is None
