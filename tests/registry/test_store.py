"""RegistryStore on a fake clock and a seeded RNG: no sockets, no sleeps."""
from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from grpcmesh.clock import FakeClock
from grpcmesh.registry.model import (
    Event,
    EventType,
    Health,
    Idempotency,
    Instance,
    Method,
    ServiceSummary,
)
from grpcmesh.registry.sqlite_store import SqlitePersistence
from grpcmesh.registry.store import (
    MAX_TTL_SECONDS,
    Persistence,
    RegistryError,
    RegistryStore,
    filter_event,
)

SEED = 7
START = 1000.0


class Harness:
    def __init__(self, persistence: Persistence | None = None) -> None:
        self.clock = FakeClock(START)
        self.store = RegistryStore(self.clock, random.Random(SEED), persistence)
        self.events: list[tuple[Event, Instance | None]] = []
        self.unsubscribe = self.store.subscribe(lambda e, prev: self.events.append((e, prev)))


def inst(instance_id: str = "a1", service: str = "orders", address: str = "10.0.0.1:8080",
         protos: tuple[str, ...] = ("shop.v1.Orders",),
         labels: tuple[tuple[str, str], ...] = (), owner: str = "") -> Instance:
    return Instance(service=service, instance_id=instance_id, address=address,
                    proto_services=protos, labels=labels, owner=owner)


def expected_lease_ids(n: int) -> list[int]:
    rng = random.Random(SEED)
    return [rng.getrandbits(62) + 1 for _ in range(n)]


@contextmanager
def raises(code: grpc.StatusCode) -> Iterator[pytest.ExceptionInfo[RegistryError]]:
    with pytest.raises(RegistryError) as info:
        yield info
    assert info.value.code == code, info.value.message


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- register and resolve --------------------------------------------------------------------


def test_register_normalizes_and_resolves_by_service_and_proto_service(h: Harness) -> None:
    reg = h.store.register(
        inst("a2", protos=("shop.v1.Orders", "grpc.health.v1.Health", "shop.v1.Orders"),
             labels=(("zone", "b"), ("version", "v2"))), 0)
    h.store.register(inst("a1", address="10.0.0.2:8080"), 0)
    h.store.register(inst("p1", service="payments", address="10.0.0.3:9090",
                          protos=("shop.v1.Payments",)), 0)

    assert reg.instance.proto_services == ("grpc.health.v1.Health", "shop.v1.Orders")
    assert reg.instance.labels == (("version", "v2"), ("zone", "b"))
    assert [i.instance_id for i in h.store.resolve(service="orders")] == ["a1", "a2"]
    assert [i.instance_id for i in h.store.resolve(proto_service="shop.v1.Orders")] == [
        "a1", "a2"]
    assert [i.address for i in h.store.resolve(proto_service="shop.v1.Payments")] == [
        "10.0.0.3:9090"]
    assert [i.instance_id for i in h.store.resolve(proto_service="grpc.health.v1.Health")] == [
        "a2"]
    assert h.store.get("orders", "a2") == reg.instance


def test_resolve_errors(h: Harness) -> None:
    h.store.register(inst(), 0)
    with raises(grpc.StatusCode.NOT_FOUND) as err:
        h.store.resolve(service="billing")
    assert err.value.message == "no instance of service 'billing' is registered"
    with raises(grpc.StatusCode.NOT_FOUND) as err:
        h.store.resolve(proto_service="shop.v1.Billing")
    assert err.value.message == "no instance of proto service 'shop.v1.Billing' is registered"
    with raises(grpc.StatusCode.INVALID_ARGUMENT):
        h.store.resolve()
    with raises(grpc.StatusCode.INVALID_ARGUMENT):
        h.store.resolve(service="orders", proto_service="shop.v1.Orders")
    with raises(grpc.StatusCode.INVALID_ARGUMENT) as err:
        h.store.resolve(service="Orders")
    assert "service 'Orders'" in err.value.message


def test_revision_increments_on_every_change(h: Harness) -> None:
    assert h.store.revision == 0
    first = h.store.register(inst("a1"), 10)
    second = h.store.register(inst("a2", address="10.0.0.2:8080"), 0)
    assert (first.revision, second.revision) == (1, 2)
    assert h.store.set_health(first.instance.lease_id, Health.SERVING) == 3
    assert h.store.deregister("orders", "a2", "10.0.0.2:8080") == 4
    assert h.store.revision == 4
    snap = h.store.snapshot()
    assert snap.type == EventType.SNAPSHOT
    assert snap.revision == 4
    assert [i.instance_id for i in snap.instances] == ["a1"]
    assert [e.revision for e, _ in h.events] == [1, 2, 3, 4]


