"""What a connection writes: frames queued while one event is handled and written once at its
end (Flusher), bounded for a peer that does not read, and the close that ends the writing.

A peer whose output is over limits.write_buffer_bytes does not read (the transport calls
Peer.pause_writing): DATA for it waits in its streams' windows, uncredited (room() is 0), and it
is not read either, so it cannot make us answer more (PING, SETTINGS). Control frames queued for
it while it does not read are counted, and past limits.max_unread_control_bytes the connection
is aborted.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from grpcmesh.clock import Clock
from grpcmesh.relay import frames as f
from grpcmesh.relay.limits import RelayLimits

log = logging.getLogger(__name__)

LINGER = 1.0  # seconds a connection closed for an error keeps reading (see Output.close)


class Flusher:
    """Writes go out once per event: every peer written to while handling one read (or one
    timer or task) gets a single transport.write with everything queued for it."""

    __slots__ = ("dirty",)

    def __init__(self) -> None:
        self.dirty: list[Output] = []

    def flush(self) -> None:
        while self.dirty:
            dirty, self.dirty = self.dirty, []
            for peer in dirty:
                peer.queued = False
                if peer.out:
                    data = b"".join(peer.out)
                    peer.out.clear()
                    peer.out_bytes = 0
                    if peer.transport is not None and not peer.gone:
                        peer.transport.write(data)  # may call peer.pause_writing()
                if peer.starved and not peer.paused:
                    peer.starved = False  # DATA that waited for this flush: its turn now
                    peer.drain_blocked()


def call_soon_flushed(flusher: Flusher, fn: Callable[[], None]) -> None:
    """Run fn now and send what it queued (for code outside data_received)."""
    try:
        fn()
    finally:
        flusher.flush()


class Output:
    """A connection's output queue: the base of its flow control (flow.py) and of Peer."""

    __slots__ = ("clock", "closing", "flusher", "gone", "limits", "out", "out_bytes", "paused",
                 "paused_at", "queued", "starved", "transport", "unread_control")

    yielding: bool  # Peer's: reading waits for the next turn of the loop

    def __init__(self, flusher: Flusher, limits: RelayLimits, clock: Clock) -> None:
        self.flusher = flusher
        self.limits = limits
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        self.out_bytes = 0  # in `out`, not yet written to the transport
        self.queued = False  # in flusher.dirty
        self.gone = False  # the connection is closed
        self.closing = False  # close() was called: nothing more is written
        self.paused = False  # the transport's buffer is over write_buffer_bytes (pause_writing)
        self.paused_at = 0.0
        self.starved = False  # DATA waits for `out` to be written (see room)
        self.unread_control = 0  # control-frame bytes queued while paused

    def queue(self, data: bytes) -> None:
        if self.closing:
            return
        self.out.append(data)
        self.out_bytes += len(data)
        if not self.queued:
            self.queued = True
            self.flusher.dirty.append(self)

    def queue_control(self, data: bytes) -> None:
        """A frame that carries nothing for a call (a reply, a WINDOW_UPDATE, a reset): queued
        whatever the output's size, but a peer that does not read them loses its connection."""
        self.queue(data)
        if self.paused:
            self.unread_control += len(data)
            if self.unread_control > self.limits.max_unread_control_bytes and not self.closing:
                self.close(f.ENHANCE_YOUR_CALM, f"over {self.limits.max_unread_control_bytes} "
                                                "bytes of control frames left unread")

    def room(self) -> int:
        """How many DATA bytes may be queued for the peer now."""
        if self.paused:
            return 0
        room = self.limits.write_buffer_bytes - self.out_bytes
        if room <= 0:
            self.starved = True  # Flusher.flush drains the blocked legs once `out` is written
            return 0
        return room

    def pause_writing(self) -> None:
        """The transport's buffer passed write_buffer_bytes: the peer does not read. Stop
        reading it (it cannot make us answer more) and stop crediting what is meant for it."""
        self.paused = True
        self.paused_at = self.clock.now()
        self.unread_control = 0
        if self.transport is not None and not self.gone:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.gone and not self.closing and \
                not self.yielding:
            self.transport.resume_reading()
        call_soon_flushed(self.flusher, self.drain_blocked)

    def close(self, code: int = f.NO_ERROR, why: str = "") -> None:
        if self.transport is not None and not self.gone and not self.closing:
            if code != f.NO_ERROR:
                self.note_close(why)
                self.queue(f.goaway(self.last_stream(), code, why.encode()[:200]))
            self.flusher.flush()
            self.closing = True
            transport = self.transport
            if self.paused:  # it does not read: what is queued would never leave
                transport.abort()
            elif code != f.NO_ERROR and transport.can_write_eof():
                # A lingering close (as nginx's): the GOAWAY goes out with a FIN, and what the
                # peer still sends is read and dropped for a while, because closing a socket
                # with unread input sends a TCP reset, which can destroy the GOAWAY before the
                # peer reads it.
                transport.write_eof()
                asyncio.get_running_loop().call_later(LINGER, transport.abort)
            else:
                transport.close()

    def drain_blocked(self) -> None:
        """Queue the DATA that waited for room (flow.py fills this in)."""

    def note_close(self, why: str) -> None:
        log.info("closing an HTTP/2 connection: %s", why)

    def last_stream(self) -> int:
        """The last stream id the peer opened that we took (GOAWAY's)."""
        return 0
