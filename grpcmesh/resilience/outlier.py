"""Outlier detection: endpoints that fail are taken out of the picker for a while (issue 11).

Two rules, as Envoy and gRFC A50 apply them, with gRPC statuses as the failures (Envoy
looked at HTTP codes only, envoy#860):

- **Consecutive failures** (Envoy's consecutive_5xx): `consecutive_failures` answers in a row
  that are UNAVAILABLE, INTERNAL, UNKNOWN or DEADLINE_EXCEEDED eject the endpoint at once.
  Any other status (OK, NOT_FOUND, ...) is an answer from a working app and resets the count.
  A call our own client cancelled counts for nothing.
- **Success rate** (A50, when `success_rate` is set): at each `interval`, among endpoints with
  at least `min_requests` calls in that interval, and only when there are at least
  `min_hosts` of them, an endpoint whose success rate is below mean - stdev_factor x stdev
  (population standard deviation) is ejected.

An ejection lasts base_ejection x (the endpoint's ejection count), at most max(300 s,
base_ejection) (A50). The count goes up by one per ejection and down by one at each interval
the endpoint ends un-ejected, so an endpoint that stays healthy is forgiven. At most
max(1, floor(endpoints x max_ejection_percent / 100)) endpoints are ejected at once: at least
one endpoint may always be ejected (Envoy), and a rule that would eject more ejects nothing.
An endpoint comes back once its time has passed (checked at the next event, so no timer is
needed); its consecutive count starts again from 0.

Pure: the clock is injected and nothing runs by itself. Work happens in record() and
ejected(): the interval's rule runs on the first of them after the interval is due, which
costs one comparison per call otherwise. Keyed by endpoint address; `sync()` follows the
pool's endpoints.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from grpcmesh.clock import Clock
from grpcmesh.config.policies import OutlierSettings

FAILURES = frozenset({"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED"})
MAX_EJECTION = 300.0  # seconds (A50's max_ejection_time)


@dataclass(slots=True)
class EndpointState:
    address: str
    ejected: bool = False
    ejected_until: float | None = None  # on the detector's clock
    ejection_reason: str | None = None  # the last ejection's, kept after it ends
    ejections: int = 0  # A50's multiplier
    consecutive: int = 0  # failures in a row
    successes: int = 0  # in the current interval
    failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        """What /endpoints shows; ejected_until is on the detector's (monotonic) clock."""
        return {"ejected": self.ejected, "ejected_until": self.ejected_until,
                "ejection_reason": self.ejection_reason if self.ejected else None}


class OutlierDetector:
    def __init__(self, settings: OutlierSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.endpoints: dict[str, EndpointState] = {}
        self._interval = settings.interval.seconds
        self._next_interval = clock.now() + self._interval
        self._next_return = math.inf  # the earliest ejected_until
        self.changes = 0  # bumped at each ejection and return: who follows it compares

    def sync(self, addresses: Iterable[str]) -> None:
        """The pool's endpoints now: new ones are added, the others forgotten."""
        wanted = set(addresses)
        for address in [a for a in self.endpoints if a not in wanted]:
            del self.endpoints[address]
        for address in wanted:
            self.endpoints.setdefault(address, EndpointState(address))

    def record(self, address: str, code: grpc.StatusCode | str | None) -> None:
        """A call to address ended with code (None: our client cancelled it)."""
        now = self.clock.now()
        self._advance(now)
        if code is None:
            return
        name = code.name if isinstance(code, grpc.StatusCode) else code
        state = self.endpoints.get(address)
        if state is None:
            state = self.endpoints[address] = EndpointState(address)
        if name not in FAILURES:
            state.successes += 1
            state.consecutive = 0
            return
        state.failures += 1
        state.consecutive += 1
        limit = self.settings.consecutive_failures
        if state.consecutive >= limit and not state.ejected:
            self._eject(state, now, f"{state.consecutive} consecutive failures (the last: "
                                    f"{name}; the limit is {limit})")

    def advance(self) -> None:
        """Returns and the interval's rule, if due (a timer calls it; record() does too)."""
        self._advance(self.clock.now())

    def ejected_addresses(self) -> frozenset[str]:
        return frozenset(a for a, s in self.endpoints.items() if s.ejected)

    def ejected(self, address: str) -> bool:
        self._advance(self.clock.now())
        state = self.endpoints.get(address)
        return state is not None and state.ejected

    def state(self, address: str) -> EndpointState | None:
        self._advance(self.clock.now())
        return self.endpoints.get(address)

    def max_ejected(self) -> int:
        total = len(self.endpoints)
        return max(1, math.floor(total * self.settings.max_ejection_percent / 100))

    def _eject(self, state: EndpointState, now: float, reason: str) -> bool:
        if sum(s.ejected for s in self.endpoints.values()) >= self.max_ejected():
            return False
        base = self.settings.base_ejection.seconds
        state.ejections += 1
        duration = min(base * state.ejections, max(MAX_EJECTION, base))
        state.ejected, state.ejected_until = True, now + duration
        state.ejection_reason = f"{reason}; ejected for {duration:g} s (ejection " \
                                f"{state.ejections})"
        state.consecutive = 0
        self.changes += 1
        self._next_return = min(self._next_return, state.ejected_until)
        return True

    def _advance(self, now: float) -> None:
        if now >= self._next_return:
            self._return(now)
        if now >= self._next_interval:
            self._run_interval(now)
            self._next_interval = now + self._interval

    def _return(self, now: float) -> None:
        self._next_return = math.inf
        for state in self.endpoints.values():
            if state.ejected and state.ejected_until is not None:
                if state.ejected_until <= now:
                    state.ejected, state.ejected_until = False, None
                    state.consecutive = 0
                    self.changes += 1
                else:
                    self._next_return = min(self._next_return, state.ejected_until)

    def _run_interval(self, now: float) -> None:
        """A50: success-rate ejection over the interval's counts, then the counts start
        again and un-ejected endpoints have their ejection count lowered."""
        rule = self.settings.success_rate
        if rule is not None:
            counted = [s for s in self.endpoints.values()
                       if s.successes + s.failures >= rule.min_requests]
            if len(counted) >= rule.min_hosts:
                rates = [s.successes / (s.successes + s.failures) for s in counted]
                mean, stdev = statistics.fmean(rates), statistics.pstdev(rates)
                threshold = mean - rule.stdev_factor * stdev
                for state, rate in zip(counted, rates, strict=True):
                    if rate < threshold and not state.ejected:
                        self._eject(state, now, (
                            f"success rate {rate:.1%} over {state.successes + state.failures} "
                            f"calls is below {threshold:.1%} (mean {mean:.1%} - "
                            f"{rule.stdev_factor:g} x stdev {stdev:.1%} across {len(counted)} "
                            "endpoints)"))
        for state in self.endpoints.values():
            state.successes = state.failures = 0
            if not state.ejected and state.ejections > 0:
                state.ejections -= 1