def test_listeners_get_upsert_and_delete_with_previous(h: Harness) -> None:
    first = h.store.register(inst(owner="pod-a"), 0).instance
    second = h.store.register(inst(address="10.0.0.9:8080", owner="pod-a"), 0).instance
    h.store.deregister("orders", "a1", owner="pod-a")

    assert [(e.type, e.instances, e.reason, prev) for e, prev in h.events] == [
        (EventType.UPSERT, (first,), "registered", None),
        (EventType.UPSERT, (second,), "registered", first),
        (EventType.DELETE, (second,), "deregistered", second),
    ]
    h.unsubscribe()
    h.store.register(inst(), 0)
    assert len(h.events) == 3


# -- leases ----------------------------------------------------------------------------------


def test_lease_ids_come_from_the_injected_rng(h: Harness) -> None:
    a = h.store.register(inst("a1"), 10)
    b = h.store.register(inst("a2"), 10)
    assert a.lease is not None and b.lease is not None
    assert [a.lease.lease_id, b.lease.lease_id] == expected_lease_ids(2)
    assert a.instance.lease_id == a.lease.lease_id


def test_keep_alive_extends_the_lease(h: Harness) -> None:
    lease = h.store.register(inst(), 10).lease
    assert lease is not None
    assert lease.expires_at == START + 10
    h.clock.advance(8)
    assert h.store.keep_alive(lease.lease_id).expires_at == START + 18
    assert h.store.next_expiry() == START + 18
    h.clock.advance(8)  # past the original expiry, before the extended one
    assert h.store.expire() == 0
    assert h.store.get("orders", "a1") is not None
    h.clock.advance(2)
    assert h.store.expire() == 1
    assert h.store.get("orders", "a1") is None


def test_lease_expiry_removes_the_instance_and_says_why(h: Harness) -> None:
    reg = h.store.register(inst(), 5)
    assert reg.lease is not None
    h.clock.advance(4.999)
    assert h.store.expire() == 0
    h.clock.advance(0.001)
    assert h.store.expire() == 1
    assert h.store.instances() == []
    assert h.store.next_expiry() is None
    event, previous = h.events[-1]
    assert event.type == EventType.DELETE
    assert event.instances == (reg.instance,)
    assert previous == reg.instance
    assert event.reason == f"lease {reg.lease.lease_id} expired"
    assert event.revision == 2


@pytest.mark.parametrize("call", ["keep_alive", "set_health"])
def test_expired_lease_is_not_found_and_named(h: Harness, call: str) -> None:
    reg = h.store.register(inst(), 5)
    assert reg.lease is not None
    lease_id = reg.lease.lease_id
    h.clock.advance(6)  # no expire() call: the refused request notices the expiry itself
    with raises(grpc.StatusCode.NOT_FOUND) as err:
        if call == "keep_alive":
            h.store.keep_alive(lease_id)
        else:
            h.store.set_health(lease_id, Health.SERVING)
    assert f"lease {lease_id} not found" in err.value.message
    assert h.store.get("orders", "a1") is None
    assert h.events[-1][0].type == EventType.DELETE
    assert h.events[-1][0].reason == f"lease {lease_id} expired"


@pytest.mark.parametrize("call", ["keep_alive", "set_health"])
def test_unknown_lease_is_not_found_and_named(h: Harness, call: str) -> None:
    h.store.register(inst(), 0)
    with raises(grpc.StatusCode.NOT_FOUND) as err:
        if call == "keep_alive":
            h.store.keep_alive(12345)
        else:
            h.store.set_health(12345, Health.SERVING)
    assert err.value.message.startswith("lease 12345 not found")
    with raises(grpc.StatusCode.NOT_FOUND):
        h.store.keep_alive(0)  # registry-checked instances have no lease to keep alive


