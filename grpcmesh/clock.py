"""Time as a parameter: pure objects take a Clock so tests can drive time without sleeping."""
from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (only differences are meaningful)."""
        ...


class MonotonicClock:
    # time.monotonic itself, not a method that calls it: the relay reads the clock several
    # times per call, and a C function costs a fraction of a Python call.
    now = staticmethod(time.monotonic)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds


def iso_utc(unix_seconds: float) -> str:
    """Wall-clock time for people and JSON: 2025-01-31T12:00:00.123Z."""
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
