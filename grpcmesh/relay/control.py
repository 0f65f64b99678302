"""What a connection does with the frames that carry no call's data (RFC 9113 6): RST_STREAM,
SETTINGS, PING, GOAWAY, PUSH_PROMISE, PRIORITY and unknown types (WINDOW_UPDATE goes straight
to flow control: FlowControl.window_update).

Each is checked for what the relay relies on (its size, its stream, its values), then applied to
the connection: a new initial window to its flow control (flow.py), the acknowledgement of our
header table size to its HPACK state (headers.py), resets, GOAWAY and PING answers to the side
that owns them (Peer.on_*). Control frames that cost us work (PING, SETTINGS, PRIORITY,
unknown types) pass the connection's FrameGuard, a token bucket.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from grpcmesh.relay import frames as f

if TYPE_CHECKING:
    from grpcmesh.relay.peer import Peer

_CONNECTION_FRAMES = frozenset({f.SETTINGS, f.PING, f.GOAWAY})


def control_frame(peer: Peer, kind: int, flags: int, sid: int, payload: bytes) -> None:
    """Apply a frame that is not DATA, HEADERS, CONTINUATION or WINDOW_UPDATE (the frame loop
    hands that one to flow control itself); f.ProtocolError when it breaks HTTP/2."""
    if kind > f.CONTINUATION or kind == f.PRIORITY_FRAME or \
            (kind in (f.PING, f.SETTINGS) and not flags & f.ACK):
        peer.guard.control(peer.clock.now())
    if kind == f.RST_STREAM:
        _rst_stream(peer, sid, payload)
    elif kind in _CONNECTION_FRAMES and sid != 0:
        raise f.ProtocolError(f"a connection-level frame (type {kind}) on stream {sid}")
    elif kind == f.SETTINGS:
        _settings(peer, flags, payload)
    elif kind == f.PING:
        if len(payload) != 8:
            raise f.ProtocolError("PING of the wrong size", f.FRAME_SIZE_ERROR)
        if not flags & f.ACK:
            peer.queue_control(f.frame(f.PING, f.ACK, 0, payload))
        else:
            peer.on_ping_ack(payload)
    elif kind == f.GOAWAY:
        if len(payload) < 8:
            raise f.ProtocolError("GOAWAY too short", f.FRAME_SIZE_ERROR)
        last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        code = int.from_bytes(payload[4:8], "big")
        peer.on_goaway(last, code, payload[8:])
    elif kind == f.PUSH_PROMISE:
        raise f.ProtocolError("PUSH_PROMISE, though push is disabled")
    # PRIORITY and unknown frame types are ignored, as RFC 9113 asks.


def _rst_stream(peer: Peer, sid: int, payload: bytes) -> None:
    if len(payload) != 4:
        raise f.ProtocolError("RST_STREAM of the wrong size", f.FRAME_SIZE_ERROR)
    if sid == 0:
        raise f.ProtocolError("RST_STREAM on stream 0")
    gone = peer.streams.get(sid)
    if gone is not None:
        finished = gone.ended_in  # the peer had already ended its side
        answered = gone.ended_out  # ... and we ours
        gone.ended_in = gone.ended_out = True
        peer.reset_pending(gone)
        peer.forget(gone)
        peer.on_reset(gone, int.from_bytes(payload, "big"), finished, answered)
    elif peer.idle(sid):
        raise f.ProtocolError(f"RST_STREAM on stream {sid}, which was never opened")


def _settings(peer: Peer, flags: int, payload: bytes) -> None:
    if flags & f.ACK:
        if payload:
            raise f.ProtocolError("SETTINGS ACK with a payload", f.FRAME_SIZE_ERROR)
        # The peer now encodes with a table of at most 0 bytes; HeaderBlocks.decode waits for
        # a block that shows it before blocks are forwarded undecoded.
        peer.blocks.acked = True
        return
    for key, value in f.parse_settings(payload):
        if key == f.INITIAL_WINDOW_SIZE:
            peer.initial_window(value)
        elif key == f.MAX_FRAME_SIZE:
            if not f.DEFAULT_FRAME_SIZE <= value <= f.LARGEST_FRAME_SIZE:
                raise f.ProtocolError(f"SETTINGS_MAX_FRAME_SIZE of {value}")
            peer.peer_max_frame = value
        elif key == f.ENABLE_PUSH and value > 1:
            raise f.ProtocolError(f"SETTINGS_ENABLE_PUSH of {value}")
        elif key == f.MAX_CONCURRENT_STREAMS:
            peer.peer_max_streams = value
    peer.queue_control(f.frame(f.SETTINGS, f.ACK, 0))
    peer.settings_arrived()