def test_registry_checked_instances_never_expire(h: Harness) -> None:
    reg = h.store.register(inst(), 0)
    assert reg.lease is None
    assert reg.instance.lease_id == 0
    assert reg.instance.checked_by_registry
    assert h.store.next_expiry() is None
    h.clock.advance(10 * MAX_TTL_SECONDS)
    assert h.store.expire() == 0
    assert h.store.instances() == [reg.instance]
    assert h.store.checked_instances() == [reg.instance]


# -- ownership -------------------------------------------------------------------------------


def test_owner_defaults_to_address(h: Harness) -> None:
    reg = h.store.register(inst(address="10.0.0.5:7000"), 0)
    assert reg.instance.owner == "10.0.0.5:7000"
    explicit = h.store.register(inst("a2", owner="pod-b"), 0)
    assert explicit.instance.owner == "pod-b"


def test_duplicate_instance_id_with_another_owner_is_refused(h: Harness) -> None:
    original = h.store.register(inst(address="10.0.0.1:8080"), 10).instance
    with raises(grpc.StatusCode.ALREADY_EXISTS) as err:
        h.store.register(inst(address="10.0.0.2:8080"), 10)
    message = err.value.message
    assert "instance_id 'a1'" in message
    assert "service 'orders'" in message
    assert "owner '10.0.0.1:8080'" in message
    assert h.store.instances() == [original]
    assert len(h.events) == 1
    assert h.store.revision == 1


def test_same_owner_reregister_replaces_and_revokes_old_lease(h: Harness) -> None:
    old = h.store.register(inst(owner="pod-a"), 10)
    h.clock.advance(5)
    new = h.store.register(inst(address="10.0.0.7:8080", owner="pod-a"), 10)
    assert old.lease is not None and new.lease is not None
    assert old.lease.lease_id != new.lease.lease_id
    assert h.store.instances() == [new.instance]
    assert new.instance.address == "10.0.0.7:8080"
    with raises(grpc.StatusCode.NOT_FOUND) as err:
        h.store.keep_alive(old.lease.lease_id)
    assert f"lease {old.lease.lease_id} not found" in err.value.message
    h.clock.advance(5)  # the old lease's expiry time no longer removes anything
    assert h.store.expire() == 0
    assert h.store.keep_alive(new.lease.lease_id).expires_at == START + 20


def test_registry_checked_registration_cannot_replace_a_live_lease(h: Harness) -> None:
    """`grpcmesh register` at a sidecar's address would otherwise take its registration over
    until the sidecar's next keep-alive took it back, and so on."""
    old = h.store.register(inst(), 10)
    assert old.lease is not None
    with raises(grpc.StatusCode.ALREADY_EXISTS) as info:
        h.store.register(inst(), 0)
    assert f"under lease {old.lease.lease_id}" in info.value.message
    assert h.store.keep_alive(old.lease.lease_id).lease_id == old.lease.lease_id
    h.clock.advance(11)
    h.store.expire()
    assert h.store.register(inst(), 0).instance.lease_id == 0  # once the lease is gone


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "ttl", "expected"), [
    ({"service": ""}, 0, "instance.service ''"),
    ({"service": "Orders"}, 0, "instance.service 'Orders'"),
    ({"instance_id": ""}, 0, "instance.instance_id ''"),
    ({"address": "localhost"}, 0, "instance.address 'localhost' is not HOST:PORT"),
    ({"address": "host:0"}, 0, "instance.address 'host:0' has port '0'"),
    ({"address": "host:99999"}, 0, "instance.address 'host:99999' has port '99999'"),
    ({"proto_services": ("shop..Orders",)}, 0, "instance.proto_services 'shop..Orders'"),
    ({"labels": (("-bad", "x"),)}, 0, "instance.labels key '-bad' is invalid"),
    ({"labels": (("ok", "a\nb"),)}, 0, "instance.labels[ok] value 'a\\nb'"),
    ({"owner": "x" * 257}, 0, ("instance.owner 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' "
                               "is 257 characters long: at most 256 are allowed")),
    ({"admin_address": "localhost"}, 0, "instance.admin_address 'localhost' is not HOST:PORT"),
    ({}, -1, "ttl_seconds -1 is out of range"),
    ({}, MAX_TTL_SECONDS + 1, f"ttl_seconds {MAX_TTL_SECONDS + 1} is out of range"),
    ({}, float("nan"), "ttl_seconds nan is out of range"),
])
def test_invalid_registration_names_field_and_value(
        h: Harness, change: dict[str, object], ttl: float, expected: str) -> None:
    with raises(grpc.StatusCode.INVALID_ARGUMENT) as err:
        h.store.register(replace(inst(), **change), ttl)  # type: ignore[arg-type]
    assert expected in err.value.message
    assert h.store.instances() == []
    assert h.events == []
    assert h.store.revision == 0


