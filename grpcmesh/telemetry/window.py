"""The last minute of calls, per service and per endpoint, for `grpcmesh stat` (issue 12). Pure:
times come from the records and the caller.

Each (direction, service) and (direction, service, endpoint) key keeps a ring of 60 one-second
slots; a slot holds the calls that ended in its second, those that ended OK, and a latency
histogram over BUCKETS (the same bounds as the Prometheus histogram, 1 ms to 30 s). A window
of up to 60 s is the sum of its slots, and its percentiles are read from the summed histogram
by linear interpolation within a bucket (as PromQL's histogram_quantile does), so sidecars'
windows add up exactly. Memory: 60 slots of 17 counters per key; keys are services and
endpoints from the registry and the config (never a client's input), and a key idle for a
minute is dropped when a new one comes.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

from grpcmesh.relay.record import CallRecord
from grpcmesh.telemetry.counters import BUCKETS  # (the Prometheus histogram's bounds)

SLOTS = 60  # seconds kept
_OK = 0  # grpc.StatusCode.OK's number


class _Ring:
    __slots__ = ("calls", "hist", "last", "ok", "seconds")

    def __init__(self) -> None:
        self.seconds = [-1] * SLOTS
        self.calls = [0] * SLOTS
        self.ok = [0] * SLOTS
        self.hist = [[0] * (len(BUCKETS) + 1) for _ in range(SLOTS)]
        self.last = -1

    def add(self, second: int, ok: bool, bucket: int) -> None:
        index = second % SLOTS
        if self.seconds[index] != second:
            self.seconds[index] = second
            self.calls[index] = self.ok[index] = 0
            hist = self.hist[index]
            for i in range(len(hist)):
                hist[i] = 0
        self.calls[index] += 1
        if ok:
            self.ok[index] += 1
        self.hist[index][bucket] += 1
        self.last = second

    def window(self, now: int, seconds: int) -> tuple[int, int, list[int]]:
        calls = ok = 0
        hist = [0] * (len(BUCKETS) + 1)
        oldest = now - seconds + 1
        for index in range(SLOTS):
            if oldest <= self.seconds[index] <= now:
                calls += self.calls[index]
                ok += self.ok[index]
                for i, n in enumerate(self.hist[index]):
                    hist[i] += n
        return calls, ok, hist


class Window:
    """A relay observer (observer(direction)) and the summaries /stat serves."""

    def __init__(self) -> None:
        self.rings: dict[tuple[str, str, str], _Ring] = {}

    def observer(self, direction: str) -> Callable[[CallRecord], None]:
        rings = self.rings

        def add(key: tuple[str, str, str], second: int, ok: bool, bucket: int) -> None:
            ring = rings.get(key)
            if ring is None:
                self._prune(second)
                ring = rings[key] = _Ring()
            ring.add(second, ok, bucket)

        def observe(record: CallRecord) -> None:
            second = int(record.started + record.duration)
            ok = record.code.value[0] == _OK
            bucket = bisect.bisect_left(BUCKETS, record.duration)
            add((direction, record.service, ""), second, ok, bucket)
            if record.endpoint:  # (a call the proxy answered reached none)
                add((direction, record.service, record.endpoint), second, ok, bucket)
        return observe

    def _prune(self, now: int) -> None:
        for key in [k for k, ring in self.rings.items() if ring.last <= now - SLOTS]:
            del self.rings[key]

    def summary(self, now: float, seconds: int) -> list[dict[str, Any]]:
        """Each key's calls, OK calls and histogram over the last `seconds` (1..60) seconds:
        what /stat serves and `grpcmesh stat` adds up across sidecars."""
        seconds = max(1, min(SLOTS, seconds))
        out = []
        for (direction, service, endpoint), ring in sorted(self.rings.items()):
            calls, ok, hist = ring.window(int(now), seconds)
            if calls:
                out.append({"direction": direction, "service": service, "endpoint": endpoint,
                            "calls": calls, "ok": ok, "buckets": hist})
        return out


def quantile(q: float, hist: Sequence[float], bounds: Sequence[float] = BUCKETS
             ) -> float | None:
    """The q-quantile (0..1) of a histogram: hist[i] counts the samples up to bounds[i] (and
    above bounds[i - 1]); a last count past the bounds is above the last one (+Inf). In
    seconds, interpolated within its bucket as PromQL's histogram_quantile does; None for an
    empty one, or one without bounds. Above the last bound it is the last bound."""
    total = sum(hist)
    if not total or not bounds:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * ((rank - seen) / count)
        seen += count
    return bounds[-1]
