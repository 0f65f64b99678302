"""Calls' deadlines, with one timer for all of them.

A timer per call (asyncio's call_later, a libuv timer under uvloop) cost about 5% of a relayed
unary call. Instead, each call with a deadline goes into the bucket of its deadline rounded up
to a TICK (10 ms), buckets are kept in order of their tick, and one timer fires for the earliest
bucket: every call still in it has its deadline expire. A call that ends first leaves its bucket
(a dict: O(1)). So a deadline is enforced between 0 and 10 ms late, and costs two dict
operations per call. An emptied bucket stays until its tick (the next call in the same 10 ms
reuses it), unless empty buckets outnumber the calls: then they go, so memory follows the calls
in flight, not how many came and went or how far away a client put its deadline. Pure but for
`schedule`, which the relay gives (the event loop's).
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any, Protocol

TICK = 0.01  # seconds


class Expiring(Protocol):
    tick: int | None

    def expire(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Any]  # (delay, fn) -> a handle with cancel()


class Deadlines:
    __slots__ = ("_armed", "_buckets", "_handle", "_live", "_now", "_order", "_schedule")

    def __init__(self, schedule: Schedule, now: Callable[[], float]) -> None:
        self._schedule = schedule
        self._now = now
        self._buckets: dict[int, dict[Expiring, None]] = {}
        self._order: list[int] = []  # the buckets' ticks, a heap
        self._handle: Any = None
        self._armed: int | None = None  # the tick the timer is set for
        self._live = 0  # calls in the buckets

    def __len__(self) -> int:
        return self._live

    def buckets(self) -> int:
        """Buckets kept, empty ones included (bounded by the calls in them: see above)."""
        return len(self._buckets)

    def add(self, call: Expiring, deadline: float) -> None:
        tick = math.ceil(deadline / TICK)
        bucket = self._buckets.get(tick)
        if bucket is None:
            if len(self._buckets) > 2 * self._live + 1024:
                self._compact()
            bucket = self._buckets[tick] = {}
            heapq.heappush(self._order, tick)
            if self._armed is None or tick < self._armed:
                self._arm(tick)
        bucket[call] = None
        self._live += 1
        call.tick = tick

    def remove(self, call: Expiring) -> None:
        tick = call.tick
        if tick is not None:
            call.tick = None
            bucket = self._buckets.get(tick)
            if bucket is not None and call in bucket:
                del bucket[call]  # (the bucket stays, for the next call of its tick)
                self._live -= 1

    def _compact(self) -> None:
        """Drop the empty buckets, and their ticks from the heap."""
        self._buckets = {tick: bucket for tick, bucket in self._buckets.items() if bucket}
        self._order = list(self._buckets)
        heapq.heapify(self._order)

    def _arm(self, tick: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = tick
        self._handle = self._schedule(max(0.0, tick * TICK - self._now()),
                                      lambda: self.fire(tick))

    def fire(self, tick: int) -> None:
        """The timer for tick went off: every call in a bucket up to it has expired."""
        self._handle = self._armed = None
        order, buckets = self._order, self._buckets
        while order and order[0] <= tick:
            calls = buckets.pop(heapq.heappop(order), {})
            self._live -= len(calls)
            for call in list(calls):
                call.tick = None
                call.expire()
        while order and not buckets.get(order[0]):  # emptied by calls that ended in time
            buckets.pop(heapq.heappop(order), None)
        if order:
            self._arm(order[0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._armed = None
        self._buckets.clear()
        self._order.clear()
        self._live = 0
