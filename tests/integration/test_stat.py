"""`grpcmesh stat` against running sidecars: what the client's and the server's sidecars
measured over the window, added up, per service and per endpoint."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.output import stat_rows
from tests.conftest import Mesh


def test_rows_add_up_across_sidecars_and_serving_is_the_most_any_sidecar_sees() -> None:
    bucket = [0] * 15
    bucket[3] = 4  # four calls in (5 ms, 10 ms]
    one = {"window_s": 10, "serving": {"echo": 2},
           "rows": [{"direction": "outbound", "service": "echo", "endpoint": "", "calls": 4,
                     "ok": 3, "buckets": bucket},
                    {"direction": "outbound", "service": "echo", "endpoint": "a:1",
                     "calls": 4, "ok": 3, "buckets": bucket}]}
    two = {**one, "serving": {"echo": 3}}
    [row] = stat_rows([one, two], None)
    assert (row["calls"], row["success"], row["rps"], row["serving"]) == (8, 0.75, 0.8, 3)
    assert row["p50_ms"] == 7.5
    [endpoint] = stat_rows([one, two], "echo")
    assert (endpoint["endpoint"], endpoint["calls"]) == ("a:1", 8)


@pytest.mark.asyncio
async def test_stat_shows_the_calls_the_sidecars_saw(mesh: Mesh) -> None:
    good = await mesh.app("good")
    bad = await mesh.app("bad", fail_code=grpc.StatusCode.INTERNAL.value[0])
    servers = [await mesh.sidecar("echo", app) for app in (good, bad)]
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 2)
    async with grpc.aio.insecure_channel(client.outbound_address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        codes = []
        for _ in range(20):
            try:
                await stub.Unary(pb.EchoRequest(), timeout=5)
                codes.append("OK")
            except grpc.aio.AioRpcError as err:
                codes.append(err.code().name)
    admins = ",".join(s.admin.address for s in (client, *servers))
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "grpcmesh", "stat", "--admin", admins,
                         "--window", "60s", "--json"],
        capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    rows = {(r["service"], r["direction"]): r for r in json.loads(run.stdout)}
    # Without --admin, the sidecars are found through the registry (their admin_address)
    found = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "grpcmesh", "stat", "--registry",
                         mesh.registry.address, "--window", "60s", "--json"],
        capture_output=True, text=True, timeout=30)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == json.loads(run.stdout) or {
        (r["service"], r["direction"]): r["calls"] for r in json.loads(found.stdout)} == {
        key: r["calls"] for key, r in rows.items()}
    outbound, inbound = rows[("echo", "outbound")], rows[("echo", "inbound")]
    assert outbound["calls"] == inbound["calls"] == 20
    assert outbound["success"] == inbound["success"] == codes.count("OK") / 20 < 1
    assert outbound["serving"] == 2 and outbound["p99_ms"] is not None
    table = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "grpcmesh", "stat", "echo", "--admin",
                         client.admin.address], capture_output=True, text=True, timeout=30)
    assert table.returncode == 0, table.stderr
    assert table.stdout.split("\n")[0].split()[:3] == ["SERVICE", "DIRECTION", "ENDPOINT"]
    assert sum(1 for line in table.stdout.splitlines() if line.startswith("echo")) == 2
    bad_window = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "grpcmesh", "stat", "--window", "2m"],
        capture_output=True, text=True, timeout=30)
    assert bad_window.returncode == 2 and "from 1s to 60s" in bad_window.stderr
