"""One set of tests for every registry store: memory, SQLite and a real etcd (Debian's
etcd-server, started on loopback ports). The registry relies on exactly these behaviours:
a listing at a revision, then every change after it, in order, none twice; leases that keep
an instance while kept alive and remove it when not; owners; the config's versions."""
from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from grpcmesh.registry.backend import Compacted, Store
from grpcmesh.registry.config_store import prepare
from grpcmesh.registry.etcd_store import EtcdStore, parse_etcd_url
from grpcmesh.registry.history import Change
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.registry.model import EventType, Health, Instance, RegistryError
from grpcmesh.registry.server import local_store
from grpcmesh.registry.sqlite_store import SqlitePersistence
from tests.etcd import ETCD, MISSING, EtcdCluster

pytestmark = pytest.mark.timeout(30)
KINDS = ["memory", "sqlite", "etcd"]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster | None]:
    if ETCD is None:
        yield None
        return
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def make(kind: str, etcd: EtcdCluster | None, tmp_path: Path,
         limits: RegistryLimits = RegistryLimits(), history_limit: int = 10_000) -> Store:
    if kind == "memory":
        return local_store(None, warmup=0, limits=limits, history_limit=history_limit)
    if kind == "sqlite":
        return local_store(SqlitePersistence(str(tmp_path / "registry.db")), warmup=0,
                           limits=limits, history_limit=history_limit)
    if etcd is None:
        pytest.skip(MISSING)
    # A prefix of its own per test: the tests share one etcd.
    return EtcdStore(parse_etcd_url(etcd.url(f"/t{secrets.token_hex(4)}")), limits)


@pytest_asyncio.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, etcd: EtcdCluster | None,
                tmp_path: Path) -> AsyncIterator[Store]:
    opened = make(request.param, etcd, tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def inst(instance_id: str = "o1", service: str = "orders", port: int = 8080,
         owner: str = "") -> Instance:
    return Instance(service, instance_id, f"10.0.0.1:{port}", ("shop.v1.Orders",),
                    health=Health.SERVING, owner=owner)


async def take(changes: AsyncIterator[Change], count: int,
               timeout: float = 5.0) -> list[Change]:
    """The next count changes (the RESUMED marker that starts them aside)."""
    out: list[Change] = []
    async with asyncio.timeout(timeout):
        async for change in changes:
            if change.event.type == EventType.RESUMED:
                continue
            out.append(change)
            if len(out) == count:
                break
    return out


def summary(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.event.type.name, c.event.instances[0].instance_id if c.event.instances else "")
            for c in changes]


async def nothing_more(changes: AsyncIterator[Change], wait: float = 0.3) -> None:
    try:
        async with asyncio.timeout(wait):
            while (extra := await anext(changes)).event.type == EventType.RESUMED:
                pass
        raise AssertionError(f"unexpected change {extra}")
    except TimeoutError:
        pass


@pytest.mark.asyncio
async def test_a_listing_then_exactly_the_changes_after_it(store: Store) -> None:
    await store.register(inst("o1"), 30)
    listed = await store.listing()
    assert [i.instance_id for i in listed.instances] == ["o1"]
    o2 = await store.register(inst("o2", port=8081), 30)
    await store.set_health(o2.instance.lease_id, Health.NOT_SERVING)
    await store.register(inst("c1", port=9000), 0)
    gone = await store.deregister("orders", "o1", "10.0.0.1:8080")
    changes = store.changes(listed.revision)
    marker = await anext(changes)  # the watch is in place
    assert (marker.event.type, marker.revision) == (EventType.RESUMED, listed.revision)
    got = await take(changes, 4)
    assert summary(got) == [("UPSERT", "o2"), ("UPSERT", "o2"), ("UPSERT", "c1"),
                            ("DELETE", "o1")]
    assert got[1].event.instances[0].health == Health.NOT_SERVING
    revisions = [c.revision for c in got]
    assert revisions == sorted(set(revisions)) and revisions[-1] == gone
    assert revisions[0] > listed.revision
    # Then each change as it happens, and nothing twice.
    await store.register(inst("o3", port=8083), 30)
    assert summary(await take(changes, 1)) == [("UPSERT", "o3")]
    await nothing_more(changes)
    await changes.aclose()
    # From the middle: only what came after.
    later = store.changes(revisions[1])
    assert summary(await take(later, 3)) == [("UPSERT", "c1"), ("DELETE", "o1"),
                                             ("UPSERT", "o3")]
    await later.aclose()
    final = await store.listing()
    assert [(i.instance_id, i.health) for i in final.instances] == [
        ("c1", Health.SERVING), ("o2", Health.NOT_SERVING), ("o3", Health.SERVING)]
    assert final.revision >= got[-1].revision


@pytest.mark.asyncio
async def test_a_lease_kept_alive_keeps_its_instance_and_one_left_alone_expires(
        store: Store) -> None:
    listed = await store.listing()
    kept = await store.register(inst("kept"), 2)
    dropped = await store.register(inst("dropped", port=8081), 2)
    assert kept.lease is not None and kept.lease.ttl >= 2
    assert kept.instance.lease_id and kept.instance.lease_id != dropped.instance.lease_id
    changes = store.changes(listed.revision)
    assert summary(await take(changes, 2)) == [("UPSERT", "kept"), ("UPSERT", "dropped")]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 8
    while loop.time() < deadline:  # etcd may round a TTL up; 8 s covers it
        lease = await store.keep_alive(kept.instance.lease_id)
        assert lease.ttl >= 1
        if not any(i.instance_id == "dropped" for i in (await store.listing()).instances):
            break
        await asyncio.sleep(0.5)
    assert summary(await take(changes, 1)) == [("DELETE", "dropped")]
    assert [i.instance_id for i in (await store.listing()).instances] == ["kept"]
    with pytest.raises(RegistryError) as err:
        await store.keep_alive(dropped.instance.lease_id)
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "register again" in err.value.message
    with pytest.raises(RegistryError) as err:
        await store.set_health(dropped.instance.lease_id, Health.SERVING)
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    await changes.aclose()


