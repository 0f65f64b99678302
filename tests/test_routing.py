"""RouteTable, Pool, RoundRobin, Backoff and registry address parsing: pure objects, no sockets."""
from __future__ import annotations

import random
from dataclasses import replace

import grpc
import pytest

from grpcmesh.balance.endpoint import Endpoint
from grpcmesh.balance.picker import RoundRobin
from grpcmesh.balance.pool import Pool
from grpcmesh.registry.client import Backoff, parse_registry_addresses
from grpcmesh.registry.model import Event, EventType, Health, Instance
from grpcmesh.routing import RouteError, RouteTable, Target, service_of

ORDERS = "shop.v1.Orders"
GET = f"/{ORDERS}/Get"
SERVING = Health.SERVING


def inst(instance_id: str = "a1", service: str = "orders", address: str | None = None,
         protos: tuple[str, ...] = (ORDERS,), health: Health = SERVING) -> Instance:
    return Instance(service=service, instance_id=instance_id,
                    address=address or f"10.0.0.{instance_id[-1]}:8080",
                    proto_services=protos, health=health)


def snapshot(*instances: Instance, revision: int = 1) -> Event:
    return Event(EventType.SNAPSHOT, revision, instances)


def upsert(instance: Instance, revision: int = 2) -> Event:
    return Event(EventType.UPSERT, revision, (instance,))


def delete(instance: Instance, revision: int = 3) -> Event:
    return Event(EventType.DELETE, revision, (instance,))


def ids(endpoints: object) -> list[str]:
    return [e.instance.instance_id for e in endpoints]  # type: ignore[attr-defined]


def route_error(table: RouteTable, method: str, override: str | None = None) -> RouteError:
    with pytest.raises(RouteError) as info:
        table.route(method, override)
    return info.value


class Removed:
    """Records the endpoints a pool or table says it dropped."""

    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def __call__(self, endpoint: Endpoint) -> None:
        self.endpoints.append(endpoint)


# -- RouteTable.apply ---------------------------------------------------------------------------


def client(instance_id: str = "c1", service: str = "orders") -> Instance:
    """A client-only sidecar's announcement."""
    return replace(inst(instance_id, service, protos=()),
                   labels=(("grpcmesh.io/role", "client"),))


def test_client_only_sidecars_are_never_endpoints() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1"), client("c1"), client("c2", service="web")))
    assert ids(table.pools["orders"].endpoints.values()) == ["a1"]
    assert "web" not in table.pools
    assert route_error(table, GET, "web").code == grpc.StatusCode.UNIMPLEMENTED
    table.apply(upsert(client("c3")))
    table.apply(upsert(replace(inst("a2"), labels=(("grpcmesh.io/role", "client"),))))
    assert ids(table.pools["orders"].endpoints.values()) == ["a1"]
    assert table.revision == 2
    table.apply(delete(client("c3")))
    assert ids(table.pools["orders"].endpoints.values()) == ["a1"]



def test_snapshot_fills_pools_and_marks_synced() -> None:
    table = RouteTable()
    assert not table.synced
    table.apply(snapshot(inst("a1"), inst("a2"), inst("b1", service="billing",
                                                      protos=("shop.v1.Billing",)),
                         revision=7))
    assert table.synced
    assert table.revision == 7
    assert sorted(table.pools) == ["billing", "orders"]
    assert ids(table.pools["orders"].ready) == ["a1", "a2"]
    assert ids(table.pools["billing"].ready) == ["b1"]


def test_upsert_adds_and_updates_and_delete_removes() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1")))
    table.apply(upsert(inst("a2"), revision=2))
    assert ids(table.pools["orders"].ready) == ["a1", "a2"]
    table.apply(upsert(inst("a2", health=Health.NOT_SERVING), revision=3))
    assert ids(table.pools["orders"].ready) == ["a1"]
    assert sorted(table.pools["orders"].endpoints) == ["a1", "a2"]
    table.apply(delete(inst("a1"), revision=4))
    assert sorted(table.pools["orders"].endpoints) == ["a2"]
    assert table.revision == 4


def test_delete_of_unknown_service_is_ignored() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1")))
    table.apply(delete(inst("x1", service="ghost"), revision=5))
    assert sorted(table.pools) == ["orders"]
    assert table.revision == 5


def test_snapshot_replaces_what_was_known() -> None:
    removed = Removed()
    table = RouteTable(on_endpoint_removed=removed)
    table.apply(snapshot(inst("a1"), inst("a2"), inst("b1", service="billing")))
    a1 = table.pools["orders"].endpoints["a1"]
    table.apply(snapshot(inst("a1"), inst("a3"), revision=9))
    assert sorted(table.pools["orders"].endpoints) == ["a1", "a3"]
    assert table.pools["orders"].endpoints["a1"] is a1
    # A service missing from the snapshot keeps its (now empty) pool: it stays routable.
    assert table.pools["billing"].endpoints == {}
    assert sorted(ids(removed.endpoints)) == ["a2", "b1"]


