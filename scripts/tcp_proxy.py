#!/usr/bin/env python3
"""A prototype below the call layer: a TCP splice on uvloop, a reference configuration of
scripts/bench_proxy.py (`tcp`).

It copies bytes between each client connection and one upstream connection and never looks at
HTTP/2: no per-call routing, balancing, deadlines or status, so it is not a mesh proxy. It
measures what Python costs per call when grpcio's per-call machinery is out of the way, which
bounds from below any forwarder that works on connections or frames instead of calls
(docs/performance.md).

  python scripts/tcp_proxy.py LISTEN UPSTREAM   (prints {"proxy": "HOST:PORT"} when ready)
"""
from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop
from reference_proxy import announce_until_signal


class Pipe(asyncio.Protocol):
    """One direction's receiver; writes what it gets to the peer transport."""

    def __init__(self) -> None:
        self.peer: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)  # the upstream connection is not up yet
        else:
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()

    def attach(self, peer: asyncio.Transport) -> None:
        self.peer = peer
        for data in self.pending:
            peer.write(data)
        self.pending.clear()


async def main(listen: str, upstream: str) -> None:
    loop = asyncio.get_running_loop()
    up_host, _, up_port = upstream.rpartition(":")

    def accept() -> Pipe:
        downstream = Pipe()

        async def connect() -> None:
            try:
                transport, upstream_pipe = await loop.create_connection(Pipe, up_host,
                                                                        int(up_port))
            except OSError:
                if downstream.transport is not None:
                    downstream.transport.close()
                return
            assert downstream.transport is not None
            upstream_pipe.attach(downstream.transport)
            downstream.attach(transport)
        task = loop.create_task(connect())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return downstream

    tasks: set[asyncio.Task[None]] = set()
    host, _, port = listen.rpartition(":")
    server = await loop.create_server(accept, host, int(port))
    await announce_until_signal(host, server.sockets[0].getsockname()[1])
    server.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2]))
