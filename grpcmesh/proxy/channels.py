"""One reused grpc.aio channel per upstream address, closed when no endpoint uses it."""
from __future__ import annotations

import asyncio
from typing import Any

import grpc

from grpcmesh.server_util import reconnect_options

_READY = grpc.ChannelConnectivity.READY
_FAILED = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)


class Channels:
    def __init__(self, max_message_bytes: int, close_grace: float = 10.0) -> None:
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.enable_retries", 0),
            *reconnect_options(),
        ]
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._calls: dict[tuple[str, str, str], Any] = {}
        self._close_grace = close_grace
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address, self._options)
        return channel

    def ready(self, address: str) -> bool:
        """Whether address has a connected channel now (asks it to connect if idle)."""
        state = self.get(address).get_state(try_to_connect=True)
        return bool(state == _READY)

    def call(self, address: str, method: str, kind: str) -> Any:
        """The multicallable for method on address, made once (kind: "unary_unary", ...)."""
        key = (address, method, kind)
        multicallable = self._calls.get(key)
        if multicallable is None:
            multicallable = getattr(self.get(address), kind)(method)
            if len(self._calls) < 100_000:  # method names come from clients
                self._calls[key] = multicallable
        return multicallable

    def discard(self, address: str) -> None:
        """Stop using address; calls in flight on it get close_grace seconds to finish."""
        for key in [k for k in self._calls if k[0] == address]:
            del self._calls[key]
        channel = self._channels.pop(address, None)
        if channel is not None:
            task = asyncio.get_running_loop().create_task(channel.close(self._close_grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        self._calls.clear()
        await asyncio.gather(*(c.close() for c in channels), *self._closing,
                             return_exceptions=True)


async def connected(channel: grpc.aio.Channel, timeout: float) -> bool:
    """Whether the channel is (or gets, within timeout) connected.

    A call is only started on a connected channel, so when an instance refuses the connection
    the call has not left and may safely go to another instance.
    """
    state = channel.get_state(try_to_connect=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while state != _READY:
        remaining = deadline - loop.time()
        if state in _FAILED or remaining <= 0:
            return False
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        except TimeoutError:
            return False
        state = channel.get_state()
    return True