def test_max_ttl_is_accepted(h: Harness) -> None:
    lease = h.store.register(inst(), MAX_TTL_SECONDS).lease
    assert lease is not None
    assert lease.expires_at == START + MAX_TTL_SECONDS


def test_deregister_needs_the_owner(h: Harness) -> None:
    h.store.register(inst(owner="pod-a"), 0)
    h.store.register(inst("a2", address="10.0.0.2:8080"), 0)  # its owner is its address
    with raises(grpc.StatusCode.NOT_FOUND) as err:
        h.store.deregister("orders", "zz", "pod-a")
    assert err.value.message == "instance_id 'zz' of service 'orders' is not registered"
    with raises(grpc.StatusCode.INVALID_ARGUMENT) as err:
        h.store.deregister("orders", "a1", "")
    assert err.value.message.startswith(
        "owner is required to deregister instance_id 'a1' of service 'orders'")
    with raises(grpc.StatusCode.PERMISSION_DENIED) as err:
        h.store.deregister("orders", "a1", "pod-b")
    assert err.value.message == ("instance_id 'a1' of service 'orders' is not owned by 'pod-b': "
                                 "only the owner it was registered with may deregister it")
    with raises(grpc.StatusCode.PERMISSION_DENIED):
        h.store.deregister("orders", "a1", "10.0.0.1:8080")  # the address is not its owner
    with raises(grpc.StatusCode.INVALID_ARGUMENT) as err:
        h.store.deregister("", "a1", "pod-a")
    assert "service ''" in err.value.message
    assert [i.instance_id for i in h.store.instances()] == ["a1", "a2"]
    assert h.store.revision == 2
    assert h.store.deregister("orders", "a1", "pod-a") == 3
    assert h.store.deregister("orders", "a2", "10.0.0.2:8080") == 4
    assert h.store.instances() == []


# -- health ----------------------------------------------------------------------------------


def test_list_services_counts_serving(h: Harness) -> None:
    a1 = h.store.register(inst("a1", address="10.0.0.1:1"), 10)
    a2 = h.store.register(inst("a2", address="10.0.0.2:1",
                               protos=("shop.v1.Orders", "shop.v1.Admin")), 10)
    h.store.register(inst("a3", address="10.0.0.3:1"), 0)
    h.store.register(inst("p1", service="payments", address="10.0.0.4:1",
                          protos=("shop.v1.Payments",)), 0)
    h.store.set_health(a1.instance.lease_id, Health.SERVING)
    h.store.set_health(a2.instance.lease_id, Health.NOT_SERVING)
    h.store.set_checked_health(("orders", "a3"), Health.SERVING)

    assert h.store.list_services() == [
        ServiceSummary("orders", ("shop.v1.Admin", "shop.v1.Orders"), instances=3, serving=2),
        ServiceSummary("payments", ("shop.v1.Payments",), instances=1, serving=0),
    ]


def test_set_health_emits_only_on_change(h: Harness) -> None:
    reg = h.store.register(inst(), 10)
    lease_id = reg.instance.lease_id
    assert h.store.set_health(lease_id, Health.SERVING) == 2
    assert h.store.set_health(lease_id, Health.SERVING) == 2
    assert h.store.set_health(lease_id, Health.NOT_SERVING) == 3
    assert [(e.reason, e.instances[0].health, prev.health if prev else None)
            for e, prev in h.events[1:]] == [
        ("health SERVING", Health.SERVING, Health.UNKNOWN),
        ("health NOT_SERVING", Health.NOT_SERVING, Health.SERVING),
    ]
    assert h.store.get("orders", "a1") == replace(reg.instance, health=Health.NOT_SERVING)


def test_set_checked_health_ignores_leased_and_unknown_instances(h: Harness) -> None:
    h.store.register(inst(), 10)
    assert h.store.set_checked_health(("orders", "a1"), Health.SERVING) == 1
    assert h.store.set_checked_health(("orders", "nope"), Health.SERVING) == 1
    assert h.store.get("orders", "a1").health == Health.UNKNOWN  # type: ignore[union-attr]
    assert len(h.events) == 1


