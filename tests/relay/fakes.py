"""A transport that records what the relay writes, for tests without sockets."""
from __future__ import annotations

import asyncio
from typing import Any

from grpcmesh.relay.peer import Peer
from tests.h2raw import parse_frames


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.protocol: Peer | None = None
        self.reading = True
        # Unlike a socket, nothing is read by the other side until drain() says so.
        self.buffered = 0
        self.high: int | None = None
        self.paused_writing = False

    def write(self, data: bytes) -> None:
        self.written += data
        self.buffered += len(data)
        if self.high is not None and self.buffered > self.high and not self.paused_writing:
            self.paused_writing = True
            assert self.protocol is not None
            self.protocol.pause_writing()

    def drain(self) -> None:
        """The peer read everything: as asyncio's transport, resume_writing() below low."""
        self.buffered = 0
        if self.paused_writing:
            self.paused_writing = False
            assert self.protocol is not None
            self.protocol.resume_writing()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        """As asyncio's: the protocol hears connection_lost soon after, not during the call."""
        if not self.closed:
            self.closed = True
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            assert self.protocol is not None
            loop.call_soon(self.protocol.connection_lost, None)

    def can_write_eof(self) -> bool:
        return False

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def get_extra_info(self, name: str) -> Any:
        return None

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        """The frames written since the last call."""
        out, _ = parse_frames(bytes(self.written))
        self.written = bytearray()
        return out


def attach(peer: Peer) -> FakeTransport:
    transport = FakeTransport()
    transport.protocol = peer
    peer.connection_made(transport)  # type: ignore[arg-type]
    return transport
