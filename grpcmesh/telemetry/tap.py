"""`grpcmesh tap`: a live line per call through a sidecar, for whoever is watching (issue 12).

Each watcher (an admin `/tap` request) subscribes with its filters and gets a bounded queue of
lines (the access log's JSON line: access_log.line). The relays' observer is registered only
while someone watches, so a sidecar nobody taps pays nothing. A watcher that reads slower than
calls come loses the oldest lines (counted, and told in the stream) rather than holding memory
or slowing calls: at most `QUEUE` lines per watcher and `MAX_WATCHERS` watchers per sidecar.
Pure apart from the asyncio.Event that wakes a watcher.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from grpcmesh.relay.record import CallRecord, Observer
from grpcmesh.telemetry.access_log import Stamp, line

QUEUE = 1000  # lines per watcher
MAX_WATCHERS = 16


class Watcher:
    __slots__ = ("closed", "dropped", "lines", "method", "service", "wake")

    def __init__(self, service: str | None, method: str | None) -> None:
        self.service, self.method = service, method
        self.lines: deque[bytes] = deque(maxlen=QUEUE)
        self.dropped = 0  # lines lost because the watcher was behind
        self.wake = asyncio.Event()
        self.closed = False  # the sidecar is stopping: the stream ends

    def wants(self, record: CallRecord) -> bool:
        return (self.service is None or record.service == self.service) and (
            self.method is None or record.method == self.method
            or record.method.rsplit("/", 1)[-1] == self.method)

    def offer(self, text: bytes) -> None:
        """A line for this watcher; the oldest goes (counted) when it is behind."""
        if len(self.lines) == QUEUE:
            self.dropped += 1
        self.lines.append(text)
        self.wake.set()

    def take(self) -> list[bytes]:
        """The lines so far (and clears the wake-up)."""
        out = list(self.lines)
        self.lines.clear()
        self.wake.clear()
        return out


class Tap:
    """The watchers of one sidecar process, and the observers its relays get while any is
    there. observers: (register, unregister) pairs, one per relay and direction."""

    def __init__(self, stamp: Stamp) -> None:
        self.stamp = stamp
        self.watchers: list[Watcher] = []
        self._relays: list[tuple[list[Observer], Observer]] = []

    def relay(self, observers: list[Observer], direction: str) -> None:
        """A relay whose calls are shown (observers: its list of observers)."""
        self._relays.append((observers, self._observer(direction)))

    def _observer(self, direction: str) -> Callable[[CallRecord], None]:
        def observe(record: CallRecord) -> None:
            text = None
            for watcher in self.watchers:
                if watcher.wants(record):
                    if text is None:
                        text = line(record, direction, self.stamp(record.started))
                    watcher.offer(text)
        return observe

    def watch(self, service: str | None = None, method: str | None = None) -> Watcher:
        """A new watcher; ValueError when MAX_WATCHERS are watching already."""
        if len(self.watchers) >= MAX_WATCHERS:
            raise ValueError(f"{MAX_WATCHERS} watchers are tapping this sidecar already")
        watcher = Watcher(service, method)
        self.watchers.append(watcher)
        if len(self.watchers) == 1:
            for observers, observe in self._relays:
                observers.append(observe)
        return watcher

    def leave(self, watcher: Watcher) -> None:
        """watcher goes (twice is once)."""
        if watcher in self.watchers:
            self.watchers.remove(watcher)
        if not self.watchers:
            for observers, observe in self._relays:
                if observe in observers:
                    observers.remove(observe)

    def close(self) -> None:
        """The sidecar stops: every watcher's stream ends."""
        for watcher in list(self.watchers):
            watcher.closed = True
            watcher.wake.set()
