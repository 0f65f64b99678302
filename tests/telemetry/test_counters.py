"""CallCounters from CallRecords (pure), and the collector's families over fakes rendered and
parsed back with prometheus-client's parser."""
from __future__ import annotations

import grpc
from prometheus_client.parser import text_string_to_metric_families

from grpcmesh.balance.pool import Pool
from grpcmesh.clock import FakeClock
from grpcmesh.registry.model import Health, Instance
from grpcmesh.relay.record import APP, PROXY, CallRecord
from grpcmesh.relay.relay import Relay
from grpcmesh.routing import Target
from grpcmesh.telemetry.collector import MeshCollector, MeshView
from grpcmesh.telemetry.counters import (
    BUCKETS,
    CODE_INDEX,
    CallCounters,
    cumulative,
    reason_label,
)
from grpcmesh.telemetry.exposition import Exposition

_SC = grpc.StatusCode
KNOWN = {"/e.v1.E/Get"}


def record(method: str = "/e.v1.E/Get", code: grpc.StatusCode = _SC.OK, *,
           service: str = "echo", endpoint: str = "10.0.0.1:80", duration: float = 0.003,
           by: str = APP, reason: str = "") -> CallRecord:
    return CallRecord(method, "127.0.0.1:9", service, endpoint, code, by, reason, 0.0,
                      duration, None, 0, 0, 1)


def counters(direction: str = "outbound", service: str = "") -> CallCounters:
    return CallCounters(direction, lambda path: True if path in KNOWN else None, service)


def test_counts_by_service_method_and_code() -> None:
    c = counters()
    for _ in range(3):
        c.observe(record())
    c.observe(record(code=_SC.UNAVAILABLE))
    [(service, method, series)] = list(c.series())
    assert (service, method) == ("echo", "e.v1.E/Get")
    assert series.codes[CODE_INDEX[_SC.OK]] == 3
    assert series.codes[CODE_INDEX[_SC.UNAVAILABLE]] == 1
    assert sum(series.codes) == 4


def test_made_up_methods_share_one_unknown_series_and_are_not_kept() -> None:
    c = counters()
    for i in range(100):
        c.observe(record(f"/e.v1.E/Made{i}", _SC.UNIMPLEMENTED))
    assert [(s, m, sum(x.codes)) for s, m, x in c.series()] == [("echo", "unknown", 100)]
    assert set(c.by_service["echo"]) == {"unknown"}  # no key per made-up path


def test_durations_fall_in_the_bucket_at_or_above_them() -> None:
    c = counters()
    for duration in (0.0005, 0.001, 0.002, 30.0, 31.0):
        c.observe(record(duration=duration))
    [(_, _, series)] = list(c.series())
    assert len(series.buckets) == len(BUCKETS) + 1
    assert series.buckets[0] == 2  # <= 1 ms (le is inclusive)
    assert series.buckets[1] == 1  # <= 2.5 ms
    assert series.buckets[len(BUCKETS) - 1] == 1  # <= 30 s
    assert series.buckets[-1] == 1  # +Inf
    assert cumulative(series.buckets)[-1] == 5
    assert abs(series.total_seconds - 61.0035) < 1e-9


def test_endpoints_proxy_answers_and_their_bounded_reasons() -> None:
    c = counters()
    c.observe(record(endpoint="10.0.0.1:80"))
    c.observe(record(endpoint="10.0.0.2:80", code=_SC.UNAVAILABLE))
    c.observe(record(service="", endpoint="", code=_SC.UNIMPLEMENTED, by=PROXY,
                     reason="no_route"))
    c.observe(record(endpoint="", code=_SC.PERMISSION_DENIED, by=PROXY,
                     reason="interceptor authz"))
    assert c.endpoints is not None
    assert {a: sum(v) for a, v in c.endpoints["echo"].items()} == {"10.0.0.1:80": 1,
                                                                    "10.0.0.2:80": 1}
    assert c.proxy_answers == {("unknown", "no_route"): 1, ("echo", "interceptor"): 1}
    c.prune({("echo", "10.0.0.1:80"), ("other", "10.0.0.2:80")})
    assert list(c.endpoints["echo"]) == ["10.0.0.1:80"]


def test_inbound_counts_under_its_own_service_and_not_by_endpoint() -> None:
    c = counters("inbound", service="echo")
    c.observe(record(service="the local app at 127.0.0.1:1"))
    assert [(s, m) for s, m, _ in c.series()] == [("echo", "e.v1.E/Get")]
    assert c.endpoints is None