@pytest.mark.asyncio
async def test_registering_again_replaces_the_lease(store: Store) -> None:
    first = await store.register(inst("o1"), 30)
    second = await store.register(inst("o1"), 30)
    assert second.instance.lease_id != first.instance.lease_id
    with pytest.raises(RegistryError) as err:
        await store.keep_alive(first.instance.lease_id)
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    await store.keep_alive(second.instance.lease_id)
    assert [i.lease_id for i in (await store.listing()).instances] == [second.instance.lease_id]


@pytest.mark.asyncio
async def test_an_unchanged_health_writes_nothing(store: Store) -> None:
    reg = await store.register(inst("o1"), 30)
    before = await store.listing()
    assert await store.set_health(reg.instance.lease_id, Health.SERVING) <= before.revision
    changes = store.changes(before.revision)
    await nothing_more(changes)
    await changes.aclose()


@pytest.mark.asyncio
async def test_owners(store: Store) -> None:
    await store.register(inst("o1", owner="team-a"), 30)
    with pytest.raises(RegistryError) as err:
        await store.register(inst("o1", owner="team-b"), 30)
    assert err.value.code == grpc.StatusCode.ALREADY_EXISTS and "team-a" in err.value.message
    with pytest.raises(RegistryError) as err:
        await store.deregister("orders", "o1", "team-b")
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(RegistryError) as err:
        await store.deregister("orders", "nobody", "team-a")
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(RegistryError) as err:
        await store.register(inst("o1", owner="team-a"), 0)  # a leased one stays leased
    assert err.value.code == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(RegistryError) as err:
        await store.register(inst("bad id!"), 30)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    await store.deregister("orders", "o1", "team-a")
    assert (await store.listing()).instances == ()


@pytest.mark.asyncio
async def test_the_registry_checks_the_health_of_instances_without_a_lease(
        store: Store) -> None:
    checked = await store.register(inst("c1"), 0)
    leased = await store.register(inst("l1", port=8081), 30)
    assert checked.instance.lease_id == 0 and checked.lease is None
    revision = await store.set_checked_health(("orders", "c1"), Health.NOT_SERVING)
    assert revision > leased.revision
    # The checker does not touch an instance its sidecar reports on.
    await store.set_checked_health(("orders", "l1"), Health.NOT_SERVING)
    await store.set_checked_health(("orders", "gone"), Health.NOT_SERVING)
    health = {i.instance_id: i.health for i in (await store.listing()).instances}
    assert health == {"c1": Health.NOT_SERVING, "l1": Health.SERVING}
    # Registering it again at the same address keeps what the checker last saw.
    await store.register(inst("c1"), 0)
    assert (await store.listing()).instances[0].health == Health.NOT_SERVING


@pytest.mark.asyncio
async def test_the_config_has_versions_and_comes_with_the_changes(store: Store) -> None:
    listed = await store.listing()
    assert listed.config.version == 0
    first = await store.apply_config(prepare("services: {orders: {timeout: 2s}}\n"), 1000.0)
    assert (first.changed, first.current.version) == (True, 1) and first.revision > 0
    same = await store.apply_config(prepare("services: {orders: {timeout: 2s}}\n"), 2000.0)
    assert (same.changed, same.current.version) == (False, 1)
    second = await store.apply_config(prepare("services: {orders: {timeout: 3s}}\n"), 3000.0)
    assert (second.changed, second.current.version) == (True, 2)
    changes = store.changes(listed.revision)
    got = await take(changes, 2)
    assert [(c.event.type, c.event.config.version if c.event.config else None)
            for c in got] == [(EventType.CONFIG, 1), (EventType.CONFIG, 2)]
    assert got[1].revision == second.revision
    now = await store.listing()
    assert now.config.version == 2 and now.config.applied_at == 3000.0
    assert now.config.canonical_json == '{"services":{"orders":{"timeout":"3s"}}}'
    await changes.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_max_instances(kind: str, etcd: EtcdCluster | None, tmp_path: Path) -> None:
    store = make(kind, etcd, tmp_path, RegistryLimits(max_instances=2))
    await store.open()
    try:
        await store.register(inst("o1"), 30)
        await store.register(inst("o2", port=8081), 0)
        with pytest.raises(RegistryError) as err:
            await store.register(inst("o3", port=8082), 30)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        await store.register(inst("o1"), 30)  # replacing one is not a new one
    finally:
        await store.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_changes_that_are_gone_say_so(kind: str, etcd: EtcdCluster | None,
                                            tmp_path: Path) -> None:
    store = make(kind, etcd, tmp_path, history_limit=2)
    await store.open()
    try:
        start = (await store.listing()).revision
        for i in range(6):
            await store.register(inst(f"o{i}", port=8000 + i), 30)
        if isinstance(store, EtcdStore):  # etcd keeps every revision until compacted
            from aetcd import rpc  # type: ignore[import-untyped]

            last = (await store.listing()).revision
            await store._kv.Compact(rpc.CompactionRequest(revision=last, physical=True))
        with pytest.raises(Compacted):
            await take(store.changes(start), 1)
    finally:
        await store.close()
