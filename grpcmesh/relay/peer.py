"""One HTTP/2 connection of the relay: the asyncio protocol, its frame loop and its streams.

The relay joins two connections per call, a client's (Downstream) and an upstream's, and each
call has one stream on each: a Leg. A connection is read frame by frame (_process): DATA and
header blocks go to the side that owns the streams (on_data, on_headers), header blocks once
joined and read by the HPACK policy (headers.py), every other frame to control.py. A Peer is
built in layers, each a base class of the next so that the per-frame path makes no extra calls:
Output (output.py: the write queue, backpressure, close), FlowControl (flow.py: the windows),
Peer (reading). limits.py has the rules that end an abusive connection (empty frames,
CONTINUATION chains, control-frame floods).
"""
from __future__ import annotations

import asyncio
import logging
from typing import cast

import hpack

from grpcmesh.clock import Clock, MonotonicClock
from grpcmesh.relay import frames as f
from grpcmesh.relay.blocks import BlockCache
from grpcmesh.relay.control import control_frame
from grpcmesh.relay.flow import CONN_WINDOW, FlowControl, Leg
from grpcmesh.relay.headers import MAX_BLOCK, BlockAssembly, HeaderBlocks, Headers
from grpcmesh.relay.limits import FrameGuard, RelayLimits
from grpcmesh.relay.output import Flusher, call_soon_flushed

__all__ = ["Flusher", "Headers", "Leg", "Peer", "call_soon_flushed"]

log = logging.getLogger(__name__)

# After this much input, a connection stops being read until the next turn of the event loop:
# libuv reads a busy socket up to 32 times (256 KiB each, uvloop) in one turn, so one client's
# flood of small frames could otherwise hold the loop, and every other client, for a second.
READ_TURN = 256 * 1024
FRAMES_PER_TURN = 200  # ... and after this many frames (a HEADERS costs ~20 us: ~4 ms a turn)


