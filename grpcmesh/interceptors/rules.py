"""The mesh config's rules for calls to a service, as interceptors. Pure: the clock and the
random source are passed in.

services.NAME.faults, routes (with subsets), timeout and max_timeout are applied by the
caller's sidecar (outbound); rate_limit by each instance's inbound sidecar. chain.py builds
them, in that order, into a service's chain.
"""
from __future__ import annotations

import random
from collections.abc import Callable

import grpc

from grpcmesh.clock import Clock
from grpcmesh.config.policies import BudgetSettings, HedgeSettings
from grpcmesh.config.schema import Fault, RateLimit, Route, ServiceConfig, Subset
from grpcmesh.interceptors.api import Answer, CallView, Delay, Interceptor
from grpcmesh.interceptors.kept import Kept
from grpcmesh.registry.model import Method, is_idempotent
from grpcmesh.relay.record import APP, CallRecord
from grpcmesh.resilience.budget import RetryBudget
from grpcmesh.resilience.latency import HedgeTimer, LatencyWindow
from grpcmesh.resilience.retry import CallRetries, RetryPolicy

Methods = Callable[[str], Method | None]  # a method path -> its registered description


class Faults(Interceptor):
    """services.NAME.faults: the first rule that matches a call delays it (delay.percent of
    calls), then aborts it (abort.percent of calls) with a status that names the rule."""

    def __init__(self, service: str, faults: tuple[Fault, ...], rng: random.Random,
                 part: str) -> None:
        self.name = f"services.{service}.faults {part}"
        self.service = service
        self.faults = faults
        self.rng = rng
        self.part = part  # "delay" or "abort": two interceptors, so a delay can come first

    def request(self, call: CallView) -> Answer | Delay | None:
        for index, fault in enumerate(self.faults):
            if not fault.match.matches(call.method, call):
                continue
            if self.part == "delay":
                delay = fault.delay
                if delay is not None and self.rng.random() * 100 < delay.percent:
                    return Delay(delay.duration.seconds)
            else:
                abort = fault.abort
                if abort is not None and self.rng.random() * 100 < abort.percent:
                    return Answer(abort.status,
                                  f"fault injected by services.{self.service}.faults[{index}]")
            return None  # first match wins
        return None


class RouteSplit(Interceptor):
    """services.NAME.routes: the first route that matches a call sends it to one of its
    subsets, chosen by weight (no `to`: every healthy instance), and may set its timeouts."""

    def __init__(self, service: ServiceConfig, rng: random.Random) -> None:
        self.name = f"services.{service.name}.routes"
        subsets = {s.name: s for s in service.subsets}
        # Each route with its split as (total weight, [(cumulative weight, subset), ...]),
        # made once.
        self.routes: list[tuple[Route, float, list[tuple[float, Subset]]]] = []
        for route in service.routes:
            running = 0.0
            steps = []
            for name, weight in route.to:
                running += weight
                steps.append((running, subsets[name]))
            self.routes.append((route, running, steps))
        self.rng = rng

    def request(self, call: CallView) -> Answer | Delay | None:
        """The first route that matches call, and the subset its split picks, go on call."""
        method = call.method
        for route, total, steps in self.routes:
            if route.match.matches(method, call):
                call.route = route
                if steps:
                    roll = self.rng.random() * total
                    for cumulative, subset in steps:
                        if roll < cumulative:
                            call.subset = subset
                            return None
                    call.subset = steps[-1][1]
                return None
        return None


class Timeout(Interceptor):
    """services.NAME.timeout (a deadline for calls that arrive without one) and max_timeout (a
    longer deadline is cut to it); a matching route's own values win."""

    def __init__(self, service: ServiceConfig) -> None:
        self.name = f"services.{service.name}.timeout"
        self.timeout = service.timeout.seconds if service.timeout is not None else None
        self.max_timeout = service.max_timeout.seconds if service.max_timeout else None

    def request(self, call: CallView) -> Answer | Delay | None:
        timeout, max_timeout = self.timeout, self.max_timeout
        route = call.route
        if route is not None:
            if route.timeout is not None:
                timeout = route.timeout.seconds
            if route.max_timeout is not None:
                max_timeout = route.max_timeout.seconds
        if call.timeout is None:
            call.timeout = timeout
        if max_timeout is not None and call.timeout is not None and call.timeout > max_timeout:
            call.timeout = max_timeout
        return None


class RateLimit_(Interceptor):
    """services.NAME.rate_limit, a token bucket per instance (its inbound sidecar): calls over
    it get RESOURCE_EXHAUSTED naming the limit."""

    def __init__(self, service: str, limit: RateLimit, clock: Clock) -> None:
        self.name = f"services.{service}.rate_limit"
        self.clock = clock
        self.rate = float(limit.per_second)
        self.burst = float(limit.burst)
        self.tokens = self.burst
        self.at = clock.now()
        self.message = (f"rate limit of {service} ({limit.per_second:g}/s, burst "
                        f"{limit.burst}) exceeded")

    def request(self, call: CallView) -> Answer | Delay | None:
        now = self.clock.now()
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if tokens < 1:
            self.tokens = tokens
            return Answer(grpc.StatusCode.RESOURCE_EXHAUSTED, self.message)
        self.tokens = tokens - 1
        return None