def test_partial_snapshot_adds_and_updates_but_removes_nothing() -> None:
    removed = Removed()
    table = RouteTable(on_endpoint_removed=removed)
    table.apply(snapshot(inst("a1"), inst("a2")))
    table.apply(Event(EventType.SNAPSHOT, 2, (inst("a2", health=Health.NOT_SERVING),
                                              inst("a3")), partial=True))
    assert table.synced
    assert sorted(table.pools["orders"].endpoints) == ["a1", "a2", "a3"]
    assert ids(table.pools["orders"].ready) == ["a1", "a3"]
    assert removed.endpoints == []
    table.apply(snapshot(inst("a3"), revision=3))  # the full picture removes what is gone
    assert sorted(table.pools["orders"].endpoints) == ["a3"]


def test_unavailable_before_first_snapshot() -> None:
    table = RouteTable()
    err = route_error(table, GET)
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert ORDERS in err.message
    err = route_error(table, GET, "orders")
    assert err.code == grpc.StatusCode.UNAVAILABLE
    # An upsert that arrives before the snapshot does not make the table synced.
    table.apply(upsert(inst("a1")))
    assert route_error(table, GET).code == grpc.StatusCode.UNAVAILABLE
    table.apply(snapshot(inst("a1")))
    assert ids(table.route(GET).ready()) == ["a1"]


# -- RouteTable.route ---------------------------------------------------------------------------


def test_route_by_method_path_to_the_pool_serving_the_proto_service() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1"), inst("b1", service="billing", protos=("shop.v1.Billing",))))
    target = table.route(GET)
    assert isinstance(target, Target)
    assert target.name == ORDERS
    assert [p.service for p in target.pools] == ["orders"]
    assert ids(target.ready()) == ["a1"]
    assert table.route(f"/{ORDERS}/List") is target
    billing = table.route("/shop.v1.Billing/Charge")
    assert [p.service for p in billing.pools] == ["billing"]


def test_route_with_service_override() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1"), inst("b1", service="billing", protos=("shop.v1.Billing",))))
    target = table.route(GET, "billing")
    assert target.name == "billing"
    assert ids(target.ready()) == ["b1"]
    assert table.route("/anything.Else/Method", "billing") is target
    # The override is not checked against the path at all.
    assert ids(table.route("not even a path", "orders").ready()) == ["a1"]


def test_proto_service_served_by_two_mesh_services_routes_to_both_pools() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1"), inst("z1", service="orders-canary")))
    target = table.route(GET)
    assert [p.service for p in target.pools] == ["orders", "orders-canary"]
    assert ids(target.ready()) == ["a1", "z1"]
    assert ids(target.pick() for _ in range(4)) == ["a1", "z1", "a1", "z1"]


def test_second_service_learned_by_upsert_joins_the_target() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1")))
    assert ids(table.route(GET).ready()) == ["a1"]
    table.apply(upsert(inst("z1", service="orders-canary")))
    target = table.route(GET)
    assert [p.service for p in target.pools] == ["orders", "orders-canary"]
    assert ids(target.ready()) == ["a1", "z1"]


def test_unknown_proto_service_is_unimplemented() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1")))
    err = route_error(table, "/shop.v1.Nope/Get")
    assert err.code == grpc.StatusCode.UNIMPLEMENTED
    assert "shop.v1.Nope" in err.message


def test_unknown_override_service_is_unimplemented() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1")))
    err = route_error(table, GET, "ghost")
    assert err.code == grpc.StatusCode.UNIMPLEMENTED
    assert "ghost" in err.message
    assert "grpcmesh-service" in err.message


@pytest.mark.parametrize("method", ["", "/a", "a/b/c", "//x", "/a/", "/a/b/c", "a"])
def test_malformed_path_is_unimplemented(method: str) -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1")))
    err = route_error(table, method)
    assert err.code == grpc.StatusCode.UNIMPLEMENTED
    assert repr(method) in err.message
    with pytest.raises(RouteError):
        service_of(method)


def test_service_of() -> None:
    assert service_of("/shop.v1.Orders/Get") == "shop.v1.Orders"


def test_service_whose_last_instance_is_deleted_stays_routable() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1")))
    table.apply(delete(inst("a1")))
    target = table.route(GET)
    assert list(target.ready()) == []
    assert target.pick() is None
    assert table.route(GET, "orders").pick() is None
    assert "orders: 0 known, 0 serving" in target.describe()
    # It comes back into the same target.
    table.apply(upsert(inst("a2"), revision=4))
    assert ids(table.route(GET).ready()) == ["a2"]