class Peer(FlowControl, asyncio.Protocol):
    """Frame parsing and connection upkeep shared by both sides; the sides fill in on_*."""

    # Slots: a peer's attributes are read on every frame, and a slot is cheaper than a dict.
    __slots__ = ("_settings_waiter", "assembly", "blocks", "buf", "caller", "expect_preface",
                 "fresh", "got_settings", "guard", "peer_max_frame", "peer_max_streams",
                 "read_bytes", "streams", "yielding")
    PREFACE_FIRST = False  # the peer opens with the HTTP/2 connection preface (a client)

    def __init__(self, flusher: Flusher, limits: RelayLimits = RelayLimits(),
                 cache: BlockCache | None = None, clock: Clock = MonotonicClock()) -> None:
        super().__init__(flusher, limits, clock)  # FlowControl and Output
        self.expect_preface = self.PREFACE_FIRST
        self.blocks = HeaderBlocks(cache if cache is not None else BlockCache())
        self.guard = FrameGuard(limits, clock.now())
        self.fresh = False  # the last block read_block returned was decoded, not cached
        self.caller = ""  # the peer's address, "host:port" (for a client: CallRecord.caller)
        self.buf = bytearray()
        self.read_bytes = 0  # read since the last yield (READ_TURN)
        self.yielding = False  # reading paused until the next turn of the loop
        self.streams: dict[int, Leg] = {}
        self.peer_max_frame = f.DEFAULT_FRAME_SIZE
        self.peer_max_streams: int | None = None
        self.got_settings = False  # the peer's first SETTINGS arrived
        self._settings_waiter: asyncio.Future[bool] | None = None
        self.assembly = BlockAssembly(self.guard)  # HEADERS awaiting CONTINUATION

    async def handshake(self) -> bool:
        """Whether the peer's SETTINGS arrive (False: the connection closed first)."""
        if self.got_settings or self.gone:
            return self.got_settings
        if self._settings_waiter is None:
            self._settings_waiter = asyncio.get_running_loop().create_future()
        return await self._settings_waiter

    def settings_arrived(self) -> None:
        """The peer's SETTINGS arrived (control.py acknowledged them): handshake() is over."""
        if not self.got_settings:
            self.got_settings = True
            if self._settings_waiter is not None and not self._settings_waiter.done():
                self._settings_waiter.set_result(True)

    def encode(self, headers: Headers) -> bytes:
        return self.blocks.encode(headers)

    def hello(self, settings: list[tuple[int, int]]) -> bytes:
        self.recv_window = CONN_WINDOW
        return f.settings_frame(settings) + f.window_update(0, CONN_WINDOW - f.DEFAULT_WINDOW)

    def settings(self) -> list[tuple[int, int]]:
        """What we ask of the peer in our SETTINGS."""
        return [(f.HEADER_TABLE_SIZE, 0), (f.INITIAL_WINDOW_SIZE, self.limits.stream_window)]

    # -- a stream's end -----------------------------------------------------------------------

    def reset(self, leg: Leg, code: int) -> None:
        """End leg with RST_STREAM (unless it already ended on both sides)."""
        if not (leg.ended_out and leg.ended_in):
            self.queue_control(f.rst_stream(leg.sid, code))
        self.reset_pending(leg)
        leg.ended_in = leg.ended_out = True
        self.forget(leg)

    def ended(self, leg: Leg) -> None:
        """Our last frame on leg was queued (FlowControl)."""
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

    # -- input --------------------------------------------------------------------------------

    def eof_received(self) -> bool | None:
        return None  # the peer is done sending: the transport closes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        # pause_writing() above this, resume_writing() once a quarter of it is left
        self.transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.buf = bytearray()
        self.out.clear()
        self.out_bytes = 0
        self.assembly.partial = None
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
        assembly = self.assembly
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
                    if assembly.partial is not None:
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
                        self.credit_connection()
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
                    whole = assembly.frame(kind, sid, flags, payload)
                    if whole is not None:
                        self.on_headers(whole[0], bytes(whole[2]), whole[1])
                else:
                    if assembly.partial is not None:
                        raise f.ProtocolError("a frame inside a header block")
                    if kind == f.WINDOW_UPDATE:  # the most frequent: one call, not two
                        self.window_update(sid, payload)
                    else:
                        control_frame(self, kind, flags, sid, payload)
                if self.gone or self.closing:
                    return
            partial = assembly.partial
            if partial is not None and len(partial[2]) > MAX_BLOCK:
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

    def read_block(self, block: bytes, need: bool = True) -> tuple[Headers | None, bool]:
        """(the headers, or None when not needed and not decoded; whether the block can be
        forwarded byte for byte). Every block must pass here: it keeps the HPACK state. A
        verbatim peer's blocks come from the cache when they can; `fresh` says they did not."""
        self.fresh = False
        blocks = self.blocks
        if blocks.verbatim:
            if not need:
                return None, True
            headers = blocks.cache.blocks.get(block)
            if headers is not None:
                return headers, True
        read = blocks.decode(block)
        self.fresh = True
        return read

    def keep(self, block: bytes, headers: Headers) -> None:
        """block, just read by read_block, was accepted: later copies of it need no decoding
        (callers skip this when `fresh` is False: the block came from the cache)."""
        self.fresh = False
        self.blocks.keep(block, headers)

    # -- filled in by the two sides -----------------------------------------------------------

    def on_data(self, leg: Leg, payload: bytes, end: bool, length: int) -> None: ...
    def on_headers(self, sid: int, block: bytes, end: bool) -> None: ...
    def on_reset(self, leg: Leg, code: int, finished: bool, answered: bool) -> None: ...
    def on_goaway(self, last: int, code: int, debug: bytes) -> None: ...
    def on_ping_ack(self, payload: bytes) -> None: ...
    def stream_closed(self, leg: Leg) -> None: ...
    def after_read(self) -> None: ...
    def lost(self, legs: list[Leg]) -> None: ...

    def idle(self, sid: int) -> bool:
        """Whether stream sid was never opened (RFC 9113 5.1)."""
        return False