def test_the_collector_renders_what_the_parser_reads_back() -> None:
    clock = FakeClock(100.0)
    pool = Pool("echo")
    pool.upsert(Instance("echo", "a", "10.0.0.1:80", health=Health.SERVING))
    endpoint = next(iter(pool.endpoints.values()))
    endpoint.start(99.0).finish(99.02, _SC.OK)
    relay = Relay(lambda path, override: Target("echo", (pool,)), clock=clock)
    relay.retries["echo", "UNAVAILABLE"] += 2
    relay.hedges["echo"] += 1
    c = counters()
    relay.observers.append(c.observe)
    for _ in range(2):
        c.observe(record())
    c.observe(record(code=_SC.INTERNAL, duration=2.0))
    view = MeshView([(relay, c)], lambda: {"echo": pool}, lambda: 7, lambda: True, clock)
    text = Exposition(MeshCollector(view)).render().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    base = (("direction", "outbound"), ("method", "e.v1.E/Get"), ("service", "echo"))
    assert samples["grpcmesh_calls_total", tuple(sorted((*base, ("code", "OK"))))] == 2
    assert samples["grpcmesh_calls_total", tuple(sorted((*base, ("code", "INTERNAL"))))] == 1
    assert samples["grpcmesh_call_duration_seconds_count", base] == 3
    assert samples["grpcmesh_call_duration_seconds_bucket",
                   tuple(sorted((*base, ("le", "0.005"))))] == 2
    assert samples["grpcmesh_call_duration_seconds_bucket",
                   tuple(sorted((*base, ("le", "2.5"))))] == 3
    ep = (("endpoint", "10.0.0.1:80"), ("service", "echo"))
    assert samples["grpcmesh_endpoint_calls_total", (("code", "OK"), *ep)] == 2
    estimate = endpoint.rtt.get(100.0)  # (the peak-EWMA read at the scrape's time)
    assert estimate is not None and 0.01 < estimate <= 0.02
    assert samples["grpcmesh_endpoint_latency_estimate_seconds", ep] == estimate
    assert samples["grpcmesh_endpoint_cost", ep] == endpoint.cost(100.0) == estimate
    assert samples["grpcmesh_endpoint_ejected", ep] == 0
    assert samples["grpcmesh_retries_total", (("reason", "UNAVAILABLE"), ("service", "echo"))
                   ] == 2
    assert samples["grpcmesh_hedges_total", (("service", "echo"),)] == 1
    assert samples["grpcmesh_config_version", ()] == 7
    assert samples["grpcmesh_registry_connected", ()] == 1


def test_interceptor_reasons_are_bounded() -> None:
    assert reason_label("no_route") == "no_route"
    assert reason_label("interceptor services.my.svc.faults abort") == "fault"
    assert reason_label("interceptor services.echo.rate_limit") == "rate_limited"
    assert reason_label("interceptor services.echo.routes") == "interceptor"
    assert reason_label("interceptor MyAuthz") == "interceptor"


def test_counts_without_a_direction_label_are_summed_over_both_relays() -> None:
    clock = FakeClock(0.0)
    pool = Pool("echo")
    outbound = Relay(lambda path, override: Target("echo", (pool,)), clock=clock)
    inbound = Relay(lambda path, override: Target("echo", (pool,)), clock=clock)
    outbound.retries["echo", "UNAVAILABLE"] += 2
    inbound.retries["the local app at 127.0.0.1:1", "UNAVAILABLE"] += 1  # (its call.service)
    out, into = counters(), counters("inbound", service="echo")
    out.observe(record(code=_SC.UNAVAILABLE, by=PROXY, reason="no_healthy_instance"))
    into.observe(record(code=_SC.UNAVAILABLE, by=PROXY, reason="no_healthy_instance"))
    view = MeshView([(outbound, out), (inbound, into)], dict, lambda: 0, lambda: False, clock)
    text = Exposition(MeshCollector(view)).render().decode()
    samples = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text)
               for s in f.samples if s.name in ("grpcmesh_retries_total",
                                                "grpcmesh_proxy_answers_total")]
    assert samples == [
        ("grpcmesh_proxy_answers_total", {"service": "echo", "reason": "no_healthy_instance"}, 2),
        ("grpcmesh_retries_total", {"service": "echo", "reason": "UNAVAILABLE"}, 3)]
