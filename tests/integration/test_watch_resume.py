"""A watch that broke resumes after the last revision it applied: on the same registry, or on
another replica of the same etcd store, it gets RESUMED and just the changes it missed; with
another store, or when those changes are gone, a SNAPSHOT as for a new watch."""
from __future__ import annotations

import asyncio
import secrets

import grpc
import pytest

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh.registry.etcd_store import EtcdStore, parse_etcd_url
from grpcmesh.registry.server import RegistryServer, local_store
from tests.etcd import EtcdCluster

pytestmark = pytest.mark.timeout(30)


def instance(instance_id: str, service: str = "orders") -> pb.Instance:
    return pb.Instance(service=service, instance_id=instance_id,
                       address=f"10.0.0.{len(instance_id)}:80{instance_id[-1]}",
                       proto_services=["shop.v1.Orders"], health=pb.SERVING)


async def first_events(address: str, request: pb.WatchRequest,
                       count: int) -> list[pb.WatchEvent]:
    async with grpc.aio.insecure_channel(address) as channel:
        call = registry_pb2_grpc.RegistryStub(channel).Watch(request, timeout=10)
        events = []
        async for event in call:
            events.append(event)
            if len(events) == count:
                break
        call.cancel()
        return events


async def register(address: str, inst: pb.Instance) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await registry_pb2_grpc.RegistryStub(channel).Register(
            pb.RegisterRequest(instance=inst, ttl_seconds=30), timeout=5)
        return int(reply.revision)


async def deregister(address: str, service: str, instance_id: str, owner: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await registry_pb2_grpc.RegistryStub(channel).Deregister(
            pb.DeregisterRequest(service=service, instance_id=instance_id, owner=owner),
            timeout=5)


def kinds(events: list[pb.WatchEvent]) -> list[tuple[str, str]]:
    return [(pb.WatchEvent.Type.Name(e.type), e.instances[0].instance_id if e.instances else "")
            for e in events]


async def missed_while_away(first: str, then: str) -> None:
    """Watch through `first`, miss three changes, resume through `then`."""
    await register(first, instance("o1"))
    [snapshot] = await first_events(first, pb.WatchRequest(), 1)
    assert snapshot.type == pb.WatchEvent.SNAPSHOT and snapshot.store_id
    await register(first, instance("o2"))
    await register(first, instance("p1", service="payments"))
    o1 = instance("o1")
    await deregister(first, "orders", "o1", o1.address)
    resumed = await first_events(then, pb.WatchRequest(
        store_id=snapshot.store_id, after_revision=snapshot.revision), 4)
    assert kinds(resumed) == [("RESUMED", ""), ("UPSERT", "o2"), ("UPSERT", "p1"),
                              ("DELETE", "o1")]
    assert resumed[0].revision == snapshot.revision
    assert resumed[0].store_id == snapshot.store_id
    assert resumed[3].instances[0].address == o1.address  # the whole instance, not its key
    # A filtered watch resumes with what its filter lets through.
    only_orders = await first_events(then, pb.WatchRequest(
        service="orders", store_id=snapshot.store_id, after_revision=snapshot.revision), 3)
    assert kinds(only_orders) == [("RESUMED", ""), ("UPSERT", "o2"), ("DELETE", "o1")]
    # Another store's revisions mean nothing here: a snapshot.
    other = await first_events(then, pb.WatchRequest(
        store_id="local-0000", after_revision=snapshot.revision), 1)
    assert kinds(other) == [("SNAPSHOT", "o2")] or other[0].type == pb.WatchEvent.SNAPSHOT
    assert sorted(i.instance_id for i in other[0].instances) == ["o2", "p1"]


@pytest.mark.asyncio
async def test_a_watch_resumes_on_the_same_registry() -> None:
    server = RegistryServer("127.0.0.1:0", warmup=0)
    address = await server.start()
    try:
        await missed_while_away(address, address)
    finally:
        await server.stop(0)


@pytest.mark.asyncio
async def test_a_watch_that_missed_more_than_the_history_gets_a_snapshot() -> None:
    server = RegistryServer("127.0.0.1:0", store=local_store(warmup=0, history_limit=2))
    address = await server.start()
    try:
        [snapshot] = await first_events(address, pb.WatchRequest(), 1)
        for n in range(1, 7):
            await register(address, instance(f"o{n}"))
        events = await first_events(address, pb.WatchRequest(
            store_id=snapshot.store_id, after_revision=snapshot.revision), 1)
        assert events[0].type == pb.WatchEvent.SNAPSHOT and len(events[0].instances) == 6
        # Recent enough: resumed.
        recent = await first_events(address, pb.WatchRequest(
            store_id=snapshot.store_id, after_revision=events[0].revision - 1), 2)
        assert kinds(recent) == [("RESUMED", ""), ("UPSERT", "o6")]
    finally:
        await server.stop(0)




@pytest.mark.asyncio
async def test_a_watch_resumes_on_another_replica_of_the_same_etcd(etcd: EtcdCluster) -> None:
    url = etcd.url(f"/r{secrets.token_hex(3)}")
    servers = [RegistryServer("127.0.0.1:0", store=EtcdStore(parse_etcd_url(url)))
               for _ in range(2)]
    a, b = [await s.start() for s in servers]
    try:
        await missed_while_away(a, b)
    finally:
        for server in servers:
            await server.stop(0)


@pytest.mark.asyncio
async def test_a_watch_resumes_at_once_on_a_replica_that_saw_none_of_the_newer_writes(
        etcd: EtcdCluster) -> None:
    """etcd's revision counts every write to etcd, and a replica's view moved only with the
    keys it uses. A replica that listed after someone else's write (another program on the
    same etcd; a leader key) gave its watchers that newer revision, and one that listed before
    it waited RESUME_CATCH_UP_SECONDS for a revision it would never see, then sent a whole
    SNAPSHOT instead of resuming."""
    from aetcd import rpc  # type: ignore[import-untyped]

    url = etcd.url(f"/r{secrets.token_hex(3)}")
    servers = [RegistryServer("127.0.0.1:0", store=EtcdStore(parse_etcd_url(url)))
               for _ in range(2)]
    try:
        b = await servers[1].start()
        await register(b, instance("o1"))
        async with grpc.aio.insecure_channel(etcd.members[0].endpoint) as channel:
            await rpc.KVStub(channel).Put(rpc.PutRequest(key=b"/elsewhere/k", value=b"1"),
                                          timeout=5)
        a = await servers[0].start()
        [snapshot] = await first_events(a, pb.WatchRequest(), 1)
        assert snapshot.revision > servers[1].view.revision  # what makes the case
        loop = asyncio.get_running_loop()
        started = loop.time()
        resumed = await first_events(b, pb.WatchRequest(
            store_id=snapshot.store_id, after_revision=snapshot.revision), 1)
        assert kinds(resumed) == [("RESUMED", "")]
        assert loop.time() - started < 1.0
        # And it goes on from there.
        await register(a, instance("o2"))
        assert await servers[1].view.wait_for(servers[0].view.revision, 5)
    finally:
        for server in servers:
            await server.stop(0)