def test_service_missing_from_a_later_snapshot_stays_routable() -> None:
    table = RouteTable()
    table.apply(snapshot(inst("a1")))
    table.apply(snapshot(revision=2))
    assert table.route(GET).pick() is None
    assert table.route(GET, "orders").pick() is None


def test_route_table_uses_the_picker_factory_per_target() -> None:
    made: list[tuple[str, RoundRobin]] = []

    def factory(service: str) -> RoundRobin:
        made.append((service, RoundRobin()))
        return made[-1][1]

    table = RouteTable(picker_factory=factory)
    table.apply(snapshot(inst("a1")))
    assert table.route(GET).picker is made[0][1]
    assert table.route(GET, "orders").picker is made[1][1]
    assert table.route(GET).picker is made[0][1]  # cached per target
    assert [service for service, _ in made] == ["orders", "orders"]


# -- Pool ---------------------------------------------------------------------------------------


def test_pool_keeps_endpoint_identity_and_state_across_upserts() -> None:
    removed = Removed()
    pool = Pool("orders", removed)
    pool.upsert(inst("a1", address="10.0.0.1:80"))
    endpoint = pool.endpoints["a1"]
    endpoint.in_flight, endpoint.calls, endpoint.failures = 2, 10, 1
    updated = inst("a1", address="10.0.0.1:80", health=Health.NOT_SERVING)
    pool.upsert(updated)
    assert pool.endpoints["a1"] is endpoint
    assert endpoint.instance is updated
    assert (endpoint.in_flight, endpoint.calls, endpoint.failures) == (2, 10, 1)
    assert pool.ready == ()
    pool.upsert(inst("a1", address="10.0.0.1:80"))
    assert pool.ready == (endpoint,)
    assert removed.endpoints == []


def test_pool_makes_a_new_endpoint_when_the_address_changes() -> None:
    removed = Removed()
    pool = Pool("orders", removed)
    pool.upsert(inst("a1", address="10.0.0.1:80"))
    old = pool.endpoints["a1"]
    old.calls = 5
    pool.upsert(inst("a1", address="10.0.0.9:80"))
    new = pool.endpoints["a1"]
    assert new is not old
    assert (new.address, new.calls, new.in_flight) == ("10.0.0.9:80", 0, 0)
    assert removed.endpoints == [old]
    assert pool.ready == (new,)


def test_pool_remove_calls_on_removed_once() -> None:
    removed = Removed()
    pool = Pool("orders", removed)
    pool.upsert(inst("a1"))
    endpoint = pool.endpoints["a1"]
    pool.remove("a1")
    pool.remove("a1")
    pool.remove("never")
    assert removed.endpoints == [endpoint]
    assert pool.endpoints == {} and pool.ready == ()


def test_only_serving_endpoints_are_ready() -> None:
    pool = Pool("orders")
    pool.reset([inst("a3"), inst("a1", health=Health.UNKNOWN),
                inst("a2", health=Health.NOT_SERVING), inst("a4")])
    assert ids(pool.ready) == ["a3", "a4"]
    assert all(e.healthy for e in pool.ready)
    assert pool.describe() == "4 known, 2 serving"


def test_pool_reset_removes_missing_keeps_present() -> None:
    removed = Removed()
    pool = Pool("orders", removed)
    pool.reset([inst("a1"), inst("a2"), inst("a3")])
    a1, a2, a3 = (pool.endpoints[k] for k in ("a1", "a2", "a3"))
    pool.reset([inst("a3"), inst("a1"), inst("a4")])
    assert sorted(pool.endpoints) == ["a1", "a3", "a4"]
    assert pool.endpoints["a1"] is a1 and pool.endpoints["a3"] is a3
    assert removed.endpoints == [a2]
    assert ids(pool.ready) == ["a1", "a3", "a4"]
    pool.reset([])
    assert pool.endpoints == {} and pool.ready == ()
    assert sorted(ids(removed.endpoints)) == ["a1", "a2", "a3", "a4"]


def test_ready_is_in_stable_instance_id_order() -> None:
    pool = Pool("orders")
    for name in ("a3", "a1", "a2"):
        pool.upsert(inst(name))
    assert ids(pool.ready) == ["a1", "a2", "a3"]


# -- RoundRobin ---------------------------------------------------------------------------------


def endpoints(*names: str) -> list[Endpoint]:
    return [Endpoint(inst(n)) for n in names]


def test_round_robin_cycles_in_order() -> None:
    ready = endpoints("a1", "a2", "a3")
    rr = RoundRobin()
    assert ids(rr.pick(ready) for _ in range(7)) == ["a1", "a2", "a3", "a1", "a2", "a3", "a1"]


