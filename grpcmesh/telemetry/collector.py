"""A prometheus-client custom collector over what the sidecar keeps anyway: the relays' call
counts (counters.py), their retry and hedge counts, the pools' endpoints (peak-EWMA estimate,
cost, ejection), the retry budgets, the config version and the registry connection. Everything
is read at scrape time; nothing here runs per call.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from grpcmesh.balance.pool import Pool
from grpcmesh.clock import Clock
from grpcmesh.relay.call import Call
from grpcmesh.relay.relay import Relay
from grpcmesh.telemetry.counters import BUCKETS, CODES, UNKNOWN, CallCounters, cumulative

_LE = [*(repr(b) for b in BUCKETS), "+Inf"]


@dataclass
class MeshView:
    """Where the collector reads: each relay with its counts, and the sidecar's state."""

    relays: Sequence[tuple[Relay, CallCounters]]
    pools: Callable[[], Mapping[str, Pool]]  # every service's pool (registry and external)
    config_version: Callable[[], int]
    registry_up: Callable[[], bool]
    clock: Clock


class MeshCollector(Collector):
    def __init__(self, view: MeshView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view = self.view
        pools = view.pools()
        calls = CounterMetricFamily(
            "grpcmesh_calls", "Calls through the sidecar, by the status their client saw",
            labels=["direction", "service", "method", "code"])
        durations = HistogramMetricFamily(
            "grpcmesh_call_duration_seconds",
            "Call duration, from the client's request headers to the call's end",
            labels=["direction", "service", "method"])
        in_flight = GaugeMetricFamily("grpcmesh_calls_in_flight", "Calls not yet ended",
                                      labels=["direction", "service"])
        answers = CounterMetricFamily(
            "grpcmesh_proxy_answers", "Calls the proxy answered itself, by why",
            labels=["service", "reason"])
        endpoint_calls = CounterMetricFamily(
            "grpcmesh_endpoint_calls", "Outbound calls whose last attempt went to the endpoint",
            labels=["service", "endpoint", "code"])
        retries = CounterMetricFamily(
            "grpcmesh_retries", "Attempts sent again: reason is the failed attempt's status, "
            "per_try_timeout, or refused (no app saw it)", labels=["service", "reason"])
        hedges = CounterMetricFamily("grpcmesh_hedges", "Hedged attempts sent",
                                     labels=["service"])
        exhausted = CounterMetricFamily(
            "grpcmesh_retry_budget_exhausted",
            "Retries and hedges the retry budget refused (restarts when the budget's "
            "settings change)", labels=["service"])
        live = {(service, e.address) for service, pool in pools.items()
                for e in pool.endpoints.values()}
        answer_totals: dict[tuple[str, ...], int] = {}
        retry_totals: dict[tuple[str, ...], int] = {}
        hedge_totals: dict[tuple[str, ...], int] = {}
        exhausted_totals: dict[tuple[str, ...], int] = {}
        for relay, counts in view.relays:
            direction = counts.direction
            for service, method, series in counts.series():
                for code, count in zip(CODES, series.codes, strict=True):
                    if count:
                        calls.add_metric([direction, service, method, code.name], count)
                buckets = cumulative(series.buckets)
                durations.add_metric([direction, service, method],
                                     list(zip(_LE, buckets, strict=True)), series.total_seconds)
            for service, count in _calls_in_flight(relay, counts.service).items():
                in_flight.add_metric([direction, service], count)
            for key, count in counts.proxy_answers.items():
                _add(answer_totals, key, count)
            if counts.endpoints is not None:
                counts.prune(live)
                for service, by_address in counts.endpoints.items():
                    for address, codes in by_address.items():
                        for code, count in zip(CODES, codes, strict=True):
                            if count:
                                endpoint_calls.add_metric([service, address, code.name], count)
            fixed = counts.service  # (an inbound relay's calls are its service's)
            for (service, reason), count in relay.retries.items():
                _add(retry_totals, (fixed or service, reason), count)
            for service, count in relay.hedges.items():
                _add(hedge_totals, (fixed or service,), count)
            for service, budget in relay.kept.budgets.items():
                _add(exhausted_totals, (fixed or service,), budget.exhausted)
        # (summed over both relays: these have no direction label)
        for family, totals in ((answers, answer_totals), (retries, retry_totals),
                               (hedges, hedge_totals), (exhausted, exhausted_totals)):
            for labels, count in totals.items():
                family.add_metric(list(labels), count)
        yield from (calls, durations, in_flight, answers, endpoint_calls, retries, hedges,
                    exhausted)
        yield from self._endpoints(pools)
        yield GaugeMetricFamily("grpcmesh_config_version",
                                "The mesh config version in force (0: none yet)",
                                value=view.config_version())
        yield GaugeMetricFamily("grpcmesh_registry_connected",
                                "1 while the registry watch is connected",
                                value=1 if view.registry_up() else 0)

    def _endpoints(self, pools: Mapping[str, Pool]) -> Iterator[Metric]:
        now = self.view.clock.now()
        labels = ["service", "endpoint"]
        estimate = GaugeMetricFamily(
            "grpcmesh_endpoint_latency_estimate_seconds",
            "The balancer's peak-EWMA latency estimate (absent until the endpoint answers)",
            labels=labels)
        cost = GaugeMetricFamily("grpcmesh_endpoint_cost",
                                 "The balancer's cost: estimate x (calls in flight + 1)",
                                 labels=labels)
        ejected = GaugeMetricFamily("grpcmesh_endpoint_ejected",
                                    "1 while the outlier detector has the endpoint ejected",
                                    labels=labels)
        for service, pool in sorted(pools.items()):
            seen = set()
            for endpoint in pool.endpoints.values():
                address = endpoint.address
                if address in seen:  # (two instances at one address: one series)
                    continue
                seen.add(address)
                value = endpoint.rtt.get(now)
                if value is not None:
                    estimate.add_metric([service, address], value)
                cost.add_metric([service, address], endpoint.cost(now))
                ejected.add_metric([service, address], 1 if address in pool.ejected else 0)
        yield from (estimate, cost, ejected)


def _add(totals: dict[tuple[str, ...], int], labels: tuple[str, ...], count: int) -> None:
    totals[labels] = totals.get(labels, 0) + count


def _calls_in_flight(relay: Relay, fixed: str) -> dict[str, int]:
    """The relay's calls not yet ended, by service (those not routed yet: "unknown"; all of
    them: fixed, if given, as CallCounters.service). Counted from its client connections'
    streams at scrape time, so calls pay nothing for it."""
    counts: dict[str, int] = {}
    for downstream in relay.downstreams:
        for leg in downstream.streams.values():
            call = leg.call
            if isinstance(call, Call) and not call.ended:
                service = fixed or call.service or UNKNOWN
                counts[service] = counts.get(service, 0) + 1
    return counts