# -- watch filtering -------------------------------------------------------------------------


def test_filter_event_snapshot_keeps_only_matches(h: Harness) -> None:
    h.store.register(inst("a1"), 0)
    h.store.register(inst("p1", service="payments", protos=("shop.v1.Payments",)), 0)
    h.store.register(inst("p2", service="payments", protos=("shop.v1.Payments", "x.Admin")), 0)
    snap = h.store.snapshot()

    def ids(event: Event | None) -> list[str]:
        assert event is not None
        assert event.type == EventType.SNAPSHOT
        assert event.revision == 3
        return [i.instance_id for i in event.instances]

    assert ids(filter_event(snap, None, "", "")) == ["a1", "p1", "p2"]
    assert ids(filter_event(snap, None, "payments", "")) == ["p1", "p2"]
    assert ids(filter_event(snap, None, "", "x.Admin")) == ["p2"]
    assert ids(filter_event(snap, None, "orders", "x.Admin")) == []


def test_filter_event_upsert_and_delete(h: Harness) -> None:
    first = h.store.register(inst(owner="pod-a"), 0).instance
    h.store.register(inst(owner="pod-a", protos=("shop.v1.Other",)), 0)
    h.store.deregister("orders", "a1", "pod-a")
    (added, none), (moved, prev), (deleted, gone) = h.events

    assert filter_event(added, none, "orders", "shop.v1.Orders") is added
    assert filter_event(added, none, "payments", "") is None
    # The re-registration drops shop.v1.Orders: that watcher sees the old instance leave.
    left = filter_event(moved, prev, "", "shop.v1.Orders")
    assert left == Event(EventType.DELETE, 2, (first,), "no longer matches the watch filter")
    assert filter_event(moved, prev, "", "shop.v1.Other") is moved
    assert filter_event(moved, prev, "payments", "") is None
    assert filter_event(deleted, gone, "", "shop.v1.Other") is deleted
    assert filter_event(deleted, gone, "", "shop.v1.Orders") is None


# -- persistence -----------------------------------------------------------------------------


class MemoryPersistence:
    def __init__(self, *instances: Instance) -> None:
        self.rows = {i.key: i for i in instances}

    def load(self) -> list[Instance]:
        return list(self.rows.values())

    def save(self, instance: Instance) -> None:
        self.rows[instance.key] = instance

    def delete(self, key: tuple[str, str]) -> None:
        del self.rows[key]


def test_loaded_instances_start_unknown_and_registry_checked() -> None:
    stale = replace(inst(owner="ops"), health=Health.SERVING, lease_id=99)
    h = Harness(MemoryPersistence(stale))
    assert h.store.instances() == [replace(stale, health=Health.UNKNOWN, lease_id=0)]
    assert h.store.next_expiry() is None
    assert h.store.revision == 1
    assert h.events == []


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, list[SqlitePersistence]]]:
    opened: list[SqlitePersistence] = []
    yield str(tmp_path / "registry.db"), opened
    for p in opened:
        p.close()


def _open(db: tuple[str, list[SqlitePersistence]]) -> SqlitePersistence:
    path, opened = db
    p = SqlitePersistence(path)
    opened.append(p)
    return p


def test_checked_instances_survive_a_restart_leased_ones_do_not(
        db: tuple[str, list[SqlitePersistence]]) -> None:
    before = Harness(_open(db))
    checked = before.store.register(
        inst("a1", protos=("shop.v1.Orders", "grpc.health.v1.Health"),
             labels=(("version", "v2"), ("zone", "eu-1")), owner="ops"), 0).instance
    before.store.set_checked_health(checked.key, Health.SERVING)
    before.store.register(inst("b1", address="10.0.0.2:8080"), 30)

    after = Harness(_open(db))
    assert after.store.instances() == [checked]
    assert after.store.instances()[0].health == Health.UNKNOWN
    assert after.store.instances()[0].owner == "ops"
    assert after.store.revision == 1


ORDERS_METHODS = (
    Method("/shop.v1.Orders/Chat", client_streaming=True, server_streaming=True),
    Method("/shop.v1.Orders/Get", idempotency=Idempotency.NO_SIDE_EFFECTS),
    Method("/shop.v1.Orders/Follow", server_streaming=True),
    Method("/shop.v1.Orders/Upload", client_streaming=True, idempotency=Idempotency.IDEMPOTENT),
)


