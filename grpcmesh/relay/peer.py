"""One HTTP/2 connection of the relay: frames in, frames out, flow control and HPACK state.

The relay joins two connections per call, a client's (Downstream) and an upstream's, and each
call has one stream on each: a Leg. Bytes are relayed with end-to-end backpressure: what a peer
sends us on a stream is credited back to it (WINDOW_UPDATE) only once it has been written to
the other side, which may only be sent as much as its own windows allow, and nothing at all
while that side's output is over limits.write_buffer_bytes (a peer that does not read). So the
relay holds at most one stream window per stream. Connection windows are credited as DATA
arrives: a connection shared by many calls (an upstream) is never held up by one call whose
client does not read, and its memory is bounded by its streams' windows.

A peer whose output is over the limit is not read either, so it cannot make us answer more
(PING, SETTINGS); control frames queued for it while it does not read are counted, and past
limits.max_unread_control_bytes the connection is aborted. limits.py has the rules that end an
abusive connection (empty frames, CONTINUATION chains, control-frame floods).

Header blocks: the relay advertises SETTINGS_HEADER_TABLE_SIZE=0. Once a peer acknowledged
that and a header block of its, decoded, showed that it emptied its table, its blocks reference
no dynamic table: they are forwarded byte for byte, and the same block always decodes to the
same headers (so accepted blocks are cached, blocks.py). Blocks before that, and every block of
a peer that ignores the setting, are decoded and re-encoded (without Huffman coding: hpack's
encoder is quadratic in a value's length).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import hpack

from grpcmesh.clock import Clock, MonotonicClock
from grpcmesh.relay import frames as f
from grpcmesh.relay.blocks import BlockCache
from grpcmesh.relay.limits import FrameGuard, RelayLimits

log = logging.getLogger(__name__)

# The connection window we grant: credited on receipt, so it bounds no memory (stream windows
# do); large, so that it never slows a connection down.
CONN_WINDOW = 16 << 20
MAX_BLOCK = 256 * 1024  # a header block beyond this ends the connection (ENHANCE_YOUR_CALM)
# Decoded header lists up to this size are read, so that one over the proxy's metadata limit
# fails its call (RESOURCE_EXHAUSTED), not the connection.
MAX_HEADER_LIST = 1 << 20
LINGER = 1.0  # seconds a connection closed for an error keeps reading (see Peer.close)
# After this much input, a connection stops being read until the next turn of the event loop:
# libuv reads a busy socket up to 32 times (256 KiB each, uvloop) in one turn, so one client's
# flood of small frames could otherwise hold the loop, and every other client, for a second.
READ_TURN = 256 * 1024
FRAMES_PER_TURN = 200  # ... and after this many frames (a HEADERS costs ~20 us: ~4 ms a turn)

Headers = list[tuple[str, str]]
_CONNECTION_FRAMES = frozenset({f.SETTINGS, f.PING, f.GOAWAY})


class Flusher:
    """Writes go out once per event: every peer written to while handling one read (or one
    timer or task) gets a single transport.write with everything queued for it."""

    __slots__ = ("dirty",)

    def __init__(self) -> None:
        self.dirty: list[Peer] = []

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


class Leg:
    """A call's stream on one connection."""

    __slots__ = ("call", "ended_in", "ended_out", "other", "peer", "pending", "recv", "sid",
                 "then_reset", "unacked", "window")

    def __init__(self, peer: Peer, sid: int, call: Any) -> None:
        self.peer = peer
        self.sid = sid
        self.call = call
        self.window = peer.peer_initial  # what we may still send on it
        self.unacked = 0  # bytes received on it not yet credited back
        self.recv = peer.limits.stream_window  # what the peer may still send on it
        self.other: Leg | None = None  # the call's leg on the other connection
        # (frames, end_stream, source leg, credit, is_headers): waiting for window
        self.pending: list[tuple[bytes, bool, Leg | None, int, bool]] = []
        self.ended_in = False  # the peer ended its side (END_STREAM or RST)
        self.ended_out = False  # we ended ours
        self.then_reset = False  # once ended_out, RST_STREAM(NO_ERROR): stop sending to us


