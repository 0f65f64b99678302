"""`grpcmesh sidecar --workers 2`: two processes share the ports, both forward calls, and SIGTERM
drains both."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from generated.grpcmesh.example.v1 import echo_pb2, echo_pb2_grpc
from grpcmesh import procs
from grpcmesh.admin import admin_fetch, admin_get
from tests.integration.test_external import external
from tests.integration.test_rules import apply


def secondary_pids(parent: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections of process pid whose remote port is port (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):  # grpcio may use dual-stack sockets
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                count += 1
    return count


@pytest_asyncio.fixture
async def mesh2() -> AsyncIterator[dict[str, procs.Daemon]]:
    daemons: dict[str, procs.Daemon] = {}
    try:
        daemons["registry"] = await procs.start("registry", "registry", "--listen", "127.0.0.1:0")
        registry = daemons["registry"].addresses["registry"]
        daemons["app"] = await procs.start("app", "example-server", "--listen", "127.0.0.1:0",
                                           "--name", "a")
        daemons["server"] = await procs.start(
            "server", "sidecar", "--service", "echo", "--app", daemons["app"].addresses["app"],
            "--registry", registry, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0",
            "--admin", "127.0.0.1:0", "--workers", "2", "--drain-delay", "0.2")
        daemons["client"] = await procs.start(
            "client", "sidecar", "--service", "client", "--registry", registry,
            "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "2")
        yield daemons
    finally:
        await procs.stop_all(list(daemons.values()))


async def call(outbound: str, **request: object) -> echo_pb2.EchoResponse:
    # A fresh connection each time: the kernel spreads connections, not calls, over workers.
    async with grpc.aio.insecure_channel(
            outbound, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        resp: echo_pb2.EchoResponse = await echo_pb2_grpc.EchoStub(channel).Unary(
            echo_pb2.EchoRequest(message="x", **request), timeout=10)  # type: ignore[arg-type]
        return resp


async def routed(outbound: str) -> None:
    """Wait until a call through outbound goes through (the first may wait for the routes)."""
    for _ in range(100):
        try:
            await call(outbound)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_both_workers_forward_and_sigterm_drains_both(
        mesh2: dict[str, procs.Daemon]) -> None:
    client, server = mesh2["client"], mesh2["server"]
    outbound = client.addresses["outbound"]
    inbound_port = int(server.addresses["inbound"].rpartition(":")[2])
    workers = [client.proc.pid, *secondary_pids(client.proc.pid)]
    assert len(workers) == 2
    await routed(outbound)
    for _ in range(30):
        assert (await call(outbound)).instance == "a"
    # Each client sidecar process opened its own connection to the server sidecar's inbound.
    assert [connections_to(pid, inbound_port) >= 1 for pid in workers] == [True, True]

    # /endpoints shows every worker's own balancer view; together they saw every call.
    body = await admin_get(client.addresses["admin"], "/endpoints")
    assert [(w["worker"], w["pid"]) for w in body["workers"]] == list(enumerate(workers))
    calls = [sum(e["calls"] for e in w["services"]["echo"]["endpoints"])
             for w in body["workers"]]
    assert all(c >= 1 for c in calls) and sum(calls) >= 30

    # The primary's /metrics counts every worker's calls (telemetry/merge.py)
    text = (await admin_fetch(client.addresses["admin"], "/metrics")).decode()
    ok = [s.value for f in text_string_to_metric_families(text) for s in f.samples
          if s.name == "grpcmesh_calls_total" and s.labels == {
              "direction": "outbound", "service": "echo",
              "method": "grpcmesh.example.v1.Echo/Unary", "code": "OK"}]
    assert ok == [31]  # the first that went through, then 30

    # Sharing the port is for the sidecar's own workers: another sidecar is refused it.
    with pytest.raises(RuntimeError, match="cannot listen on .* for outbound: Address already"):
        await procs.start("intruder", "sidecar", "--service", "other", "--registry",
                          mesh2["registry"].addresses["registry"], "--outbound", outbound,
                          "--admin", "127.0.0.1:0", "--workers", "2")

    server_workers = [server.proc.pid, *secondary_pids(server.proc.pid)]
    assert len(server_workers) == 2
    slow = [asyncio.ensure_future(call(outbound, delay_ms=1500)) for _ in range(6)]
    await asyncio.sleep(0.5)
    assert await server.stop(timeout=20) == 0
    assert [r.instance for r in await asyncio.gather(*slow)] == ["a"] * 6
    assert not any(Path(f"/proc/{pid}").exists() for pid in server_workers)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_each_worker_routes_external_services(mesh2: dict[str, procs.Daemon]) -> None:
    client, app = mesh2["client"], mesh2["app"]
    admin = client.addresses["admin"]
    # The example app itself, straight, as an external service: it takes Echo from the mesh.
    await apply(mesh2["registry"].addresses["registry"],
                external("direct", f"localhost:{app.addresses['app'].rpartition(':')[2]}"))

    async def views() -> list[dict[str, Any]]:
        workers: list[dict[str, Any]] = (await admin_get(admin, "/endpoints"))["workers"]
        return workers
    for _ in range(100):  # each worker follows the registry, and resolves, on its own
        if all(w["services"].get("direct", {}).get("endpoints") for w in await views()):
            break
        await asyncio.sleep(0.05)
    for _ in range(30):
        assert (await call(client.addresses["outbound"])).instance == "a"
    calls = [sum(e["calls"] for e in w["services"]["direct"]["endpoints"])
             for w in await views()]
    assert all(c >= 1 for c in calls) and sum(calls) == 30, calls


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_the_primarys_tap_shows_every_workers_calls(
        mesh2: dict[str, procs.Daemon]) -> None:
    client = mesh2["client"]
    outbound = client.addresses["outbound"]
    await routed(outbound)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grpcmesh", "tap", "echo", "--json", "--admin",
        client.addresses["admin"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        await asyncio.wait_for(proc.stdout.readline(), 10)  # the header: the tap is on
        await asyncio.sleep(1.0)  # the primary follows each worker's /tap
        for _ in range(20):
            await call(outbound)
        lines = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
                 for _ in range(20)]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert {x["code"] for x in lines} == {"OK"}
    # The calls were spread over both processes (/endpoints: each worker's own count), and
    # the one tap saw them all.
    body = await admin_get(client.addresses["admin"], "/endpoints")
    calls = [sum(e["calls"] for e in w["services"]["echo"]["endpoints"])
             for w in body["workers"]]
    assert all(c >= 2 for c in calls), calls


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_worker_stops_when_its_primary_is_killed() -> None:
    daemons: list[procs.Daemon] = []
    try:
        registry = await procs.start("registry", "registry", "--listen", "127.0.0.1:0")
        daemons.append(registry)
        client = await procs.start(
            "client", "sidecar", "--service", "client", "--registry",
            registry.addresses["registry"], "--outbound", "127.0.0.1:0", "--admin",
            "127.0.0.1:0", "--workers", "2", "--drain-delay", "0.1")
        daemons.append(client)
        (secondary,) = secondary_pids(client.proc.pid)
        client.proc.kill()  # no chance to stop its workers itself
        await client.proc.wait()
        for _ in range(300):
            if not alive(secondary):
                break
            await asyncio.sleep(0.05)
        assert not alive(secondary), "the worker outlived its primary"
    finally:
        await procs.stop_all(daemons)
