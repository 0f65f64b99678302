"""Observed latency for `hedge: {delay: pNN}`: the percentile over a sliding window, and when
a call's next hedge is due (Finagle's backup requests; gRFC A6's hedging schedule).

LatencyWindow keeps the last `size` samples (1,000) in a ring, each with its time; samples
older than `max_age` (30 s, Finagle's window) do not count. Memory is fixed whatever the
traffic. The percentile is the nearest-rank one (the smallest sample with at least p% of the
samples at or below it), never below 1 ms, and there is none (so no hedging) until
`min_samples` (100) samples are in the window. HedgeTimer recomputes it at most once per
`refresh` (1 s; Finagle refreshes every 3 s), so a call pays one comparison, not a sort.

HedgeSchedule is one call's timeline. With delay d, attempt k (k = 2..max_attempts) is due
d after the previous one was sent, and only if the retry budget lets it go (hedges draw from
the same budget; a refusal ends hedging for the call). A server's pushback (A6) moves the
next hedge: a negative one ends hedging, n ms puts it n ms from now.
"""
from __future__ import annotations

import math

from grpcmesh.config.policies import HedgeSettings
from grpcmesh.resilience.budget import RetryBudget

FLOOR = 0.001  # seconds


class LatencyWindow:
    __slots__ = ("_at", "_next", "_samples", "max_age", "min_samples", "size")

    def __init__(self, size: int = 1000, max_age: float = 30.0, min_samples: int = 100
                 ) -> None:
        if size < 1 or min_samples > size or max_age <= 0:
            raise ValueError(f"size {size}, min_samples {min_samples}, max_age {max_age}: "
                             "expected 1 <= min_samples <= size and max_age > 0")
        self.size, self.max_age, self.min_samples = size, max_age, min_samples
        self._samples: list[float] = []
        self._at: list[float] = []
        self._next = 0  # the ring's oldest slot once full

    def observe(self, latency: float, now: float) -> None:
        if len(self._samples) < self.size:
            self._samples.append(latency)
            self._at.append(now)
            return
        self._samples[self._next] = latency
        self._at[self._next] = now
        self._next = (self._next + 1) % self.size

    def count(self, now: float) -> int:
        oldest = now - self.max_age
        return sum(1 for at in self._at if at >= oldest)

    def percentile(self, p: float, now: float) -> float | None:
        """The nearest-rank pNN (seconds, at least 1 ms) of the samples in the window; None
        with fewer than min_samples of them."""
        oldest = now - self.max_age
        recent = sorted(s for s, at in zip(self._samples, self._at, strict=True) if at >= oldest)
        if len(recent) < self.min_samples:
            return None
        rank = max(1, math.ceil(p * len(recent) / 100 - 1e-9))  # (99.9 is not exact)
        return max(FLOOR, recent[rank - 1])


class HedgeTimer:
    """A route's hedge delay: the fixed one, or the window's percentile."""

    __slots__ = ("_delay", "_refresh_at", "refresh", "settings", "window")

    def __init__(self, settings: HedgeSettings, window: LatencyWindow | None = None,
                 refresh: float = 1.0) -> None:
        if settings.delay is None and window is None:
            raise ValueError("a percentile delay needs a LatencyWindow")
        self.settings, self.window, self.refresh = settings, window, refresh
        self._delay: float | None = None
        self._refresh_at = -math.inf

    def delay(self, now: float) -> float | None:
        """Seconds from one attempt to the next hedge; None: no hedging yet (too few calls)."""
        if self.settings.delay is not None:
            return self.settings.delay.seconds
        if now >= self._refresh_at:
            assert self.window is not None and self.settings.percentile is not None
            self._delay = self.window.percentile(self.settings.percentile, now)
            self._refresh_at = now + self.refresh
        return self._delay

    def schedule(self, now: float) -> HedgeSchedule:
        """A call that starts now (its first attempt sent)."""
        return HedgeSchedule(self.delay(now), self.settings.max_attempts, now)


class HedgeSchedule:
    __slots__ = ("delay", "max_attempts", "next_at", "sent")

    def __init__(self, delay: float | None, max_attempts: int, now: float) -> None:
        self.delay, self.max_attempts = delay, max_attempts
        self.sent = 1
        self.next_at: float | None = None if delay is None or max_attempts < 2 else now + delay

    def fire(self, now: float, budget: RetryBudget) -> bool:
        """Is a hedge to be sent now? When yes it is counted (and its budget token taken)."""
        if self.next_at is None or now < self.next_at:
            return False
        if not budget.withdraw():
            self.next_at = None
            return False
        self._count(now)
        return True

    def skip(self, now: float) -> None:
        """The hedge due now had nowhere to go (no endpoint left to try with a connection up):
        it counts towards max_attempts, as if sent, but takes nothing from the budget."""
        if self.next_at is None or now < self.next_at:
            return
        self._count(now)

    def _count(self, now: float) -> None:
        """One more attempt (sent, or skipped): the next is due a delay from now, if any."""
        self.sent += 1
        self.next_at = None if self.sent >= self.max_attempts or self.delay is None \
            else now + self.delay

    def pushback(self, ms: int, now: float) -> None:
        """A server's grpc-retry-pushback-ms (backoff.parse_pushback) on any attempt."""
        if ms < 0:
            self.next_at = None
        elif self.next_at is not None:
            self.next_at = now + ms / 1000

    def stop(self) -> None:
        """A response won (or the call committed): no more hedges."""
        self.next_at = None