class Peer(asyncio.Protocol):
    """Frame parsing and connection upkeep shared by both sides; the sides fill in on_*."""

    # Slots: a peer's attributes are read on every frame, and a slot is cheaper than a dict.
    __slots__ = ("_partial", "_settings_waiter", "acked", "blocked", "buf", "cache", "caller",
                 "clock", "closing", "conn_unacked", "decoder", "encoder", "expect_preface",
                 "flusher", "fresh", "gone", "got_settings", "guard", "limits", "out",
                 "out_bytes",
                 "paused", "paused_at", "peer_initial", "peer_max_frame", "peer_max_streams",
                 "queued", "read_bytes", "recv_window", "starved", "streams", "transport",
                 "unread_control", "verbatim", "window", "yielding")
    PREFACE_FIRST = False  # the peer opens with the HTTP/2 connection preface (a client)

    def __init__(self, flusher: Flusher, limits: RelayLimits = RelayLimits(),
                 cache: BlockCache | None = None, clock: Clock = MonotonicClock()) -> None:
        self.flusher = flusher
        self.expect_preface = self.PREFACE_FIRST
        self.limits = limits
        self.cache = cache if cache is not None else BlockCache()
        self.clock = clock
        self.guard = FrameGuard(limits, clock.now())
        self.fresh = False  # the last block read_block returned was decoded, not cached
        self.transport: asyncio.Transport | None = None
        self.caller = ""  # the peer's address, "host:port" (for a client: CallRecord.caller)
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.out_bytes = 0  # in `out`, not yet written to the transport
        self.queued = False
        self.gone = False  # the connection is closed
        self.closing = False  # close() was called: nothing more is written
        self.paused = False  # the transport's buffer is over write_buffer_bytes (pause_writing)
        self.paused_at = 0.0
        self.starved = False  # DATA waits for `out` to be written (see _room)
        self.unread_control = 0  # control-frame bytes queued while paused
        self.read_bytes = 0  # read since the last yield (READ_TURN)
        self.yielding = False  # reading paused until the next turn of the loop
        self.streams: dict[int, Leg] = {}
        self.blocked: dict[Leg, None] = {}  # legs with pending frames, in order
        self.window = f.DEFAULT_WINDOW  # connection send window
        self.peer_initial = f.DEFAULT_WINDOW
        self.peer_max_frame = f.DEFAULT_FRAME_SIZE
        self.peer_max_streams: int | None = None
        self.conn_unacked = 0
        self.recv_window = f.DEFAULT_WINDOW  # what the peer may still send on the connection
        self.decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self.encoder = hpack.Encoder()
        self.encoder.header_table_size = 0  # what we send uses no dynamic table either
        self.acked = False  # the peer applied our SETTINGS
        self.verbatim = False  # ... and a block of its showed its table emptied: see read_block
        self.got_settings = False  # the peer's first SETTINGS arrived
        self._settings_waiter: asyncio.Future[bool] | None = None
        self._partial: tuple[int, bool, bytearray] | None = None  # HEADERS awaiting CONTINUATION

    async def handshake(self) -> bool:
        """Whether the peer's SETTINGS arrive (False: the connection closed first)."""
        if self.got_settings or self.gone:
            return self.got_settings
        if self._settings_waiter is None:
            self._settings_waiter = asyncio.get_running_loop().create_future()
        return await self._settings_waiter

    # -- output -------------------------------------------------------------------------------

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

    def encode(self, headers: Headers) -> bytes:
        return bytes(self.encoder.encode(headers, huffman=False))

    def hello(self, settings: list[tuple[int, int]]) -> bytes:
        self.recv_window = CONN_WINDOW
        return f.settings_frame(settings) + f.window_update(0, CONN_WINDOW - f.DEFAULT_WINDOW)

    def settings(self) -> list[tuple[int, int]]:
        """What we ask of the peer in our SETTINGS."""
        return [(f.HEADER_TABLE_SIZE, 0), (f.INITIAL_WINDOW_SIZE, self.limits.stream_window)]

    def _room(self) -> int:
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

    def drain_blocked(self) -> None:
        for leg in list(self.blocked):
            self._drain(leg)
            if self.window <= 0 or self.paused or self.starved:
                break

    def send_data(self, leg: Leg, payload: bytes, end: bool, src: Leg | None, credit: int
                  ) -> None:
        """Send DATA on leg as its windows allow; the rest waits for WINDOW_UPDATE. src is
        credited credit bytes once they are sent."""
        if leg.ended_out:
            if src is not None:
                src.peer.credit(src, credit)
            return
        n = len(payload)
        if not leg.pending and n <= leg.window and n <= self.window and \
                not self.paused and self.out_bytes + n <= self.limits.write_buffer_bytes:
            leg.window -= n
            self.window -= n
            self.queue(f.frame(f.DATA, f.END_STREAM if end else 0, leg.sid, payload))
            if end:
                self.ended(leg)
            if src is not None:
                src.peer.credit(src, credit)
            return
        leg.pending.append((payload, end, src, credit, False))
        self.blocked[leg] = None
        self._drain(leg)

    def send_headers(self, leg: Leg, block: bytes, end: bool) -> None:
        if leg.ended_out:
            return
        data = f.header_frames(leg.sid, block, end, self.peer_max_frame)
        if leg.pending:  # after the DATA still waiting for window
            leg.pending.append((data, end, None, 0, True))
            return
        self.queue(data)
        if end:
            self.ended(leg)

    def _drain(self, leg: Leg) -> None:
        pending = leg.pending
        while pending:
            payload, end, src, credit, is_headers = pending[0]
            if is_headers:
                pending.pop(0)
                self.queue(payload)
                if end:
                    self.ended(leg)
                continue
            n = len(payload)
            room = min(leg.window, self.window, self._room())
            if n <= room:
                pending.pop(0)
                leg.window -= n
                self.window -= n
                self.queue(f.frame(f.DATA, f.END_STREAM if end else 0, leg.sid, payload))
                if src is not None:
                    src.peer.credit(src, credit)
                if end:
                    self.ended(leg)
            elif room > 0:
                leg.window -= room
                self.window -= room
                self.queue(f.frame(f.DATA, 0, leg.sid, payload[:room]))
                pending[0] = (payload[room:], end, src, credit - room, False)
                if src is not None:
                    src.peer.credit(src, room)
            else:
                return
        self.blocked.pop(leg, None)

    def credit(self, leg: Leg, n: int) -> None:
        """n bytes received from this peer on leg have been relayed or dropped: it may send as
        many more on that stream (the connection's window was credited on receipt)."""
        if n <= 0 or leg.ended_in:
            return
        leg.unacked += n
        if leg.unacked >= self.limits.stream_window // 2:
            self.queue_control(f.window_update(leg.sid, leg.unacked))
            leg.recv += leg.unacked
            leg.unacked = 0

    def _credit_connection(self) -> None:
        """The connection window is credited as DATA arrives (see the module's docstring),
        in batches of half of it."""
        self.queue_control(f.window_update(0, self.conn_unacked))
        self.recv_window += self.conn_unacked
        self.conn_unacked = 0

    def reset(self, leg: Leg, code: int) -> None:
        """End leg with RST_STREAM (unless it already ended on both sides)."""
        if not (leg.ended_out and leg.ended_in):
            self.queue_control(f.rst_stream(leg.sid, code))
        self.reset_pending(leg)
        leg.ended_in = leg.ended_out = True
        self.forget(leg)

    def reset_pending(self, leg: Leg) -> None:
        for _, _, src, credit, _ in leg.pending:
            if src is not None:  # the stream too, if its sender goes on (credit checks)
                src.peer.credit(src, credit)
        leg.pending.clear()
        self.blocked.pop(leg, None)

    def ended(self, leg: Leg) -> None:
        leg.ended_out = True
        if leg.ended_in:
            self.forget(leg)
        elif leg.then_reset:
            self.reset(leg, f.NO_ERROR)

    def end_then_reset(self, leg: Leg) -> None:
        """What the peer sends on leg is no longer wanted: once what is queued for it has gone
        out, RST_STREAM(NO_ERROR), as a gRPC server does after its trailers (RFC 9113 8.1)."""
        if leg.ended_in:
            return
        if leg.ended_out:
            self.reset(leg, f.NO_ERROR)
        else:
            leg.then_reset = True

    def forget(self, leg: Leg) -> None:
        if self.streams.get(leg.sid) is leg:
            del self.streams[leg.sid]
            self.stream_closed(leg)

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

    def eof_received(self) -> bool | None:
        return None  # the peer is done sending: the transport closes

    # -- input --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        # pause_writing() above this, resume_writing() once a quarter of it is left
        self.transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.buf = bytearray()
        self.out.clear()
        self.out_bytes = 0
        self._partial = None
        if self._settings_waiter is not None and not self._settings_waiter.done():
            self._settings_waiter.set_result(False)
        legs = list(self.streams.values())
        self.streams.clear()
        for leg in legs:
            self.reset_pending(leg)  # what waited to be sent here is credited to its source
        self.blocked.clear()
        self.lost(legs)  # legs still tell how far they got: ended_in means the peer finished
        for leg in legs:
            leg.ended_in = leg.ended_out = True
        self.flusher.flush()

    def _yield_reading(self) -> bool:
        """Let the other connections be read before this one is read (and what is buffered
        of it processed) again: READ_TURN, FRAMES_PER_TURN. False: there is no loop to yield
        to (unit tests drive peers by hand)."""
        if self.yielding:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        assert self.transport is not None
        self.yielding = True
        self.transport.pause_reading()
        loop.call_soon(self._read_again)
        return True

    def _read_again(self) -> None:
        self.yielding = False
        if self.gone or self.closing:
            return
        if len(self.buf) >= 9:
            self._process()
        if not self.yielding and not self.paused and not self.closing and not self.gone:
            assert self.transport is not None
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # lingering after an error (see close)
        self.buf += data
        self.read_bytes += len(data)
        if self.read_bytes >= READ_TURN:
            self.read_bytes = 0
            self._yield_reading()
        self._process()

    def _process(self) -> None:
        """Handle the whole frames in buf, at most FRAMES_PER_TURN of them before yielding."""
        buf = self.buf
        pos = 0
        budget = FRAMES_PER_TURN
        try:
            if self.expect_preface:
                if len(buf) < 24:
                    return
                if bytes(buf[:24]) != f.PREFACE:
                    raise f.ProtocolError("not an HTTP/2 connection preface (is the client "
                                          "speaking gRPC over cleartext HTTP/2?)")
                self.expect_preface = False
                pos = 24
            n = len(buf)
            while n - pos >= 9:
                budget -= 1
                if budget < 0:
                    if self._yield_reading():
                        break  # the rest waits for the next turn (_read_again)
                    budget = FRAMES_PER_TURN
                length = int.from_bytes(buf[pos:pos + 3], "big")
                if length > f.DEFAULT_FRAME_SIZE:  # the SETTINGS_MAX_FRAME_SIZE we advertise
                    raise f.ProtocolError(f"a frame of {length} bytes; the limit is "
                                          f"{f.DEFAULT_FRAME_SIZE}", f.FRAME_SIZE_ERROR)
                end = pos + 9 + length
                if end > n:
                    break
                kind = buf[pos + 3]
                flags = buf[pos + 4]
                sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[pos + 9:end])
                pos = end
                if kind == f.DATA:
                    if self._partial is not None:
                        raise f.ProtocolError("DATA inside a header block")
                    leg = self.streams.get(sid)
                    if flags & f.PADDED:
                        payload = f.strip_padding(flags, payload, "DATA")
                    # A peer that overruns the windows would make us buffer without bound.
                    self.recv_window -= length
                    if self.recv_window < 0:
                        raise f.ProtocolError("DATA beyond the connection's flow-control "
                                              "window", f.FLOW_CONTROL_ERROR)
                    self.conn_unacked += length  # the connection window: credited at once
                    if self.conn_unacked >= CONN_WINDOW // 2:
                        self._credit_connection()
                    if not payload and not flags & f.END_STREAM:
                        self.guard.payload(True)
                    elif self.guard.empty and length:
                        self.guard.empty = 0
                    if leg is None or leg.ended_in:
                        if leg is None and (sid == 0 or self.idle(sid)):
                            raise f.ProtocolError(f"DATA on stream {sid}, which is not open")
                    else:
                        leg.recv -= length
                        if leg.recv < 0:
                            raise f.ProtocolError(f"DATA beyond stream {sid}'s flow-control "
                                                  "window", f.FLOW_CONTROL_ERROR)
                        end_stream = bool(flags & f.END_STREAM)
                        if end_stream:
                            leg.ended_in = True
                        self.on_data(leg, payload, end_stream, length)
                        if end_stream and leg.ended_out:
                            self.forget(leg)
                elif kind == f.HEADERS or kind == f.CONTINUATION:
                    self._header_frame(kind, sid, flags, payload)
                else:
                    self._control_frame(kind, flags, sid, payload)
                if self.gone or self.closing:
                    return
            if self._partial is not None and len(self._partial[2]) > MAX_BLOCK:
                raise f.ProtocolError("header block too large", f.ENHANCE_YOUR_CALM)
        except f.ProtocolError as err:
            del buf[:]
            self.close(err.code, str(err))
            return
        except hpack.HPACKError as err:
            del buf[:]
            self.close(f.COMPRESSION_ERROR, f"bad header block: {err}")
            return
        except Exception:  # a bug of ours: this connection ends, the relay goes on
            log.exception("relay error; closing the connection")
            del buf[:]
            self.close(f.INTERNAL_ERROR, "internal error in the relay")
            return
        del buf[:pos]
        self.after_read()
        self.flusher.flush()

    def _header_frame(self, kind: int, sid: int, flags: int, payload: bytes) -> None:
        if kind == f.HEADERS:
            if self._partial is not None:
                raise f.ProtocolError("HEADERS while a header block was unfinished")
            payload = f.strip_padding(flags, payload, "HEADERS")
            if flags & f.PRIORITY:
                payload = payload[5:]
            self.guard.continuations = 0
            self._partial = (sid, bool(flags & f.END_STREAM), bytearray(payload))
        else:
            if self._partial is None or self._partial[0] != sid:
                raise f.ProtocolError("CONTINUATION without its HEADERS")
            self.guard.continuation()
            self._partial[2].extend(payload)
        if not payload and not flags & (f.END_HEADERS | f.END_STREAM):
            self.guard.payload(True)
        elif self.guard.empty:
            self.guard.empty = 0
        if flags & f.END_HEADERS:
            sid, end, block = self._partial
            self._partial = None
            self.on_headers(sid, bytes(block), end)

    def _control_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._partial is not None:
            raise f.ProtocolError("a frame inside a header block")
        if kind > f.CONTINUATION or kind == f.PRIORITY_FRAME or \
                (kind in (f.PING, f.SETTINGS) and not flags & f.ACK):
            self.guard.control(self.clock.now())
        if kind == f.WINDOW_UPDATE:
            if len(payload) != 4:
                raise f.ProtocolError("WINDOW_UPDATE of the wrong size", f.FRAME_SIZE_ERROR)
            increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if increment == 0:  # a stream error by RFC 9113, which may end the connection
                raise f.ProtocolError(f"WINDOW_UPDATE of 0 on stream {sid}")
            if sid == 0:
                self.window += increment
                if self.window > f.MAX_WINDOW:
                    raise f.ProtocolError("connection window over 2^31-1", f.FLOW_CONTROL_ERROR)
                for leg in list(self.blocked):
                    self._drain(leg)
                    if self.window <= 0:
                        break
            else:
                one = self.streams.get(sid)
                if one is not None:
                    one.window += increment
                    if one.window > f.MAX_WINDOW:
                        raise f.ProtocolError(f"stream {sid}'s window over 2^31-1",
                                              f.FLOW_CONTROL_ERROR)
                    if one.pending:
                        self._drain(one)
        elif kind == f.RST_STREAM:
            if len(payload) != 4:
                raise f.ProtocolError("RST_STREAM of the wrong size", f.FRAME_SIZE_ERROR)
            if sid == 0:
                raise f.ProtocolError("RST_STREAM on stream 0")
            gone = self.streams.get(sid)
            if gone is not None:
                finished = gone.ended_in  # the peer had already ended its side
                answered = gone.ended_out  # ... and we ours
                gone.ended_in = gone.ended_out = True
                self.reset_pending(gone)
                self.forget(gone)
                self.on_reset(gone, int.from_bytes(payload, "big"), finished, answered)
            elif self.idle(sid):
                raise f.ProtocolError(f"RST_STREAM on stream {sid}, which was never opened")
        elif kind in _CONNECTION_FRAMES and sid != 0:
            raise f.ProtocolError(f"a connection-level frame (type {kind}) on stream {sid}")
        elif kind == f.SETTINGS:
            if flags & f.ACK:
                if payload:
                    raise f.ProtocolError("SETTINGS ACK with a payload", f.FRAME_SIZE_ERROR)
                # The peer now encodes with a table of at most 0 bytes; read_block waits for
                # a block that shows it before forwarding blocks undecoded.
                self.acked = True
                return
            for key, value in f.parse_settings(payload):
                if key == f.INITIAL_WINDOW_SIZE:
                    if value > f.MAX_WINDOW:
                        raise f.ProtocolError("INITIAL_WINDOW_SIZE over 2^31-1",
                                              f.FLOW_CONTROL_ERROR)
                    delta = value - self.peer_initial
                    self.peer_initial = value
                    for leg in self.streams.values():
                        leg.window += delta
                    if delta > 0:
                        for leg in list(self.blocked):
                            self._drain(leg)
                elif key == f.MAX_FRAME_SIZE:
                    if not f.DEFAULT_FRAME_SIZE <= value <= f.LARGEST_FRAME_SIZE:
                        raise f.ProtocolError(f"SETTINGS_MAX_FRAME_SIZE of {value}")
                    self.peer_max_frame = value
                elif key == f.ENABLE_PUSH and value > 1:
                    raise f.ProtocolError(f"SETTINGS_ENABLE_PUSH of {value}")
                elif key == f.MAX_CONCURRENT_STREAMS:
                    self.peer_max_streams = value
            self.queue_control(f.frame(f.SETTINGS, f.ACK, 0))
            if not self.got_settings:
                self.got_settings = True
                if self._settings_waiter is not None and not self._settings_waiter.done():
                    self._settings_waiter.set_result(True)
        elif kind == f.PING:
            if len(payload) != 8:
                raise f.ProtocolError("PING of the wrong size", f.FRAME_SIZE_ERROR)
            if not flags & f.ACK:
                self.queue_control(f.frame(f.PING, f.ACK, 0, payload))
            else:
                self.on_ping_ack(payload)
        elif kind == f.GOAWAY:
            if len(payload) < 8:
                raise f.ProtocolError("GOAWAY too short", f.FRAME_SIZE_ERROR)
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            self.on_goaway(last, code, payload[8:])
        elif kind == f.PUSH_PROMISE:
            raise f.ProtocolError("PUSH_PROMISE, though push is disabled")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 asks.

    def read_block(self, block: bytes, need: bool = True) -> tuple[Headers | None, bool]:
        """(the headers, or None when not needed and not decoded; whether the block can be
        forwarded byte for byte). Every block must pass here: it keeps the HPACK state."""
        self.fresh = False
        if self.verbatim:
            if not need:
                return None, True
            headers = self.cache.blocks.get(block)
            if headers is None:
                headers = [(str(k), str(v)) for k, v in self.decoder.decode(block)]
                self.fresh = True
            return headers, True
        decoder = self.decoder
        headers = [(str(k), str(v)) for k, v in decoder.decode(block)]
        self.fresh = True
        if self.acked and decoder.header_table.maxsize == 0:
            # The block began with the size update RFC 7541 (4.2) asks for after our SETTINGS:
            # from now on the peer's blocks refer to no dynamic table, and any that announces
            # a table is an error (COMPRESSION_ERROR). A peer that never sends the update keeps
            # having its blocks decoded and re-encoded, which is slower but correct.
            self.verbatim = True
            decoder.max_allowed_table_size = 0
            return headers, True
        return headers, False

    def keep(self, block: bytes, headers: Headers) -> None:
        """block, just read by read_block, was accepted: later copies of it need no decoding
        (callers skip this when `fresh` is False: the block came from the cache)."""
        self.fresh = False
        if self.verbatim:
            self.cache.accept(block, headers)

    # -- filled in by the two sides -----------------------------------------------------------

    def on_data(self, leg: Leg, payload: bytes, end: bool, length: int) -> None: ...
    def on_headers(self, sid: int, block: bytes, end: bool) -> None: ...
    def on_reset(self, leg: Leg, code: int, finished: bool, answered: bool) -> None: ...
    def on_goaway(self, last: int, code: int, debug: bytes) -> None: ...
    def on_ping_ack(self, payload: bytes) -> None: ...
    def stream_closed(self, leg: Leg) -> None: ...
    def after_read(self) -> None: ...

    def note_close(self, why: str) -> None:
        log.info("closing an HTTP/2 connection: %s", why)
    def lost(self, legs: list[Leg]) -> None: ...
    def last_stream(self) -> int:
        return 0

    def idle(self, sid: int) -> bool:
        """Whether stream sid was never opened (RFC 9113 5.1)."""
        return False


def call_soon_flushed(flusher: Flusher, fn: Callable[[], None]) -> None:
    """Run fn now and send what it queued (for code outside data_received)."""
    try:
        fn()
    finally:
        flusher.flush()
