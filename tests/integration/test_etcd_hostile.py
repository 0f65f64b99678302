"""The registry on a real etcd that is not as grpcmesh would have it: a prefix holding a config
key it cannot read (written by hand, or by a newer grpcmesh), more than one gRPC message of data
(a big mesh, or big values someone else wrote), keys with odd bytes, a key deleted by hand;
other programs writing to the same etcd; a member that lost quorum or died under one replica.
A replica still starts, follows, hands its watchers over and says what is wrong in one line."""
from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aetcd import rpc  # type: ignore[import-untyped]

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh.registry.etcd_store import EtcdStore, parse_etcd_url
from grpcmesh.registry.model import Instance
from grpcmesh.registry.server import RegistryServer
from tests.conftest import wait_for
from tests.etcd import ETCD, MISSING, EtcdCluster

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(ETCD is None, reason=MISSING)]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def store(cluster: EtcdCluster) -> EtcdStore:
    return EtcdStore(parse_etcd_url(cluster.url(f"/x{secrets.token_hex(4)}")))


async def put(cluster: EtcdCluster, key: bytes, value: bytes) -> None:
    async with grpc.aio.insecure_channel(cluster.members[0].endpoint) as channel:
        await rpc.KVStub(channel).Put(rpc.PutRequest(key=key, value=value), timeout=5)