class Retry(Interceptor):
    """services.NAME.retry: each call gets the service's retry policy (the relay asks it
    when an attempt fails before it commits: call.py) and counts in its retry budget."""

    def __init__(self, service: ServiceConfig, policy: RetryPolicy, methods: Methods) -> None:
        self.name = f"services.{service.name}.retry"
        self.policy = policy
        self.methods = methods

    def request(self, call: CallView) -> Answer | Delay | None:
        policy = self.policy
        policy.budget.deposit()
        path = call.method
        idempotent = is_idempotent(self.methods(path))
        if policy.settings.methods.covers(path, idempotent):  # (else it is never retried)
            call.retry = (policy, CallRetries(), idempotent)
        return None


class Hedge(Interceptor):
    """services.NAME.hedge: each call of a method it covers gets the service's hedge timing
    (the relay sends the hedges: relay/hedging.py). Hedges draw from the retry budget, which
    the Retry rule fills when the service has one (deposit: whether this rule does)."""

    def __init__(self, service: ServiceConfig, settings: HedgeSettings, budget: RetryBudget,
                 methods: Methods, deposit: bool, window: LatencyWindow | None = None) -> None:
        self.name = f"services.{service.name}.hedge"
        self.settings = settings
        self.budget = budget
        self.methods = methods
        self.deposit = deposit
        self.timing = HedgeTimer(settings, window)

    def request(self, call: CallView) -> Answer | Delay | None:
        if self.deposit:
            self.budget.deposit()
        path = call.method
        if self.settings.methods.covers(path, is_idempotent(self.methods(path))):
            call.hedge = (self.timing, self.budget)
        return None


class HedgeAtPercentile(Hedge):
    """`hedge: {delay: pNN}`: also feeds the service's latency window with how long each call
    it covers took, as its client saw it (answered by an app, or cut by its deadline)."""

    def __init__(self, service: ServiceConfig, settings: HedgeSettings, budget: RetryBudget,
                 methods: Methods, deposit: bool, window: LatencyWindow, clock: Clock) -> None:
        super().__init__(service, settings, budget, methods, deposit, window)
        self.window = window
        self.clock = clock

    def end(self, call: CallView, record: CallRecord) -> None:
        # Answered by an app, or cut by the deadline after it reached one (then its latency
        # is at least the duration: leaving it out would make the percentile run low).
        if call.hedge is not None and (record.by == APP or (
                record.reason == "deadline" and record.endpoint)):
            self.window.observe(record.duration, self.clock.now())


def outbound_rules(service: ServiceConfig, rng: random.Random, clock: Clock | None = None,
                   methods: Methods = lambda path: None, kept: Kept | None = None
                   ) -> list[Interceptor]:
    """The rules a caller's sidecar applies to calls to service, in chain order. (clock:
    for the retry budget; methods: what registrations say of a method, for idempotency;
    kept: the service's retry budget and latency window, kept across config versions.)"""
    rules: list[Interceptor] = []
    # A part that no rule can fire (every percent 0: faults turned off) costs nothing per call.
    if any(f.delay is not None and f.delay.percent > 0 for f in service.faults):
        rules.append(Faults(service.name, service.faults, rng, "delay"))
    if any(f.abort is not None and f.abort.percent > 0 for f in service.faults):
        rules.append(Faults(service.name, service.faults, rng, "abort"))
    if service.routes:
        rules.append(RouteSplit(service, rng))
    if service.timeout is not None or service.max_timeout is not None or any(
            r.timeout is not None or r.max_timeout is not None for r in service.routes):
        rules.append(Timeout(service))
    if clock is not None and (service.retry is not None or service.hedge is not None):
        # One budget for the service's retries and hedges (without retry: its defaults).
        if kept is None:
            kept = Kept(clock)
        budget = kept.budget(service.name, service.retry.budget if service.retry is not None
                             else BudgetSettings())
        if service.retry is not None:
            rules.append(Retry(service, RetryPolicy(service.retry, budget, rng), methods))
        hedge, deposit = service.hedge, service.retry is None
        if hedge is not None and hedge.delay is not None:
            rules.append(Hedge(service, hedge, budget, methods, deposit))
        elif hedge is not None:
            rules.append(HedgeAtPercentile(service, hedge, budget, methods, deposit,
                                           kept.window(service.name), clock))
    return rules


def inbound_rules(service: ServiceConfig, clock: Clock) -> list[Interceptor]:
    """The rules an instance's own (inbound) sidecar applies to the calls it takes."""
    if service.rate_limit is None:
        return []
    return [RateLimit_(service.name, service.rate_limit, clock)]
