"""A retry budget: retries may be at most a share of calls, plus a floor per second
(Finagle's RetryBudget, as Linkerd and tower use it: 20% of calls + 10/s over 10 s).

The rule, exactly: over the last `window` seconds (10 s),

    retries + hedges  <=  ratio x calls  +  min_per_second x window

`deposit()` counts a call (once per call, not per attempt); `withdraw()` asks for one retry
or hedge and counts it when the answer is yes. Both are kept in one-second slots, and a slot
leaves the sum once it is `window` seconds old, so a burst of retries is forgotten 10 s later,
as are the calls that paid for it. The floor is what lets a quiet service retry at all: with
min_per_second 10, any 100 retries may go within 10 s even with no call. Memory: `window`
slots of two counters, whatever the traffic.

A retry that never reached an app (the transparent retries of gRFC A6) neither withdraws nor
deposits: it adds no load on an app.
"""
from __future__ import annotations

import math

from grpcmesh.clock import Clock


class RetryBudget:
    __slots__ = ("_calls", "_clock", "_retries", "_slot_ids", "exhausted", "min_per_second",
                 "ratio", "window")

    def __init__(self, clock: Clock, ratio: float = 0.2, min_per_second: float = 10,
                 window: int = 10) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio {ratio} must be above 0 and at most 1")
        if min_per_second < 0:
            raise ValueError(f"min_per_second {min_per_second} must not be negative")
        if window < 1:
            raise ValueError(f"window {window} must be at least 1 s")
        self._clock = clock
        self.ratio, self.min_per_second, self.window = ratio, min_per_second, window
        self._slot_ids = [-1] * window  # the whole second each slot counts for
        self._calls = [0] * window
        self._retries = [0] * window
        self.exhausted = 0  # withdrawals refused, for /endpoints-style output

    def deposit(self) -> None:
        """One call (its first attempt) was sent."""
        self._calls[self._slot()] += 1

    def withdraw(self) -> bool:
        """May one more retry or hedge go? Counted when yes; refusals are counted too."""
        calls, retries = self._sums()
        if retries + 1 > self.ratio * calls + self.min_per_second * self.window + 1e-9:
            self.exhausted += 1
            return False
        self._retries[self._slot()] += 1
        return True

    def balance(self) -> float:
        """How many retries may go now (fractional: a call adds `ratio`)."""
        calls, retries = self._sums()
        return self.ratio * calls + self.min_per_second * self.window - retries

    def totals(self) -> tuple[int, int]:
        """(calls, retries) within the window."""
        return self._sums()

    def _slot(self) -> int:
        second = math.floor(self._clock.now())
        index = second % self.window
        if self._slot_ids[index] != second:  # a slot from an older round: start it again
            self._slot_ids[index] = second
            self._calls[index] = self._retries[index] = 0
        return index

    def _sums(self) -> tuple[int, int]:
        oldest = math.floor(self._clock.now()) - self.window + 1
        calls = retries = 0
        for index, second in enumerate(self._slot_ids):
            if second >= oldest:
                calls += self._calls[index]
                retries += self._retries[index]
        return calls, retries