@pytest.mark.asyncio
async def test_a_config_key_the_registry_cannot_read_does_not_stop_it(
        etcd: EtcdCluster, tmp_path: Path) -> None:
    """listing() raised the ValueError of an unreadable PREFIX/config, which ended follow():
    start() waited for a first listing forever. Now the replica starts with the config it could
    read (none), and ApplyConfig says in one line why it will not replace what it cannot read."""
    opened = store(etcd)
    await opened.open()
    await put(etcd, opened._config_key, b'{"version": "three"')
    server = RegistryServer("127.0.0.1:0", store=opened)
    try:
        address = await asyncio.wait_for(server.start(), 10)
        assert server.view.config.version == 0
        await opened.register(Instance("orders", "o1", "10.0.0.1:80", ("shop.v1.Orders",)), 30)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            reply = await stub.Resolve(pb.ResolveRequest(service="orders"), timeout=5)
            assert [i.instance_id for i in reply.instances] == ["o1"]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ApplyConfig(pb.ApplyConfigRequest(text=b"{}"), timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value
        assert "config" in (err.value.details() or "")
        assert "\n" not in (err.value.details() or "")
    finally:
        await server.stop(0)


@pytest.mark.asyncio
async def test_a_listing_larger_than_one_grpc_message(etcd: EtcdCluster) -> None:
    """listing() read the whole prefix in one Range: past gRPC's 4 MiB message limit (a mesh of
    some 10,000 instances with their methods, or big values someone else put there) every
    listing failed with RESOURCE_EXHAUSTED, reported as etcd being unreachable, and the replica
    never started."""
    opened = store(etcd)
    await opened.open()
    try:
        await opened.register(Instance("orders", "o1", "10.0.0.1:80", ("shop.v1.Orders",)), 30)
        junk = b"x" * (1024 * 1024)
        for n in range(5):  # 5 MiB of values that are not instances
            await put(etcd, opened._instances + f"junk/j{n}".encode(), junk)
        listing = await asyncio.wait_for(opened.listing(), 20)
        assert [i.instance_id for i in listing.instances] == ["o1"]
    finally:
        await opened.close()


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_a_replica_on_an_etcd_member_without_quorum_is_not_ready(tmp_path: Path) -> None:
    """Two of three members die: the one left has no leader, so no write can be made and no
    change comes, but a watch on it stays open without a word unless it asks etcd to require a
    leader (clientv3's WithRequireLeader, metadata hasleader). The replica kept saying SERVING
    over a store it could no longer follow."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from grpcmesh.registry.server import REGISTRY_SERVICE

    cluster = EtcdCluster(tmp_path / "etcd", size=3)
    await asyncio.to_thread(cluster.start)
    server = RegistryServer("127.0.0.1:0", store=EtcdStore(parse_etcd_url(cluster.url("/q"))))
    try:
        address = await server.start()

        async def status() -> int:
            async with grpc.aio.insecure_channel(address) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=REGISTRY_SERVICE), timeout=2)
                return int(reply.status)

        assert await status() == health_pb2.HealthCheckResponse.SERVING
        for member in cluster.members[1:]:
            await asyncio.to_thread(cluster.kill, member)
        loop = asyncio.get_running_loop()
        deadline, since = loop.time() + 20, None
        while True:  # NOT_SERVING, and staying so for 3 s
            if await status() == health_pb2.HealthCheckResponse.NOT_SERVING:
                since = since or loop.time()
                if loop.time() - since >= 3:
                    break
            else:
                since = None
            assert loop.time() < deadline, "still SERVING on a member without quorum"
            await asyncio.sleep(0.2)
    finally:
        await server.stop(0)
        await asyncio.to_thread(cluster.stop)


@pytest.mark.asyncio
async def test_the_error_for_a_prefix_of_someone_else_is_one_line(etcd: EtcdCluster) -> None:
    """The key named in "belongs to something else" was printed as it is: a key with a newline
    in it made the error two lines (and let a key's bytes say what they liked in the log)."""
    prefix = f"/nl{secrets.token_hex(3)}"
    await put(etcd, f"{prefix}/a\nERROR forged".encode(), b"1")
    theirs = EtcdStore(parse_etcd_url(etcd.url(prefix)))
    with pytest.raises(ValueError) as err:
        await theirs.open()
    assert "belongs to something else" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.asyncio
async def test_keep_alive_renews_only_the_lease_of_an_instance(etcd: EtcdCluster) -> None:
    """In memory a lease and its instance go together: a sidecar whose instance was removed
    hears NOT_FOUND at its next keep-alive and registers again. On etcd the key can go while
    the lease stays (etcdctl del; a deregister whose LeaseRevoke failed): the registry renews a
    lease only if its view holds an instance under it. The same keeps a client from keeping a
    replica's leader lease alive (etcd lease ids are guessable) so that no other replica could
    take the health checks over."""
    opened = store(etcd)
    server = RegistryServer("127.0.0.1:0", store=opened)
    address = await server.start()
    try:
        await wait_for(lambda: server.leading, 5, "the replica to lead the checks")
        async with grpc.aio.insecure_channel(address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            reg = await stub.Register(pb.RegisterRequest(instance=pb.Instance(
                service="orders", instance_id="o1", address="10.0.0.1:80",
                proto_services=["shop.v1.Orders"]), ttl_seconds=30), timeout=5)
            await stub.KeepAlive(pb.KeepAliveRequest(lease_id=reg.lease_id), timeout=5)
            async with grpc.aio.insecure_channel(etcd.members[0].endpoint) as raw:
                leader = await rpc.KVStub(raw).Range(rpc.RangeRequest(
                    key=opened._leaders + b"checker"), timeout=5)
                await rpc.KVStub(raw).DeleteRange(
                    rpc.DeleteRangeRequest(key=opened._key(("orders", "o1"))), timeout=5)
            await wait_for(lambda: server.view.get("orders", "o1") is None, 5,
                           "the view to see the key go")
            for lease_id in (reg.lease_id, leader.kvs[0].lease):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.KeepAlive(pb.KeepAliveRequest(lease_id=lease_id), timeout=5)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
                assert "register again" in (err.value.details() or "")
    finally:
        await server.stop(0)


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_a_watcher_leaves_a_replica_that_lost_its_store(tmp_path: Path) -> None:
    """Replica a reaches etcd through one member, b through the others; a's member dies. a goes
    NOT_SERVING, but its Watch streams stayed open: a sidecar watching a kept its state of then
    and never heard of changes made through b, though b could tell it. Now a ends its watches
    (UNAVAILABLE) once it has been away from its store for WATCH_HANDOFF_SECONDS, and the
    watcher resumes on b."""
    from grpcmesh.registry.client import RegistryClient, watch_forever
    from grpcmesh.registry.model import Event

    cluster = EtcdCluster(tmp_path / "etcd", size=3)
    await asyncio.to_thread(cluster.start)
    m0, m1, m2 = cluster.members
    servers = [RegistryServer("127.0.0.1:0", store=EtcdStore(parse_etcd_url(url)))
               for url in (f"etcd://{m0.endpoint}/w", f"etcd://{m1.endpoint},{m2.endpoint}/w")]
    known: set[str] = set()

    def on_event(event: Event) -> None:
        if event.type.name == "SNAPSHOT":
            known.clear()
        for inst in event.instances:
            (known.discard if event.type.name == "DELETE" else known.add)(inst.instance_id)

    client = RegistryClient([])
    watching: asyncio.Task[None] | None = None
    try:
        a, b = [await server.start() for server in servers]
        client.addresses = [a, b]
        watching = asyncio.create_task(watch_forever(client, on_event))
        await servers[1].store.register(Instance("orders", "o1", "10.0.0.1:80"), 60)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while "o1" not in known:
            assert loop.time() < deadline, "the watcher never saw o1"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(cluster.kill, m0)
        await servers[1].store.register(Instance("orders", "o2", "10.0.0.2:80"), 60)
        deadline = loop.time() + 20
        while "o2" not in known:
            assert loop.time() < deadline, "the watcher stayed on a replica cut off from etcd"
            await asyncio.sleep(0.1)
    finally:
        if watching is not None:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        await client.close()
        for server in servers:
            await server.stop(0)
        await asyncio.to_thread(cluster.stop)


@pytest.mark.asyncio
async def test_a_health_that_did_not_change_is_answered_at_once(etcd: EtcdCluster) -> None:
    """SetHealth with the health already stored answered with etcd's revision of its read,
    which counts others' writes too, and waited READ_BACK_SECONDS (5 s) for the view to reach
    a revision that no change of the registry's would bring; a sidecar's keep-alives waited
    behind it. Now it answers with the revision of the instance as stored."""
    server = RegistryServer("127.0.0.1:0", store=store(etcd))
    address = await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            reply = await stub.Register(pb.RegisterRequest(instance=pb.Instance(
                service="orders", instance_id="o1", address="10.0.0.1:80",
                proto_services=["shop.v1.Orders"], health=pb.SERVING), ttl_seconds=30),
                timeout=5)
            await put(etcd, b"/elsewhere/k", b"1")  # another program's write
            loop = asyncio.get_running_loop()
            started = loop.time()
            await stub.SetHealth(pb.SetHealthRequest(lease_id=reply.lease_id,
                                                     health=pb.SERVING), timeout=10)
            assert loop.time() - started < 1.0
    finally:
        await server.stop(0)
