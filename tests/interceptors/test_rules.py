"""The mesh config's rules as interceptors: pure objects, seeded randomness, a fake clock."""
from __future__ import annotations

import random

import grpc

from grpcmesh.clock import FakeClock
from grpcmesh.config import parse_text
from grpcmesh.config.schema import ServiceConfig
from grpcmesh.interceptors import Answer, CallView, Delay
from grpcmesh.interceptors.chain import Chain
from grpcmesh.interceptors.rules import inbound_rules, outbound_rules

CONFIG = """
services:
  orders:
    timeout: 2s
    max_timeout: 30s
    subsets:
      stable: {version: v1}
      canary: {version: v2}
    routes:
      - match: {method: /shop.v1.Orders/Create, metadata: {x-canary: "1"}}
        to: {canary: 100}
      - match: {method: /shop.v1.Orders/*}
        to: {stable: 90, canary: 10}
        timeout: 500ms
    faults:
      - match: {method: /shop.v1.Orders/Get}
        abort: {code: UNAVAILABLE, percent: 10}
        delay: {duration: 100ms, percent: 5}
    rate_limit: {per_second: 100, burst: 20}
"""


def orders() -> ServiceConfig:
    service = parse_text(CONFIG).service("orders")
    assert service is not None
    return service


def view(method: str, metadata: list[tuple[str, str]] | None = None,
         timeout: float | None = None) -> CallView:
    return CallView(method, [(":path", method), *(metadata or [])], timeout, "127.0.0.1:9",
                    "orders", "outbound")


def test_the_outbound_chain_is_faults_then_route_split_then_timeout() -> None:
    chain = Chain(outbound_rules(orders(), random.Random(1)))
    assert chain.names == ("services.orders.faults delay", "services.orders.faults abort",
                           "services.orders.routes", "services.orders.timeout")
    assert [type(i).__name__ for i in inbound_rules(orders(), FakeClock())] == ["RateLimit_"]


def test_a_90_10_split_lands_within_3_points_of_its_weights() -> None:
    chain = Chain(outbound_rules(orders(), random.Random(7)))
    canary = 0
    for _ in range(2000):
        call = view("/shop.v1.Orders/List")
        assert chain.request(call) == (None, 4)
        assert call.subset is not None
        canary += call.subset.name == "canary"
    assert abs(canary / 2000 - 0.10) <= 0.03


def test_a_metadata_match_sends_every_matching_call_to_its_subset_and_no_other() -> None:
    chain = Chain(outbound_rules(orders(), random.Random(3)))
    for _ in range(200):
        matching = view("/shop.v1.Orders/Create", [("x-canary", "1")])
        chain.request(matching)
        assert matching.subset is not None and matching.subset.name == "canary"
    stable = 0
    for _ in range(200):
        other = view("/shop.v1.Orders/Create", [("x-canary", "0")])  # the second route
        chain.request(other)
        assert other.subset is not None
        stable += other.subset.name == "stable"
    assert stable > 150
    unrouted = view("/shop.v1.Payments/Pay")  # no route matches: every instance
    chain.request(unrouted)
    assert unrouted.subset is None and unrouted.route is None


def test_timeouts_default_cap_and_per_route_override() -> None:
    chain = Chain(outbound_rules(orders(), random.Random(1)))
    call = view("/other.v1.S/M")  # no route: the service's 2s for a call without a deadline
    chain.request(call)
    assert call.timeout == 2.0
    call = view("/other.v1.S/M", timeout=60.0)  # cut to max_timeout
    chain.request(call)
    assert call.timeout == 30.0
    call = view("/shop.v1.Orders/List")  # the route's own 500ms
    chain.request(call)
    assert call.timeout == 0.5
    call = view("/shop.v1.Orders/List", timeout=10.0)  # a caller's shorter deadline stays
    chain.request(call)
    assert call.timeout == 10.0


def test_fault_percentages_hold_within_tolerance_and_name_the_rule() -> None:
    chain = Chain(outbound_rules(orders(), random.Random(11)))
    aborted = delayed = 0
    for _ in range(10_000):
        call = view("/shop.v1.Orders/Get")
        outcome, index = chain.request(call)
        if isinstance(outcome, Delay):
            delayed += 1
            assert outcome.seconds == 0.1
            outcome, index = chain.request(call, index + 1)  # as the relay goes on after it
        if isinstance(outcome, Answer):
            aborted += 1
            assert outcome.code == grpc.StatusCode.UNAVAILABLE
            assert outcome.message == "fault injected by services.orders.faults[0]"
    assert 900 <= aborted <= 1100 and 400 <= delayed <= 600
    untouched = view("/shop.v1.Orders/List")
    assert chain.request(untouched) == (None, 4)


def test_the_rate_limit_lets_a_burst_through_then_its_rate() -> None:
    clock = FakeClock()
    chain = Chain(inbound_rules(orders(), clock))
    passed = sum(chain.request(view("/shop.v1.Orders/Get"))[0] is None for _ in range(50))
    assert passed == 20  # the burst
    refused, _ = chain.request(view("/shop.v1.Orders/Get"))
    assert isinstance(refused, Answer) and refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.message == "rate limit of orders (100/s, burst 20) exceeded"
    clock.advance(0.1)  # 10 more at 100/s
    assert sum(chain.request(view("/shop.v1.Orders/Get"))[0] is None for _ in range(50)) == 10


def test_faults_turned_off_cost_no_interceptor() -> None:
    service = parse_text("""
services:
  orders:
    faults:
      - match: {method: /shop.v1.Orders/Get}
        abort: {code: UNAVAILABLE, percent: 0}
        delay: {duration: 1s, percent: 0}
""").service("orders")
    assert service is not None
    assert outbound_rules(service, random.Random(1)) == []


def test_a_percentile_hedge_learns_from_app_answers_and_deadlines_not_cancellations() -> None:
    from grpcmesh.interceptors.kept import Kept
    from grpcmesh.relay.record import APP, CLIENT, PROXY, CallRecord

    clock = FakeClock()
    kept = Kept(clock)
    service = parse_text("services:\n  svc:\n    hedge: {delay: p50, methods: all}\n",
                         "m.yaml").service("svc")
    assert service is not None
    rules = outbound_rules(service, random.Random(1), clock, kept=kept)
    chain = Chain(rules)

    def call(by: str, reason: str, endpoint: str, duration: float) -> None:
        view = CallView("/pkg.S/M", [], None, "c:1", "svc", "outbound")
        assert chain.request(view, 0)[0] is None and view.hedge is not None
        chain.end(view, CallRecord("/pkg.S/M", "c:1", "svc", endpoint, grpc.StatusCode.OK, by,
                                   reason, 0.0, duration, None, 0, 0, 1))

    call(APP, "", "a:1", 0.010)
    call(PROXY, "deadline", "a:1", 2.0)  # cut by the deadline after it reached an app
    call(PROXY, "deadline", "", 2.0)  # never reached one: says nothing of latency
    call(CLIENT, "", "a:1", 0.001)  # the client left
    call(PROXY, "no_healthy_instance", "", 0.0)
    window = kept.windows["svc"]
    assert sorted(window._samples) == [0.010, 2.0]
