"""A client's connection to the relay's listener: it maps stream ids to calls and hands them
what the client sends; new streams are checked against the connection's limits (streams,
rapid resets) and opened by the Relay. It drains gracefully (GOAWAY, PING, final GOAWAY)."""
from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from grpcmesh.relay import frames as f
from grpcmesh.relay.call import Call
from grpcmesh.relay.limits import Abuse, ResetGuard
from grpcmesh.relay.peer import Headers, Leg, Peer

if TYPE_CHECKING:
    from grpcmesh.relay.relay import Relay

_DRAIN_PING = b"grpcmesh"
# A client that has not answered the drain's PING by then (a vanished peer, a half-open TCP
# connection) gets the final GOAWAY anyway, so it cannot hold a shutdown for the whole grace.
DRAIN_PING_TIMEOUT = 1.0


class Downstream(Peer):
    """A client's connection to the relay's listener."""

    __slots__ = ("born", "deferred", "idle_since", "last_sid", "refuse_above", "refused",
                 "relay", "resets", "seen_opened")
    PREFACE_FIRST = True

    def __init__(self, relay: Relay) -> None:
        super().__init__(relay.flusher, relay.limits, relay.cache, relay.clock)
        self.relay = relay
        self.last_sid = 0
        self.refuse_above: int | None = None  # after our final GOAWAY
        self.resets = ResetGuard(relay.limits)
        self.refused = 0  # streams refused over max_concurrent_streams after our SETTINGS
        self.born = relay.clock.now()
        self.idle_since: float | None = None  # see Relay.sweep
        self.seen_opened = 0
        # Calls opened by this read, routed at its end: (call, target, block, headers)
        # Streams opened in this read: (call, request headers, block, block is fresh)
        self.deferred: list[tuple[Call, Headers, bytes | None, bool]] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        relay = self.relay
        if len(relay.downstreams) >= self.limits.max_connections:
            relay.over_capacity()
            self.closing = True
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.caller = f"{peer[0]}:{peer[1]}"
        relay.downstreams.add(self)
        self.queue(self.hello([*self.settings(),
                               (f.MAX_CONCURRENT_STREAMS, self.limits.max_concurrent_streams)]))
        if self.relay.draining:
            self.drain()
        self.flusher.flush()

    def last_stream(self) -> int:
        return self.last_sid

    def idle(self, sid: int) -> bool:
        return sid % 2 == 0 or sid > self.last_sid

    def on_headers(self, sid: int, block: bytes, end: bool) -> None:
        leg = self.streams.get(sid)
        if leg is not None:  # trailers from the client: HTTP/2 allows them, gRPC sends none
            # Decoded, though rare, so that a block that breaks HPACK ends this connection
            # rather than being forwarded to an upstream connection that other clients share.
            headers, verbatim = self.read_block(block)
            assert headers is not None
            if leg.ended_in:
                raise f.ProtocolError(f"HEADERS on stream {sid} after its END_STREAM",
                                      f.STREAM_CLOSED)
            if not end:  # trailers end the request; anything else is malformed (8.1)
                leg.call.malformed(f"HEADERS on stream {sid} that do not end the request")
                return
            leg.ended_in = True
            leg.call.request_trailers(headers, block, verbatim)
            if leg.ended_out:
                self.forget(leg)
            return
        if sid % 2 == 0:
            raise f.ProtocolError(f"a client opened stream {sid}, an even number")
        if sid <= self.last_sid:  # a stream that is over: its frames are ignored (RFC 9113 5.1)
            self.read_block(block, need=False)
            return
        self.last_sid = sid
        headers, verbatim = self.read_block(block)
        assert headers is not None
        if self.refuse_above is not None and sid > self.refuse_above:
            self.queue_control(f.rst_stream(sid, f.REFUSED_STREAM))
            return
        limit = self.limits.max_concurrent_streams
        if len(self.streams) >= limit:
            self.queue_control(f.rst_stream(sid, f.REFUSED_STREAM))
            if self.blocks.acked:  # it knew the limit: a client that ignores it is not let go on
                self.refused += 1
                if self.refused > limit:
                    raise Abuse(f"over {limit} streams refused: the client ignores "
                                f"SETTINGS_MAX_CONCURRENT_STREAMS={limit}")
            return
        self.resets.open()
        self.relay.open(self, sid, headers, block if verbatim else None, end)

    def on_data(self, leg: Leg, payload: bytes, end: bool, length: int) -> None:
        leg.call.request_data(payload, end, length)

    def on_reset(self, leg: Leg, code: int, finished: bool, answered: bool) -> None:
        call: Call = leg.call
        call.client_gone()
        if not answered:
            self.resets.reset(self.relay.clock.now() - call.born)  # Abuse: rapid reset

    def stream_closed(self, leg: Leg) -> None:
        if self.refuse_above is not None and not self.streams:
            self.close()

    def note_close(self, why: str) -> None:
        self.relay.closed_why[why.partition(":")[0]] += 1  # logged once a second (sweep)

    def after_read(self) -> None:
        deferred, self.deferred = self.deferred, []
        begin = self.relay.begin
        for call, headers, block, fresh in deferred:
            if not call.closed:  # (its client may have reset it in the same read)
                begin(call, headers, block, fresh)

    def lost(self, legs: list[Leg]) -> None:
        relay = self.relay
        self.deferred.clear()
        relay.downstreams.discard(self)
        for leg in legs:
            leg.call.client_gone()
        if relay.all_gone is not None and not relay.downstreams:
            relay.all_gone.set()

    def drain(self) -> None:
        """Graceful close: GOAWAY announcing that no new streams are taken, a PING, and on its
        answer (or after DRAIN_PING_TIMEOUT without one) a final GOAWAY with the last stream
        taken (RFC 9113 6.8). The connection closes once its streams are over."""
        self.queue(f.goaway(f.MAX_WINDOW))
        self.queue(f.frame(f.PING, 0, 0, _DRAIN_PING))
        self.relay.call_later(DRAIN_PING_TIMEOUT, self.final_goaway)

    def on_ping_ack(self, payload: bytes) -> None:
        if payload == _DRAIN_PING:
            self.final_goaway()

    def final_goaway(self) -> None:
        if self.refuse_above is None and not self.gone:
            self.refuse_above = self.last_sid
            self.queue(f.goaway(self.last_sid))
            if not self.streams:
                self.close()