def test_memory_store_keeps_methods_with_their_levels(h: Harness) -> None:
    registered = h.store.register(replace(inst("a1"), methods=ORDERS_METHODS), 0).instance
    assert h.store.instances()[0].methods == ORDERS_METHODS
    assert h.store.resolve(service="orders")[0].methods == ORDERS_METHODS
    [(event, _)] = h.events
    assert event.instances == (registered,)
    assert h.store.snapshot().instances[0].methods == ORDERS_METHODS


def test_method_kinds_survive_a_restart(db: tuple[str, list[SqlitePersistence]]) -> None:
    before = Harness(_open(db))
    with_kinds = before.store.register(replace(inst("a1"), methods=ORDERS_METHODS), 0).instance
    without = before.store.register(inst("a2", address="10.0.0.2:8080"), 0).instance

    after = Harness(_open(db))
    assert after.store.instances() == [with_kinds, without]
    assert after.store.instances()[0].methods == ORDERS_METHODS
    assert [m.kind for m in after.store.instances()[0].methods] == [
        (True, True), (False, False), (False, True), (True, False)]
    assert [m.idempotency for m in after.store.instances()[0].methods] == [
        Idempotency.UNKNOWN, Idempotency.NO_SIDE_EFFECTS, Idempotency.UNKNOWN,
        Idempotency.IDEMPOTENT]
    assert after.store.instances()[1].methods == ()


def test_file_from_before_method_kinds_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE instances (service TEXT NOT NULL, instance_id TEXT NOT NULL, "
                 "address TEXT NOT NULL, proto_services TEXT NOT NULL, labels TEXT NOT NULL, "
                 "owner TEXT NOT NULL, PRIMARY KEY (service, instance_id))")
    conn.execute("INSERT INTO instances VALUES ('orders', 'a1', '10.0.0.1:8080', "
                 "'[\"shop.v1.Orders\"]', '{}', 'ops')")
    conn.commit()
    conn.close()
    p = SqlitePersistence(str(path))
    try:
        assert p.load() == [replace(inst("a1"), owner="ops")]
        p.save(replace(inst("a1"), owner="ops", methods=ORDERS_METHODS))
        assert p.load()[0].methods == ORDERS_METHODS
    finally:
        p.close()


def test_admin_address_is_kept_and_survives_a_restart(
        db: tuple[str, list[SqlitePersistence]]) -> None:
    before = Harness(_open(db))
    leased = before.store.register(replace(inst("a1"), admin_address="127.0.0.1:15000"),
                                   30).instance
    assert before.store.resolve(service="orders")[0].admin_address == "127.0.0.1:15000"
    assert Instance.from_proto(leased.to_proto()) == leased
    checked = before.store.register(
        replace(inst("a2", address="10.0.0.2:8080"), admin_address="10.0.0.2:15000"),
        0).instance
    assert before.store.snapshot().instances[1].admin_address == "10.0.0.2:15000"
    after = Harness(_open(db))
    assert after.store.instances() == [checked]


def test_file_from_before_admin_addresses_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE instances (service TEXT NOT NULL, instance_id TEXT NOT NULL, "
                 "address TEXT NOT NULL, proto_services TEXT NOT NULL, labels TEXT NOT NULL, "
                 "owner TEXT NOT NULL, methods TEXT NOT NULL DEFAULT '[]', "
                 "PRIMARY KEY (service, instance_id))")
    conn.execute("INSERT INTO instances VALUES ('orders', 'a1', '10.0.0.1:8080', "
                 "'[\"shop.v1.Orders\"]', '{}', 'ops', '[]')")
    conn.commit()
    conn.close()
    p = SqlitePersistence(str(path))
    try:
        assert p.load() == [replace(inst("a1"), owner="ops")]
        p.save(replace(inst("a1"), owner="ops", admin_address="10.0.0.1:15000"))
        assert p.load()[0].admin_address == "10.0.0.1:15000"
    finally:
        p.close()


def _stored_methods(db: tuple[str, list[SqlitePersistence]], methods: str) -> None:
    """Instance a1 in the file, with methods (JSON text) as its methods column."""
    _open(db).save(inst("a1"))
    conn = sqlite3.connect(db[0])
    conn.execute("UPDATE instances SET methods = ?", (methods,))
    conn.commit()
    conn.close()


