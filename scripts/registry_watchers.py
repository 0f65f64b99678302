#!/usr/bin/env python3
"""Watch streams for scripts/bench_registry.py, from a process of their own (the benchmark
starts a few), so that what it measures is the registry's fan-out, not one Python client's loop.

  python scripts/registry_watchers.py ADDRESS[,ADDRESS...] COUNT

Opens COUNT Watch streams on the first address, over CHANNELS HTTP/2 connections. Each watcher
follows the registry as `watch_forever` does (grpcmesh/registry/client.py): it keeps the
store_id and revision of the last event it applied, and when its stream breaks it moves to the
next address and asks to resume after that revision, after the same backoff (Backoff(): 50-100
ms the first time).

The streams are spoken in HTTP/2 directly (the relay's frame helpers, grpcmesh/relay/frames.py),
not through grpc.aio: a message costs this client a frame parse and a WatchEvent parse, about a
tenth of grpc.aio's per-message cost. With grpc.aio, 1,000 watchers in 4 processes took more
CPU per change (about 130 ms) than the registry did (about 50 ms), on the same 2 cores, and the
benchmark measured them rather than the registry.

Prints `{"ready": ...}` once every watcher has its first snapshot, then answers commands, one per
stdin line, with one JSON line:
- `flips`: for each UPSERT revision seen since the last `flips`: the latest time
  (time.monotonic(), which is system-wide on Linux, so comparable across processes) at which
  one of this process's watchers received it, and how many did; and the event loop's lag over
  that time (a 5 ms ticker: how late this process could have stamped a receive).
- `caught-up SECONDS`: waits up to SECONDS until every watcher that lost its stream has
  resumed (RESUMED) or taken a whole new SNAPSHOT, then says how many did which, and when the
  last one did.
EOF on stdin: cancel everything and exit.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.registry.client import Backoff
from grpcmesh.relay import frames as f

WATCH = f"/{pb.DESCRIPTOR.services_by_name['Registry'].full_name}/Watch"
CHANNELS = 16
SNAPSHOT, RESUMED, UPSERT = pb.WatchEvent.SNAPSHOT, pb.WatchEvent.RESUMED, pb.WatchEvent.UPSERT


class Connection:
    """One HTTP/2 connection to a registry carrying many Watch streams, spoken directly over
    asyncio (grpcmesh.relay.frames): a message costs this client a frame parse and a protobuf
    parse, not grpc.aio's per-message machinery (about 130 us each, which on 2 cores made the
    watchers, not the registry, set the pace)."""

    def __init__(self, address: str, serial: int, on_message: Callable[[int, bytes], None],
                 on_end: Callable[[int], None]) -> None:
        """Connects at once; `started` is done once it has (or could not)."""
        self.address = address
        self._on_message = on_message
        self._on_end = on_end
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 1
        self.streams: set[int] = set()
        self._buffers: dict[int, bytes] = {}
        self._unacked = 0  # bytes taken since the last connection WINDOW_UPDATE
        self.alive = False
        self._task: asyncio.Task[None] | None = None
        self.serial = serial
        self.started: asyncio.Future[None] = asyncio.ensure_future(self.start())

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f.PREFACE + f.settings_frame([(f.INITIAL_WINDOW_SIZE, f.MAX_WINDOW)])
                     + f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW))
        self._writer, self.alive = writer, True
        self._task = asyncio.get_running_loop().create_task(self._read(reader))

    def open(self, request: bytes) -> int:
        """A new Watch stream with this request; its id."""
        assert self._writer is not None
        sid, self._next_id = self._next_id, self._next_id + 2
        block = b"".join(f.literal_header(name, value) for name, value in (
            (":method", "POST"), (":scheme", "http"), (":path", WATCH),
            (":authority", self.address), ("content-type", "application/grpc"),
            ("te", "trailers")))
        self._writer.write(f.header_frames(sid, block, False, f.DEFAULT_FRAME_SIZE) + f.frame(
            f.DATA, f.END_STREAM, sid, b"\0" + len(request).to_bytes(4, "big") + request))
        self.streams.add(sid)
        return sid

    async def _read(self, reader: asyncio.StreamReader) -> None:
        rest = b""
        try:
            while data := await reader.read(1 << 20):
                rest += data
                pos = 0
                while len(rest) - pos >= 9:
                    length = int.from_bytes(rest[pos:pos + 3], "big")
                    if len(rest) - pos < 9 + length:
                        break
                    kind, flags = rest[pos + 3], rest[pos + 4]
                    sid = int.from_bytes(rest[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                    self._frame(kind, flags, sid, rest[pos + 9:pos + 9 + length])
                    pos += 9 + length
                rest = rest[pos:]
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.alive = False
            for sid in list(self.streams):
                self._end(sid)

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        assert self._writer is not None
        if kind == f.DATA and sid in self.streams:
            payload = f.strip_padding(flags, payload, "DATA")
            self._unacked += len(payload)
            if self._unacked > 1 << 30:  # the connection's window; each stream's is 2 GiB
                self._writer.write(f.window_update(0, self._unacked))
                self._unacked = 0
            buffer = self._buffers.get(sid, b"") + payload
            while len(buffer) >= 5 and len(buffer) >= 5 + int.from_bytes(buffer[1:5], "big"):
                size = int.from_bytes(buffer[1:5], "big")
                self._on_message(sid, buffer[5:5 + size])
                buffer = buffer[5 + size:]
            self._buffers[sid] = buffer
            if flags & f.END_STREAM:
                self._end(sid)
        elif kind == f.HEADERS and flags & f.END_STREAM or kind == f.RST_STREAM:
            self._end(sid)  # trailers: the watch ended
        elif kind == f.SETTINGS and not flags & f.ACK:
            self._writer.write(f.frame(f.SETTINGS, f.ACK, 0))
        elif kind == f.PING and not flags & f.ACK:
            self._writer.write(f.frame(f.PING, f.ACK, 0, payload))
        elif kind == f.GOAWAY:
            self.alive = False

    def _end(self, sid: int) -> None:
        if sid in self.streams:
            self.streams.discard(sid)
            self._buffers.pop(sid, None)
            self._on_end(sid)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class Watchers:
    def __init__(self, addresses: list[str], count: int) -> None:
        self.addresses = addresses
        self.count = count
        self._connections: dict[tuple[str, int], Connection] = {}
        self._streams: dict[tuple[int, int], int] = {}  # (connection serial, stream) -> watcher
        self.latest: dict[int, float] = {}  # revision -> when the last watcher here got it
        self.seen: dict[int, int] = {}  # revision -> how many watchers here got it
        self.lags: list[float] = []
        self.connects: list[list[tuple[str, float]]] = [[] for _ in range(count)]
        self.broken: list[float] = [0.0] * count
        self.first = asyncio.Event()
        self._started = 0
        # Each watcher: the address it is on, the store id and revision it has applied.
        self._at = [0] * count
        self._position: list[tuple[str, int]] = [("", 0)] * count
        self._more = [False] * count
        self._backoff = [Backoff() for _ in range(count)]
        self._tasks: set[asyncio.Task[None]] = set()
        self._serial = 0

    async def _connection(self, address: str, index: int) -> Connection:
        key = (address, index % CHANNELS)
        conn = self._connections.get(key)
        if conn is None or (conn.started.done() and not conn.alive):
            self._serial += 1  # streams are known by (connection, stream id)
            serial = self._serial
            conn = Connection(address, serial, lambda sid, data: self._message(serial, sid, data),
                              lambda sid: self._ended(serial, sid))
            self._connections[key] = conn
        await asyncio.shield(conn.started)  # (the watchers that share it wait for it too)
        return conn

    async def watch(self, index: int) -> None:
        """One watcher's stream (again, after it broke: on the next address, resuming)."""
        while True:
            address = self.addresses[self._at[index]]
            try:
                conn = await self._connection(address, index)
                store_id, revision = self._position[index]
                sid = conn.open(pb.WatchRequest(store_id=store_id,
                                                after_revision=revision).SerializeToString())
                self._streams[(conn.serial, sid)] = index
                return
            except OSError:
                self._lost(index)
                await asyncio.sleep(self._backoff[index].next())

    def _message(self, conn: int, sid: int, data: bytes) -> None:
        index = self._streams.get((conn, sid))
        if index is None:
            return
        event = pb.WatchEvent.FromString(data)
        if event.type == UPSERT:
            now = time.monotonic()
            self.latest[event.revision] = now
            self.seen[event.revision] = self.seen.get(event.revision, 0) + 1
        elif event.type == SNAPSHOT and not event.more or event.type == RESUMED:
            self._connected(index, "resumed" if event.type == RESUMED else "snapshot")
            self._position[index] = (event.store_id, self._position[index][1])
            self._backoff[index].reset()
        if event.type != pb.WatchEvent.CONFIG and not event.more:
            self._position[index] = (self._position[index][0], event.revision)

    def _ended(self, conn: int, sid: int) -> None:
        index = self._streams.pop((conn, sid), None)
        if index is None:
            return
        self._lost(index)
        task = asyncio.get_running_loop().create_task(self._again(index))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lost(self, index: int) -> None:
        self.broken[index] = self.broken[index] or time.monotonic()
        self._at[index] = (self._at[index] + 1) % len(self.addresses)

    async def _again(self, index: int) -> None:
        await asyncio.sleep(self._backoff[index].next())
        await self.watch(index)

    def _connected(self, index: int, kind: str) -> None:
        self.connects[index].append((kind, time.monotonic()))
        if len(self.connects[index]) == 1:
            self._started += 1
            if self._started == self.count:
                self.first.set()

    async def ticker(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.005)
            self.lags.append(time.monotonic() - start - 0.005)

    def flips(self) -> dict[str, object]:
        lags = sorted(self.lags)
        out = {"latest": self.latest, "seen": self.seen,
               "lag_p99_ms": round(1000 * lags[int(0.99 * (len(lags) - 1))], 2) if lags else 0,
               "lag_max_ms": round(1000 * lags[-1], 2) if lags else 0}
        self.latest, self.seen, self.lags = {}, {}, []
        return out

    async def caught_up(self, timeout: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lost = [i for i in range(self.count) if self.broken[i]]
            if all(len(self.connects[i]) > 1 for i in lost):
                break
            await asyncio.sleep(0.02)
        again = [self.connects[i][-1] for i in range(self.count) if len(self.connects[i]) > 1]
        return {"lost": sum(1 for b in self.broken if b),
                "resumed": sum(1 for kind, _ in again if kind == "resumed"),
                "snapshot": sum(1 for kind, _ in again if kind == "snapshot"),
                "first_broken": min((b for b in self.broken if b), default=0),
                "last": max((t for _, t in again), default=0)}

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for conn in self._connections.values():
            await conn.close()


async def main(addresses: list[str], count: int) -> None:
    loop = asyncio.get_running_loop()
    watchers = Watchers(addresses, count)
    start = time.monotonic()
    tasks = [loop.create_task(watchers.watch(i)) for i in range(count)]
    tasks.append(loop.create_task(watchers.ticker()))
    await asyncio.wait_for(watchers.first.wait(), 300)
    print(json.dumps({"ready": round(time.monotonic() - start, 3)}), flush=True)
    watchers.flips()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        if line[0] == "flips":
            print(json.dumps(watchers.flips()), flush=True)
        elif line[0] == "caught-up":
            print(json.dumps(await watchers.caught_up(float(line[1]))), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await watchers.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].split(","), int(sys.argv[2])))
