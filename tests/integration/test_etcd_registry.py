"""The registry on a real etcd: one replica at a time runs the health checks and another takes
over when it goes; a replica says NOT_SERVING (grpc.health.v1, the Registry service) while it
cannot reach etcd; clear one-line errors for an unreachable etcd, a bad URL, a prefix that
belongs to something else."""
from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys

import grpc
import pytest
from aetcd import rpc  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh.example.server import EchoBehaviour, EchoServer
from grpcmesh.registry.etcd_store import EtcdLeadership, EtcdStore, parse_etcd_url
from grpcmesh.registry.server import REGISTRY_SERVICE, RegistryServer
from tests.conftest import wait_for
from tests.etcd import ETCD, MISSING, EtcdCluster, free_ports

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(ETCD is None, reason=MISSING)]




def store(cluster: EtcdCluster, prefix: str) -> EtcdStore:
    return EtcdStore(parse_etcd_url(cluster.url(prefix)))


async def registry_health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=REGISTRY_SERVICE), timeout=2)
        return int(reply.status)


@pytest.mark.asyncio
async def test_one_replica_checks_health_and_another_takes_over(etcd: EtcdCluster) -> None:
    app = EchoServer("127.0.0.1:0", EchoBehaviour(name="legacy"))
    app_address = await app.start()
    prefix = f"/c{secrets.token_hex(3)}"
    servers = [RegistryServer("127.0.0.1:0", store=store(etcd, prefix), check_interval=0.1)
               for _ in range(2)]
    try:
        first = await servers[0].start()
        await servers[1].start()
        await wait_for(lambda: servers[0].leading, 5, "the first replica to lead")
        await asyncio.sleep(0.5)
        assert not servers[1].leading  # one at a time
        async with grpc.aio.insecure_channel(first) as channel:
            await registry_pb2_grpc.RegistryStub(channel).Register(pb.RegisterRequest(
                instance=pb.Instance(service="legacy", instance_id="l1", address=app_address,
                                     proto_services=["grpcmesh.example.v1.Echo"])), timeout=5)

        def health() -> int:
            inst = servers[1].view.get("legacy", "l1")
            return 0 if inst is None else int(inst.health)

        await wait_for(lambda: health() == pb.SERVING, 5, "the leader to check l1")
        await servers[0].stop(0)  # hands the job over as it goes
        await wait_for(lambda: servers[1].leading, 5, "the second replica to take over")
        await app.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await wait_for(lambda: health() == pb.NOT_SERVING, 5, "the new leader to see it")
    finally:
        for server in servers:
            await server.stop(0)
        await app.stop()


@pytest.mark.asyncio
async def test_a_leader_that_dies_silently_is_replaced_within_its_ttl(
        etcd: EtcdCluster) -> None:
    opened = store(etcd, f"/d{secrets.token_hex(3)}")
    await opened.open()
    try:
        key = b"/test/leader/job"
        one, two = EtcdLeadership(opened, key, ttl=2), EtcdLeadership(opened, key, ttl=2)
        await asyncio.wait_for(one.acquire(), 5)
        second = asyncio.create_task(two.acquire())
        await asyncio.sleep(1.0)
        assert not second.done()
        assert one._keeper is not None
        one._keeper.cancel()  # killed: no keep-alive, no revoke
        loop = asyncio.get_running_loop()
        died = loop.time()
        await asyncio.wait_for(second, 6)
        assert loop.time() - died < 4.5  # the TTL (2 s), rounded up by etcd, and a poll
        await two.release()
    finally:
        await opened.close()


@pytest.mark.asyncio
async def test_a_replica_is_not_ready_while_etcd_is_away(etcd: EtcdCluster) -> None:
    server = RegistryServer("127.0.0.1:0", store=store(etcd, f"/h{secrets.token_hex(3)}"))
    address = await server.start()
    try:
        assert await registry_health(address) == health_pb2.HealthCheckResponse.SERVING
        member = etcd.members[0]
        etcd.kill(member)
        async def status() -> int:
            return await registry_health(address)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await status() != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert loop.time() < deadline, "still SERVING without etcd"
            await asyncio.sleep(0.1)
        # It still answers reads from what it knew.
        async with grpc.aio.insecure_channel(address) as channel:
            await registry_pb2_grpc.RegistryStub(channel).ListServices(
                pb.ListServicesRequest(), timeout=2)
        await asyncio.to_thread(etcd.start_member, member)
        deadline = loop.time() + 15
        while await status() != health_pb2.HealthCheckResponse.SERVING:
            assert loop.time() < deadline, "not SERVING again once etcd is back"
            await asyncio.sleep(0.1)
    finally:
        await server.stop(0)


def registry_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grpcmesh", "registry", "--listen",
                           "127.0.0.1:0", *args], check=False, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.asyncio
async def test_clear_errors(etcd: EtcdCluster) -> None:
    [dead] = free_ports(1)
    unreachable = await asyncio.to_thread(registry_cli, "--store", f"etcd://127.0.0.1:{dead}")
    assert unreachable.returncode == 1
    assert "cannot reach etcd" in unreachable.stderr, unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1, unreachable.stderr
    bad = await asyncio.to_thread(registry_cli, "--store", "etcd://")
    assert bad.returncode == 2 and "names no etcd endpoint" in bad.stderr, bad.stderr
    bad_prefix = await asyncio.to_thread(registry_cli, "--store",
                                         f"etcd://{etcd.members[0].endpoint}/a/../b")
    assert bad_prefix.returncode == 2 and "prefix" in bad_prefix.stderr, bad_prefix.stderr
    # Something else's keys under the prefix.
    async with grpc.aio.insecure_channel(etcd.members[0].endpoint) as channel:
        await rpc.KVStub(channel).Put(rpc.PutRequest(key=b"/theirs/x", value=b"1"), timeout=5)
    owned = await asyncio.to_thread(registry_cli, "--store", etcd.url("/theirs"))
    assert owned.returncode == 1 and "belongs to something else" in owned.stderr, owned.stderr
    assert "/theirs/x" in owned.stderr
