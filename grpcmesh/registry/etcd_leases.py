"""Lease renewals on one etcd LeaseKeepAlive stream, shared by every KeepAlive a registry
replica relays: a stream per renewal costs a new HTTP/2 stream and a task each (1,000 sidecars
with a 10 s TTL renew 300 times a second).

Requests go out on the stream as they come; etcd answers each with the lease's ID and its TTL
(0 or less: the lease is gone), in order, so an answer resolves the oldest renewal waiting for
that ID. When the stream breaks, every renewal waiting fails with the error and the next one
opens a new stream.
"""
from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc


class KeepAlives:
    def __init__(self, open_stream: Callable[[AsyncIterator[Any]], Any],
                 request: Callable[[int], Any]) -> None:
        """open_stream(requests): a LeaseKeepAlive call; request(lease_id): its request."""
        self._open = open_stream
        self._request = request
        self._requests: asyncio.Queue[Any] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, collections.deque[asyncio.Future[int]]] = {}

    async def renew(self, lease_id: int, timeout: float) -> int:
        """The lease's TTL after renewing it (0 or less: it is gone). Raises the stream's
        grpc.aio.AioRpcError, or TimeoutError."""
        if self._reader is None or self._reader.done():
            self._start()
        assert self._requests is not None
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(lease_id, collections.deque()).append(future)
        self._requests.put_nowait(self._request(lease_id))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            waiting = self._waiting.get(lease_id)
            if waiting is not None and future in waiting and not future.done():
                waiting.remove(future)  # gave up: etcd's answer goes to the next in line
                if not waiting:
                    del self._waiting[lease_id]

    def _start(self) -> None:
        requests: asyncio.Queue[Any] = asyncio.Queue()

        async def send() -> AsyncIterator[Any]:
            while (request := await requests.get()) is not None:
                yield request

        self._requests = requests
        self._reader = asyncio.get_running_loop().create_task(self._read(self._open(send()),
                                                                         requests))

    async def _read(self, call: Any, requests: asyncio.Queue[Any]) -> None:
        error: BaseException = ConnectionError("etcd ended the lease keep-alive stream")
        try:
            async for reply in call:
                waiting = self._waiting.get(reply.ID)
                if not waiting:
                    continue  # its renewal gave up already
                future = waiting.popleft()
                if not waiting:
                    del self._waiting[reply.ID]
                if not future.done():
                    future.set_result(int(reply.TTL))
        except grpc.aio.AioRpcError as err:
            error = err
        except asyncio.CancelledError:
            error = ConnectionError("the registry is stopping")
            raise
        finally:
            requests.put_nowait(None)
            call.cancel()
            for waiting in self._waiting.values():
                for future in waiting:
                    if not future.done():
                        future.set_exception(error)
            self._waiting.clear()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
