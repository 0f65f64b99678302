#!/usr/bin/env python3
"""Watch streams for scripts/bench_registry.py, from a process of their own (the benchmark
starts a few), so that what it measures is the registry's fan-out, not one Python client's loop.

  python scripts/registry_watchers.py ADDRESS[,ADDRESS...] COUNT

Opens COUNT Watch streams on the first address, over CHANNELS channels of their own (one TCP
connection each). Each watcher follows the registry as `watch_forever` does (grpcmesh/registry/
client.py): it keeps the store_id and revision of the last event it applied, and when its
stream breaks it moves to the next address and asks to resume after that revision, after the
same backoff (Backoff(): 50-100 ms the first time). The events are read as bytes and parsed
with the generated WatchEvent only: no model objects, so a 10,000-instance snapshot costs the
client little.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.registry.client import Backoff

WATCH = f"/{pb.DESCRIPTOR.services_by_name['Registry'].full_name}/Watch"
CHANNELS = 16
SNAPSHOT, RESUMED, UPSERT = pb.WatchEvent.SNAPSHOT, pb.WatchEvent.RESUMED, pb.WatchEvent.UPSERT


class Watchers:
    def __init__(self, addresses: list[str], count: int) -> None:
        self.addresses = addresses
        self.count = count
        self._channels: dict[tuple[str, int], grpc.aio.Channel] = {}
        self.latest: dict[int, float] = {}  # revision -> when the last watcher here got it
        self.seen: dict[int, int] = {}  # revision -> how many watchers here got it
        self.lags: list[float] = []
        self.connects: list[list[tuple[str, float]]] = [[] for _ in range(count)]
        self.broken: list[float] = [0.0] * count
        self.first = asyncio.Event()
        self._started = 0

    def _stub(self, address: str, index: int) -> grpc.aio.UnaryStreamMultiCallable:
        key = (address, index % CHANNELS)
        channel = self._channels.get(key)
        if channel is None:  # a connection of its own: not grpc's shared subchannel
            channel = self._channels[key] = grpc.aio.insecure_channel(
                address, options=[("grpc.use_local_subchannel_pool", 1),
                                  ("grpc.max_receive_message_length", 8 << 20)])
        return channel.unary_stream(WATCH, request_serializer=pb.WatchRequest.SerializeToString)

    async def watch(self, index: int) -> None:
        """One watcher, as watch_forever follows the registry."""
        at, store_id, revision = 0, "", 0
        backoff = Backoff()
        while True:
            call = self._stub(self.addresses[at], index)(
                pb.WatchRequest(store_id=store_id, after_revision=revision))
            try:
                async for data in call:
                    event = pb.WatchEvent.FromString(data)
                    if event.type == UPSERT:
                        now = time.monotonic()
                        self.latest[event.revision] = now
                        self.seen[event.revision] = self.seen.get(event.revision, 0) + 1
                    elif event.type == SNAPSHOT and not event.more or event.type == RESUMED:
                        self._connected(index, "resumed" if event.type == RESUMED else
                                        "snapshot")
                        store_id = event.store_id
                        backoff.reset()
                    if event.type != pb.WatchEvent.CONFIG and not event.more:
                        revision = event.revision
            except grpc.aio.AioRpcError:
                pass
            self.broken[index] = self.broken[index] or time.monotonic()
            at = (at + 1) % len(self.addresses)
            await asyncio.sleep(backoff.next())

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
        for channel in self._channels.values():
            await channel.close()


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
