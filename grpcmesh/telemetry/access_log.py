"""`grpcmesh sidecar --access-log PATH|-`: one JSON line per call, from its end record.

The line is made on the event loop (a dict and the C JSON encoder: a few microseconds) and put
in a bounded queue; a writer thread takes lines off it and writes them in batches, so a slow
disk or a stdout nobody reads never blocks the data path. When the queue is full
(`--access-log-buffer` lines, 10,000 by default: about 4 MB) a line is dropped and counted
(`dropped`, and one warning per second at most) rather than held: memory stays what the flag
says whatever the traffic. Each batch is one write() of whole lines to a file opened for
appending, so processes that share the file (`--workers N`) do not cut each other's lines.

The fields (docs/telemetry.md): start (UTC, ms), duration_ms, direction, caller, service,
method, endpoint, code, by (app | proxy | client), reason (the proxy's, when it answered),
attempts, retry_stop, request_bytes, response_bytes, trace_id (from the request's W3C
`traceparent`, "" without a valid one).
"""
from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from grpcmesh.clock import Clock, iso_utc
from grpcmesh.relay.record import CallRecord

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 10_000  # lines
_HEX = frozenset("0123456789abcdef")
_STOP = b""


def trace_id(headers: list[tuple[str, str]]) -> str:
    """The trace id of a W3C traceparent (version 00: `00-<32 hex>-<16 hex>-<2 hex>`), or ""
    when there is none or it is malformed (an all-zero id is invalid)."""
    for key, value in headers:
        if key == "traceparent":
            parts = value.split("-")
            if len(parts) >= 4 and len(parts[1]) == 32 and set(parts[1]) <= _HEX and \
                    parts[1] != "0" * 32:
                return parts[1]
            return ""
    return ""


def entry(record: CallRecord, direction: str, wall_offset: float) -> dict[str, Any]:
    """One call as its access-log line says it (wall_offset: Unix time minus the record's
    clock)."""
    return {
        "start": iso_utc(record.started + wall_offset),
        "duration_ms": round(record.duration * 1000, 3),
        "direction": direction,
        "caller": record.caller,
        "service": record.service,
        "method": record.method,
        "endpoint": record.endpoint,
        "code": record.code.name,
        "by": record.by,
        "reason": record.reason,
        "attempts": record.attempts,
        "retry_stop": record.retry_stop,
        "request_bytes": record.request_bytes,
        "response_bytes": record.response_bytes,
        "trace_id": trace_id(record.request_headers),
    }


class AccessLog:
    """The writer: observer(direction) gives each relay its CallRecord observer."""

    def __init__(self, path: str, clock: Clock, buffer: int = DEFAULT_BUFFER) -> None:
        if buffer < 1:
            raise ValueError(f"access log buffer {buffer}: expected at least 1 line")
        self.path = path
        self.clock = clock
        self.dropped = 0
        self.written = 0
        self._warned_at = 0.0
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=buffer)
        if path == "-":
            self._out: IO[bytes] = sys.stdout.buffer
        else:
            try:
                self._out = open(path, "ab", buffering=0)  # noqa: SIM115 (closed in close())
            except OSError as err:
                raise OSError(f"cannot open the access log {path}: {err.strerror}") from None
        self._offset = time.time() - clock.now()
        self._thread = threading.Thread(target=self._write, name="access-log", daemon=True)
        self._thread.start()

    def observer(self, direction: str) -> Callable[[CallRecord], None]:
        put = self._queue.put_nowait
        dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

        def observe(record: CallRecord) -> None:
            line = (dumps(entry(record, direction, self._offset)) + "\n").encode()
            try:
                put(line)
            except queue.Full:
                self.dropped += 1
                now = time.monotonic()
                if now - self._warned_at >= 1.0:
                    self._warned_at = now
                    log.warning("access log %s is behind: %d line(s) dropped so far",
                                self.path, self.dropped)
        return observe

    def _write(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            batch = [get()]
            while len(batch) < 1024:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            lines = b"".join(batch)
            if lines:
                try:
                    self._out.write(lines)
                    if self.path == "-":
                        self._out.flush()
                    self.written += len(batch) - stop
                except (OSError, ValueError) as err:  # a full disk, a closed stdout
                    self.dropped += len(batch) - stop
                    log.warning("cannot write the access log %s: %s", self.path, err)
            if stop:
                return

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (for at most timeout seconds), then close the file."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        if self.path != "-":
            self._out.close()
