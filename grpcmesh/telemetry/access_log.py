"""`grpcmesh sidecar --access-log PATH|-`: one JSON line per call, from its end record.

The line is made on the event loop (an f-string whose strings go through the C JSON string
encoder; the timestamp's second made once per second) and kept in a list; every 50 ms (or
1,024 lines) the list goes, as one batch, to a writer thread through a queue, so a call pays
for its line and not for a thread handoff, and a slow disk or a stdout nobody reads never blocks
the data path. Lines waiting for the writer are bounded by `--access-log-buffer` (10,000 by
default: about 4 MB): past it a line is dropped and counted (`dropped`, and one warning per
second at most) rather than held, so memory stays what the flag says whatever the traffic.
Each batch is one write() of whole lines to a file opened for appending, so processes that
share the file (`--workers N`) do not cut each other's lines.

The fields (docs/telemetry.md): start (UTC, ms), duration_ms, direction, caller, service,
method, endpoint, code, by (app | proxy | client), reason (the proxy's, when it answered),
attempts, retry_stop, request_bytes, response_bytes, trace_id (from the request's W3C
`traceparent`, "" without a valid one).
"""
from __future__ import annotations

import asyncio
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from grpcmesh.clock import Clock, iso_utc
from grpcmesh.relay.record import CallRecord
from grpcmesh.telemetry.tracing import parse_traceparent

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 10_000  # lines
BATCH = 1024  # lines handed to the writer at once, at most
HANDOFF = 0.05  # seconds a line waits, at most, before it goes to the writer


def trace_id(headers: list[tuple[str, str]]) -> str:
    """The trace id of a valid W3C traceparent (tracing.parse_traceparent), or "" when there
    is none or it is invalid."""
    for key, value in headers:
        if key == "traceparent":
            parsed = parse_traceparent(value)
            return f"{parsed[0]:032x}" if parsed is not None else ""
    return ""


_esc = json.encoder.encode_basestring_ascii  # (the C one, when built)


class Stamp:
    """Clock readings as UTC text with milliseconds; the second's text is made once."""

    __slots__ = ("_prefix", "_second", "offset")

    def __init__(self, offset: float) -> None:
        self.offset = offset  # Unix time minus the clock's
        self._second = -1
        self._prefix = ""

    def __call__(self, at: float) -> str:
        wall = at + self.offset
        second = int(wall)
        if second != self._second:
            self._second = second
            self._prefix = iso_utc(second)[:-5]  # "2026-12-03T22:40:01" (".000Z" cut)
        return f"{self._prefix}.{int((wall - second) * 1000):03d}Z"


def line(record: CallRecord, direction: str, start: str) -> bytes:
    """One call as its access-log line says it (start: Stamp's text for record.started)."""
    return (f'{{"start":"{start}","duration_ms":{round(record.duration * 1000, 3)},'
            f'"direction":"{direction}","caller":{_esc(record.caller)},'
            f'"service":{_esc(record.service)},"method":{_esc(record.method)},'
            f'"endpoint":{_esc(record.endpoint)},"code":"{record.code.name}",'
            f'"by":"{record.by}","reason":{_esc(record.reason)},"attempts":{record.attempts},'
            f'"retry_stop":"{record.retry_stop}","request_bytes":{record.request_bytes},'
            f'"response_bytes":{record.response_bytes},'
            f'"trace_id":"{trace_id(record.request_headers)}"}}\n').encode()


class AccessLog:
    """The writer: observer(direction) gives each relay its CallRecord observer. Made, fed
    and closed on the event loop's thread."""

    def __init__(self, path: str, clock: Clock, buffer: int = DEFAULT_BUFFER) -> None:
        if buffer < 1:
            raise ValueError(f"access log buffer {buffer}: expected at least 1 line")
        self.path = path
        self.buffer = buffer
        self.dropped = 0
        self.written = 0
        self._queued = 0  # lines handed to the writer and not yet written
        self._pending: list[bytes] = []  # lines not yet handed over
        self._warned_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # (no loop: each line is handed over at once)
        self._queue: queue.SimpleQueue[tuple[int, bytes]] = queue.SimpleQueue()
        if path == "-":
            self._out: IO[bytes] = sys.stdout.buffer
        else:
            try:
                self._out = open(path, "ab", buffering=0)  # noqa: SIM115 (closed in close())
            except OSError as err:
                raise OSError(f"cannot open the access log {path}: {err.strerror}") from None
        self.stamp = Stamp(time.time() - clock.now())
        self._thread = threading.Thread(target=self._write, name="access-log", daemon=True)
        self._thread.start()

    def observer(self, direction: str) -> Callable[[CallRecord], None]:
        pending = self._pending
        stamp = self.stamp

        def observe(record: CallRecord) -> None:
            if self._queued + len(pending) >= self.buffer:
                self._drop(1)
                return
            pending.append(line(record, direction, stamp(record.started)))
            if len(pending) >= BATCH or self._loop is None:
                self.flush()
            elif self._timer is None:
                self._timer = self._loop.call_later(HANDOFF, self.flush)
        return observe

    def flush(self) -> None:
        """Hand the lines made so far to the writer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = self._pending
        if pending:
            self._queued += len(pending)
            self._queue.put((len(pending), b"".join(pending)))
            pending.clear()

    def _drop(self, lines: int, why: str = "it is behind") -> None:
        """Lines lost: counted, and said at most once a second."""
        self.dropped += lines
        now = time.monotonic()
        if now - self._warned_at >= 1.0:
            self._warned_at = now
            log.warning("access log %s: %s; %d line(s) dropped so far", self.path, why,
                        self.dropped)

    def _write(self) -> None:
        get = self._queue.get
        torn = False  # the last write stopped inside a line: the next starts a new one
        while True:
            count, lines = get()
            if not count:
                return
            data = memoryview(b"\n" + lines if torn else lines)
            done = 0
            try:
                while done < len(data):  # (an unbuffered write may take only part of it)
                    done += self._out.write(data[done:]) or 0
                if self.path == "-":
                    self._out.flush()
                torn = False
                self.written += count
            except (OSError, ValueError) as err:  # a full disk, a closed stdout
                kept = bytes(data[:done]).count(b"\n") - (1 if torn and done else 0)
                torn = done > 0 and data[done - 1] != ord("\n")
                self.written += max(0, kept)
                self._drop(count - max(0, kept), f"cannot write: {err}")
            self._queued -= count

    def close(self, timeout: float = 2.0) -> None:
        """Write what is left (for at most timeout seconds), then close the file."""
        self.flush()
        self._queue.put((0, b""))
        self._thread.join(timeout)
        if self.path != "-":
            self._out.close()
