"""Ejections: the outlier rule applied to pools (records in, Pool.ready out), and config
changes; Pool's panic mode."""
from __future__ import annotations

import grpc

from grpcmesh.balance.pool import Pool
from grpcmesh.clock import FakeClock
from grpcmesh.config import Duration, MeshConfig, ServiceConfig
from grpcmesh.config.policies import OutlierSettings
from grpcmesh.registry.model import Health, Instance
from grpcmesh.relay.record import APP, CLIENT, PROXY, CallRecord
from grpcmesh.resilience.ejection import Ejections

ADDRS = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]
RULE = OutlierSettings(consecutive_failures=3, interval=Duration(1000),
                       base_ejection=Duration(2000), max_ejection_percent=50)


def pool() -> Pool:
    p = Pool("echo")
    p.reset(Instance("echo", a, a, health=Health.SERVING) for a in ADDRS)
    return p


def config(rule: OutlierSettings | None = RULE) -> MeshConfig:
    return MeshConfig(services=(ServiceConfig("echo", outlier=rule),))


def record(endpoint: str, code: grpc.StatusCode, by: str = APP,
           service: str = "echo") -> CallRecord:
    return CallRecord("/e.E/M", "127.0.0.1:9", service, endpoint, code, by, "", 0.0, 0.0,
                      None, 0, 0, 1)


def setup() -> tuple[FakeClock, Pool, Ejections]:
    clock, p = FakeClock(0.0), pool()
    ejections = Ejections({"echo": p}.get, clock)
    ejections.configure(config())
    return clock, p, ejections


def addresses(p: Pool) -> list[str]:
    return [e.address for e in p.ready]


def test_failures_take_an_endpoint_out_of_ready_until_its_time_is_up() -> None:
    clock, p, ejections = setup()
    version = p.version
    for _ in range(3):
        ejections.observe(record(ADDRS[0], grpc.StatusCode.INTERNAL))
    assert addresses(p) == ADDRS[1:] and p.version > version  # (Target.ready recomputes)
    assert p.describe() == "3 known, 2 serving, 1 ejected"
    shown = ejections.describe("echo", ADDRS[0], wall_offset=1_700_000_000.0)
    assert shown["ejected"] and shown["ejected_until"] == "2023-11-14T22:13:22.000Z"
    assert shown["ejection_reason"].startswith("3 consecutive failures (the last: INTERNAL")
    clock.advance(2.0)
    ejections.tick()  # the timer returns it; no call is needed
    assert addresses(p) == ADDRS
    assert ejections.describe("echo", ADDRS[0], 0.0) == {
        "ejected": False, "ejected_until": None, "ejection_reason": None}


def test_calls_that_never_reached_the_endpoint_or_were_cancelled_do_not_count() -> None:
    _, p, ejections = setup()
    for _ in range(5):
        ejections.observe(record("", grpc.StatusCode.UNAVAILABLE, PROXY))  # no endpoint
        ejections.observe(record(ADDRS[0], grpc.StatusCode.CANCELLED, CLIENT))
        ejections.observe(record(ADDRS[1], grpc.StatusCode.NOT_FOUND))  # an app's answer
        ejections.observe(record(ADDRS[2], grpc.StatusCode.INTERNAL, service="other"))
    assert addresses(p) == ADDRS


def test_the_proxy_s_deadline_on_a_reached_endpoint_counts() -> None:
    _, p, ejections = setup()
    for _ in range(3):
        ejections.observe(record(ADDRS[2], grpc.StatusCode.DEADLINE_EXCEEDED, PROXY))
    assert addresses(p) == ADDRS[:2]


def test_a_config_change_keeps_ejections_only_if_the_rule_is_the_same() -> None:
    _, p, ejections = setup()
    for _ in range(3):
        ejections.observe(record(ADDRS[0], grpc.StatusCode.UNAVAILABLE))
    ejections.configure(config())  # the same settings: the ejection stands
    assert addresses(p) == ADDRS[1:]
    ejections.configure(config(OutlierSettings(consecutive_failures=4)))  # a new detector
    assert addresses(p) == ADDRS
    for _ in range(4):
        ejections.observe(record(ADDRS[1], grpc.StatusCode.UNAVAILABLE))
    assert addresses(p) == [ADDRS[0], ADDRS[2]]
    ejections.configure(config(None))  # the rule is gone: so are its ejections
    assert addresses(p) == ADDRS and not ejections.detectors


def test_a_pool_whose_every_endpoint_is_ejected_serves_them_all() -> None:
    p = pool()
    p.eject(frozenset(ADDRS))  # (the detector never does this; a pool stays safe anyway)
    assert addresses(p) == ADDRS  # panic mode, as Envoy's
    p.eject(frozenset(ADDRS[:1]))
    assert addresses(p) == ADDRS[1:]


def test_a_pool_made_anew_gets_the_ejections_at_the_next_tick() -> None:
    clock, p, _ = setup()
    pools = {"echo": p}
    ejections = Ejections(pools.get, clock)
    ejections.configure(config())
    for _ in range(3):
        ejections.observe(record(ADDRS[0], grpc.StatusCode.UNAVAILABLE))
    pools["echo"] = fresh = pool()  # (an external service's pools are rebuilt on a change)
    ejections.configure(config())
    assert addresses(fresh) == ADDRS[1:]
