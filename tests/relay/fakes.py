"""A transport that records what the relay writes, and peers that record what they read, for
tests without sockets."""
from __future__ import annotations

import asyncio
from typing import Any

from grpcmesh.relay import frames as f
from grpcmesh.relay.peer import Flusher, Leg, Peer
from tests.h2raw import Frame, parse_frames


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

    def frames(self) -> list[Frame]:
        """The frames written since the last call."""
        out, _ = parse_frames(bytes(self.written))
        self.written = bytearray()
        return out


def attach(peer: Peer) -> FakeTransport:
    transport = FakeTransport()
    transport.protocol = peer
    peer.connection_made(transport)  # type: ignore[arg-type]
    return transport


class Recorder(Peer):
    """A peer whose side only records what it is handed."""

    def __init__(self, flusher: Flusher) -> None:
        super().__init__(flusher)
        self.events: list[tuple[Any, ...]] = []

    def on_data(self, leg: Leg, payload: bytes, end: bool, length: int) -> None:
        self.events.append(("data", leg.sid, payload, end, length))

    def on_headers(self, sid: int, block: bytes, end: bool) -> None:
        self.events.append(("headers", sid, block, end))

    def on_reset(self, leg: Leg, code: int, finished: bool, answered: bool) -> None:
        self.events.append(("reset", leg.sid, code))

    def on_goaway(self, last: int, code: int, debug: bytes) -> None:
        self.events.append(("goaway", last, code, debug))


def pair() -> tuple[Flusher, Recorder, FakeTransport, Recorder, FakeTransport]:
    """A source peer and a destination peer, as the two sides of a relayed call."""
    flusher = Flusher()
    src, dst = Recorder(flusher), Recorder(flusher)
    return flusher, src, attach(src), dst, attach(dst)


def legs(src: Peer, dst: Peer, sid: int = 1) -> tuple[Leg, Leg]:
    """A call's two legs: sid on src, relayed to sid on dst."""
    a, b = Leg(src, sid, None), Leg(dst, sid, None)
    src.streams[sid], dst.streams[sid] = a, b
    return a, b


def data_payloads(frames: list[Frame]) -> list[bytes]:
    return [p for kind, _, _, p in frames if kind == f.DATA]


def goaway_code(frames: list[Frame]) -> int | None:
    codes = [int.from_bytes(p[4:8], "big") for kind, _, _, p in frames if kind == f.GOAWAY]
    return codes[-1] if codes else None