def test_round_robin_skips_excluded() -> None:
    a1, a2, a3 = ready = endpoints("a1", "a2", "a3")
    rr = RoundRobin()
    assert rr.pick(ready, exclude={a1}) is a2
    assert rr.pick(ready, exclude={a3}) is a1
    assert rr.pick(ready, exclude=[a2, a3]) is a1
    assert rr.pick(ready) is a2


def test_round_robin_returns_none_when_all_excluded_or_empty() -> None:
    ready = endpoints("a1", "a2")
    rr = RoundRobin()
    assert rr.pick(ready, exclude=set(ready)) is None
    assert rr.pick([]) is None
    assert rr.pick([], exclude=set(ready)) is None
    assert rr.pick(ready) is ready[0]


def test_round_robin_survives_the_ready_set_shrinking() -> None:
    ready = endpoints("a1", "a2", "a3")
    rr = RoundRobin()
    rr.pick(ready)
    rr.pick(ready)
    picked = rr.pick(ready[:1])
    assert picked is ready[0]


# -- Backoff ------------------------------------------------------------------------------------


def ceilings(initial: float, maximum: float, n: int) -> list[float]:
    return [min(maximum, initial * 2 ** k) for k in range(n)]


def test_backoff_grows_is_capped_and_jittered_within_half_to_full_ceiling() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(10)]
    for delay, ceiling in zip(delays, ceilings(0.1, 2.0, 10)):
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 2.0
    assert delays[-1] >= 1.0  # capped, but not shrinking
    assert delays[0] < delays[4] < delays[6]  # disjoint ranges, so strictly growing


def test_backoff_is_deterministic_with_a_seeded_rng() -> None:
    a = Backoff(rng=random.Random(42))
    b = Backoff(rng=random.Random(42))
    assert [a.next() for _ in range(6)] == [b.next() for _ in range(6)]


def test_backoff_is_jittered() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0, rng=random.Random(3))
    delays = {backoff.next() for _ in range(20)}
    assert len(delays) == 20
    assert all(0.5 <= d <= 1.0 for d in delays)


def test_backoff_reset_starts_again_from_initial() -> None:
    backoff = Backoff(initial=0.1, maximum=5.0, rng=random.Random(5))
    for _ in range(8):
        backoff.next()
    backoff.reset()
    assert 0.05 <= backoff.next() <= 0.1
    assert 0.1 <= backoff.next() <= 0.2


def test_backoff_stays_capped_after_many_attempts() -> None:
    backoff = Backoff(initial=0.1, maximum=5.0, rng=random.Random(0))
    delays = [backoff.next() for _ in range(2000)]
    assert all(2.5 <= d <= 5.0 for d in delays[10:])


# -- parse_registry_addresses -------------------------------------------------------------------


def test_parse_registry_addresses_splits_and_trims() -> None:
    assert parse_registry_addresses("127.0.0.1:7700") == ["127.0.0.1:7700"]
    assert parse_registry_addresses(" r1:7700 , r2:7700,") == ["r1:7700", "r2:7700"]


@pytest.mark.parametrize(("text", "message"), [
    ("", "--registry is empty"),
    (" , ,", "--registry is empty"),
    ("nonsense", "--registry address 'nonsense' is not HOST:PORT"),
    ("127.0.0.1:7700,bad", "--registry address 'bad' is not HOST:PORT"),
    ("127.0.0.1:0", "--registry address '127.0.0.1:0' has port '0': expected 1-65535"),
    ("127.0.0.1:99999", "has port '99999'"),
    ("bad host!:1", "has an invalid host 'bad host!'"),
])
def test_parse_registry_addresses_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_registry_addresses(text)
    assert message in str(info.value)


def test_proto_target_keeps_only_instances_that_serve_the_proto() -> None:
    """A rolling upgrade: v2 adds shop.v1.Refunds, v1 does not serve it."""
    table = RouteTable()
    v1 = inst("v1", protos=("shop.v1.Orders",))
    v2 = inst("v2", address="10.0.0.2:80", protos=("shop.v1.Orders", "shop.v1.Refunds"))
    table.apply(snapshot(v1, v2))
    refunds = table.route("/shop.v1.Refunds/Create")
    assert [e.instance.instance_id for e in refunds.ready()] == ["v2"]
    assert [e.instance.instance_id for e in table.route(GET).ready()] == ["v1", "v2"]
    # ... and follows changes: v1 upgraded to serve Refunds too.
    table.apply(Event(EventType.UPSERT, 2, (replace(v1, proto_services=(
        "shop.v1.Orders", "shop.v1.Refunds")),)))
    assert [e.instance.instance_id for e in refunds.ready()] == ["v1", "v2"]
    # Naming the mesh service still reaches every instance of it.
    assert len(table.route("/shop.v1.Refunds/Create", "orders").ready()) == 2