def _get(**fields: object) -> str:
    return json.dumps([{"path": "/shop.v1.Orders/Get", "client_streaming": False,
                        "server_streaming": False, **fields}])


def test_methods_stored_before_levels_read_as_unknown(
        db: tuple[str, list[SqlitePersistence]]) -> None:
    _stored_methods(db, _get(server_streaming=True))  # the previous version's: no level
    p = _open(db)
    assert p.load()[0].methods == (Method("/shop.v1.Orders/Get", server_streaming=True),)
    p.save(replace(inst("a1"), methods=ORDERS_METHODS))  # registered again: levels kept
    assert _open(db).load()[0].methods == ORDERS_METHODS


def test_a_level_this_version_does_not_know_reads_as_unknown(
        db: tuple[str, list[SqlitePersistence]]) -> None:
    _stored_methods(db, _get(idempotency_level="SOMEDAY"))
    assert _open(db).load()[0].methods == (Method("/shop.v1.Orders/Get"),)


@pytest.mark.parametrize("methods", [
    '[{"path": 7, "client_streaming": false, "server_streaming": false}]',
    _get(idempotency_level=1),
    '[{"path": "/shop.v1.Orders/Get"}]',
    '"/shop.v1.Orders/Get"',
])
def test_malformed_methods_are_a_value_error(
        db: tuple[str, list[SqlitePersistence]], methods: str) -> None:
    _stored_methods(db, methods)
    with pytest.raises(ValueError, match="cannot read instances"):
        _open(db).load()


def test_deregister_and_lease_takeover_remove_from_file(
        db: tuple[str, list[SqlitePersistence]]) -> None:
    h = Harness(_open(db))
    h.store.register(inst("a1"), 0)
    h.store.register(inst("a2"), 0)
    h.store.register(inst("a3"), 0)
    h.store.deregister("orders", "a1", "10.0.0.1:8080")
    h.store.register(inst("a2"), 10)  # now leased: no longer the registry's to remember
    assert [i.instance_id for i in _open(db).load()] == ["a3"]
    assert Harness(_open(db)).store.revision == 1


def test_empty_database_starts_at_revision_zero(
        db: tuple[str, list[SqlitePersistence]]) -> None:
    assert _open(db).load() == []
    assert Harness(_open(db)).store.revision == 0


def test_sqlite_missing_directory_is_a_value_error(tmp_path: Path) -> None:
    path = str(tmp_path / "missing" / "registry.db")
    with pytest.raises(ValueError, match="cannot open") as err:
        SqlitePersistence(path)
    assert str(err.value).startswith(f"--store sqlite:{path}: ")


def test_sqlite_directory_as_path_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        SqlitePersistence(str(tmp_path))
    assert str(err.value).startswith(f"--store sqlite:{tmp_path}: ")


def test_sqlite_non_database_file_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a sqlite database\n" * 20)
    with pytest.raises(ValueError) as err:
        SqlitePersistence(str(path))
    assert str(err.value) == (f"--store sqlite:{path}: cannot use it as the registry database: "
                              "file is not a database")


def test_sqlite_foreign_table_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE instances (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="cannot use it as the registry database") as err:
        SqlitePersistence(str(path))
    assert str(path) in str(err.value)


def test_warmup_marks_snapshots_partial_then_sends_a_complete_one() -> None:
    clock = FakeClock(START)
    store = RegistryStore(clock, random.Random(SEED), warmup=10.0)
    events: list[Event] = []
    store.subscribe(lambda e, prev: events.append(e))
    store.register(inst("a1"), ttl_seconds=30)
    assert store.snapshot().partial is True
    assert store.next_expiry() == START + 10.0  # the warm-up ends before the lease
    clock.advance(9.9)
    assert store.finish_warmup() is False
    clock.advance(0.1)
    assert store.finish_warmup() is True
    assert store.finish_warmup() is False  # only once
    final = events[-1]
    assert final.type == EventType.SNAPSHOT and final.partial is False
    assert [i.instance_id for i in final.instances] == ["a1"]
    assert store.snapshot().partial is False
    assert store.next_expiry() == START + 30.0


def test_no_warmup_means_complete_snapshots_from_the_start(h: Harness) -> None:
    assert h.store.snapshot().partial is False
    assert h.store.finish_warmup() is False
    assert h.events == []
