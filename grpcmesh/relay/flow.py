"""Flow control of one HTTP/2 connection (RFC 9113 5.2, 6.9): what may be sent now, what waits
for window, and the credit given back. It does no I/O: frames go to the output queue (Output),
so tests drive it with no transport and no event loop.

Stream windows end to end, connection windows on receipt. What a peer sends us on a stream is
credited back to it (WINDOW_UPDATE) only once it has been written to the other side, which may
only be sent as much as its own windows allow, and nothing at all while that side's output is
over limits.write_buffer_bytes (a peer that does not read). So the relay holds at most one stream
window per stream. Connection windows are credited as DATA arrives: a connection shared by many
calls (an upstream) is never held up by one call whose client does not read, and its memory is
bounded by its streams' windows. Credit goes back in batches of half a window, so a small unary
call costs no WINDOW_UPDATE frames.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grpcmesh.clock import Clock
from grpcmesh.relay import frames as f
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.output import Flusher, Output

if TYPE_CHECKING:
    from grpcmesh.relay.peer import Peer

# The connection window we grant: credited on receipt, so it bounds no memory (stream windows
# do); large, so that it never slows a connection down.
CONN_WINDOW = 16 << 20


class Leg:
    """A call's stream on one connection."""

    __slots__ = ("call", "ended_in", "ended_out", "peer", "pending", "recv", "sid",
                 "then_reset", "unacked", "window")

    def __init__(self, peer: Peer, sid: int, call: Any) -> None:
        self.peer = peer
        self.sid = sid
        self.call = call
        self.window = peer.peer_initial  # what we may still send on it
        self.unacked = 0  # bytes received on it not yet credited back
        self.recv = peer.limits.stream_window  # what the peer may still send on it
        # (frames, end_stream, source leg, credit, is_headers): waiting for window
        self.pending: list[tuple[bytes, bool, Leg | None, int, bool]] = []
        self.ended_in = False  # the peer ended its side (END_STREAM or RST)
        self.ended_out = False  # we ended ours
        self.then_reset = False  # once ended_out, RST_STREAM(NO_ERROR): stop sending to us


class FlowControl(Output):
    """The windows of a connection, the legs blocked on them, and the credit it gives back.

    A base of Peer rather than an object of its own: sending DATA and crediting it happen for
    every frame relayed, and a call through one more object would cost that path more than the
    windows do. It writes through Output (queue, room) and does no I/O; Peer supplies `streams`,
    `peer_max_frame` and ended() (a leg's last frame went out). What the peer sends is charged
    to recv_window, conn_unacked and Leg.recv in Peer's frame loop, which calls
    credit_connection() at half a window.
    """

    __slots__ = ("blocked", "conn_unacked", "peer_initial", "recv_window", "window")

    streams: dict[int, Leg]
    peer_max_frame: int  # the peer's SETTINGS_MAX_FRAME_SIZE

    def __init__(self, flusher: Flusher, limits: RelayLimits, clock: Clock) -> None:
        super().__init__(flusher, limits, clock)
        self.blocked: dict[Leg, None] = {}  # legs with pending frames, in order
        self.window = f.DEFAULT_WINDOW  # connection send window
        self.peer_initial = f.DEFAULT_WINDOW  # the peer's SETTINGS_INITIAL_WINDOW_SIZE
        self.conn_unacked = 0  # received on the connection, not yet credited back
        self.recv_window = f.DEFAULT_WINDOW  # what the peer may still send on the connection

    def ended(self, leg: Leg) -> None:
        raise NotImplementedError

    # -- sending ------------------------------------------------------------------------------

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
        """HEADERS (and CONTINUATION) on leg, after the DATA still waiting for window."""
        if leg.ended_out:
            return
        data = f.header_frames(leg.sid, block, end, self.peer_max_frame)
        if leg.pending:
            leg.pending.append((data, end, None, 0, True))
            return
        self.queue(data)
        if end:
            self.ended(leg)

    def drain_blocked(self) -> None:
        for leg in list(self.blocked):
            self._drain(leg)
            if self.window <= 0 or self.paused or self.starved:
                break

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
            room = min(leg.window, self.window, self.room())
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

    def reset_pending(self, leg: Leg) -> None:
        """Drop what waits to be sent on leg, crediting it to its source."""
        for _, _, src, credit, _ in leg.pending:
            if src is not None:  # the stream too, if its sender goes on (credit checks)
                src.peer.credit(src, credit)
        leg.pending.clear()
        self.blocked.pop(leg, None)

    # -- the peer's windows -------------------------------------------------------------------

    def window_update(self, sid: int, payload: bytes) -> None:
        """The peer's WINDOW_UPDATE frame on stream sid: what waited for window goes out.
        (The frame loop hands it over itself: gRPC peers send one or more per message.)"""
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
            return
        one = self.streams.get(sid)
        if one is not None:
            one.window += increment
            if one.window > f.MAX_WINDOW:
                raise f.ProtocolError(f"stream {sid}'s window over 2^31-1",
                                      f.FLOW_CONTROL_ERROR)
            if one.pending:
                self._drain(one)

    def initial_window(self, value: int) -> None:
        """The peer's SETTINGS_INITIAL_WINDOW_SIZE: every stream's window moves with it."""
        if value > f.MAX_WINDOW:
            raise f.ProtocolError("INITIAL_WINDOW_SIZE over 2^31-1", f.FLOW_CONTROL_ERROR)
        delta = value - self.peer_initial
        self.peer_initial = value
        for leg in self.streams.values():
            leg.window += delta
        if delta > 0:
            for leg in list(self.blocked):
                self._drain(leg)

    # -- our windows --------------------------------------------------------------------------

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

    def credit_connection(self) -> None:
        """The connection window is credited as DATA arrives, in batches of half of it."""
        self.queue_control(f.window_update(0, self.conn_unacked))
        self.recv_window += self.conn_unacked
        self.conn_unacked = 0
