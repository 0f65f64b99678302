"""The registry on a 3-member etcd, two registry replicas, sidecars and a client under steady
load: kill -9 the etcd leader, then a registry replica. No call fails, no registration is
lost, and every replica's watchers converge on the same state; a replica restarted on the same
etcd serves the same config version."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Self

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from generated.grpcmesh.registry.v1 import registry_pb2 as rpb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh import procs
from tests.etcd import ETCD, MISSING, EtcdCluster

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(ETCD is None, reason=MISSING)]


LOOPBACK = ("--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0")


class Load:
    """Unary calls through the client's sidecar, a few at a time, until stopped."""

    def __init__(self, address: str, concurrency: int = 4) -> None:
        self.address = address
        self.concurrency = concurrency
        self.ok = 0
        self.failed: list[str] = []
        self.served_by: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self._channel = grpc.aio.insecure_channel(self.address)
        stub = echo_pb2_grpc.EchoStub(self._channel)
        self._tasks = [asyncio.create_task(self._run(stub)) for _ in range(self.concurrency)]
        return self

    async def _run(self, stub: echo_pb2_grpc.EchoStub) -> None:
        while not self._stop.is_set():
            try:
                reply = await stub.Unary(pb.EchoRequest(message="x"), timeout=5)
                self.ok += 1
                self.served_by[reply.instance] = self.served_by.get(reply.instance, 0) + 1
            except grpc.aio.AioRpcError as err:
                self.failed.append(f"{err.code().name}: {err.details()}")
            await asyncio.sleep(0.01)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._channel.close()


async def services_json(registry: str) -> list[dict[str, object]]:
    """`grpcmesh services --json` through one registry: its services (the revision differs
    between replicas: each says how far it has read etcd, which counts every write)."""
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "grpcmesh", "services", "--registry", registry,
                         "--json"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    data: list[dict[str, object]] = json.loads(run.stdout)["services"]
    return data


async def config_version(registry: str) -> int:
    async with grpc.aio.insecure_channel(registry) as channel:
        reply = await registry_pb2_grpc.RegistryStub(channel).GetConfig(
            rpb.GetConfigRequest(), timeout=5)
        return int(reply.config.version)


async def until(predicate: object, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)




@pytest.mark.asyncio
async def test_kill_the_etcd_leader_then_a_registry_replica(etcd3: EtcdCluster,
                                                            tmp_path: Path) -> None:
    daemons: list[procs.Daemon] = []
    try:
        url = etcd3.url("/mesh")
        replicas = [await procs.start(f"registry-{n}", "registry", "--listen", "127.0.0.1:0",
                                      "--store", url) for n in "ab"]
        daemons += replicas
        a, b = (r.addresses["registry"] for r in replicas)
        both = f"{a},{b}"
        config = tmp_path / "mesh.yaml"
        config.write_text("services:\n  echo:\n    timeout: 4s\n")
        applied = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "grpcmesh", "config", "apply", str(config),
                             "--registry", a], capture_output=True, text=True, timeout=30)
        assert applied.returncode == 0, applied.stderr
        assert await config_version(b) == 1  # applied through a, served by b too
        for n in (1, 2):
            app = await procs.start(f"app-{n}", "example-server", "--listen", "127.0.0.1:0",
                                    "--name", f"app-{n}")
            daemons.append(app)
            daemons.append(await procs.start(
                f"sidecar-{n}", "sidecar", "--service", "echo", "--app",
                app.addresses["app"], "--registry", both, "--ttl", "6", "--workers", "1",
                "--instance-id", f"echo-{n}", *LOOPBACK, "--inbound", "127.0.0.1:0"))
        client = await procs.start("client", "sidecar", "--service", "web", "--registry",
                                   both, "--ttl", "6", "--workers", "1", *LOOPBACK)
        daemons.append(client)

        async def serving(registry: str) -> bool:
            rows = {r["service"]: r for r in await services_json(registry)}
            return rows.get("echo", {}).get("serving") == 2  # type: ignore[union-attr]

        await until(lambda: serving(b), 20, "both echo instances serving")
        before = await services_json(b)
        async with Load(client.addresses["outbound"]) as load:
            await until(lambda: len(load.served_by) == 2, 10, "calls reaching both apps")
            leader = await asyncio.to_thread(etcd3.leader)
            etcd3.kill(leader)
            await asyncio.sleep(4)  # an election, and the registries follow the new leader
            replicas[0].kill()  # registry a: every sidecar's first choice
            await replicas[0].proc.wait()
            ok_at_kill = load.ok
            await asyncio.sleep(8)  # longer than the 6 s lease TTL: leases kept through b
            assert load.ok > ok_at_kill + 100
        assert load.failed == [], load.failed[:5]
        assert await services_json(b) == before  # no registration lost
        # a comes back on the same etcd: the same state and config version as b
        restarted = await procs.start("registry-a2", "registry", "--listen", "127.0.0.1:0",
                                      "--store", url)
        daemons.append(restarted)
        a2 = restarted.addresses["registry"]
        assert await config_version(a2) == 1
        assert await services_json(a2) == await services_json(b) == before
        # Every sidecar resumed its watch on b where it was on a: no snapshot needed.
        for sidecar in daemons:
            if sidecar.name.startswith(("sidecar", "client")):
                log = Path(sidecar.log_path).read_text()
                assert f"watching registry {b} (resumed at revision" in log, log[-3000:]
    finally:
        await procs.stop_all(daemons)
