"""A call's request side: what the client sends goes to the current attempt, and is held until an
attempt commits so that it can be sent again (Call.try_elsewhere).

An attempt commits (gRFC A6) when anything of its response goes to the client, or when the
request held passes retry_buffer_bytes (or all calls' held requests pass
retry_buffer_total_bytes). What is held is the request's DATA as bytes (`sent`: what attempts
have had; `early`: what waits for an attempt, not yet credited to the client), whether it
ended (`req_end`), and its trailers if the client sent any. Bytes, not frames: memory is what
the count says, whatever frame sizes a client chooses, and an empty DATA frame that does not end
the request carries nothing and is not passed on. Trailers are bounded by the metadata limit
(only one block may follow the request headers, and it must end the stream).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from grpcmesh.relay.flow import Leg
from grpcmesh.relay.peer import Headers
from grpcmesh.resilience.commit import past_limit

if TYPE_CHECKING:
    from collections.abc import Callable

    from grpcmesh.relay import frames as f
    from grpcmesh.relay.peer import Peer
    from grpcmesh.relay.relay import Relay

MIN_MAX_FRAME = 16_384  # the smallest SETTINGS_MAX_FRAME_SIZE a peer may have (RFC 9113 6.5.2)


class RequestSide:
    """Call's request methods (a mixin: Call holds the state below)."""

    __slots__ = ("early", "early_credit", "held", "req_end", "request_bytes", "sent",
                 "trailers", "up")
    relay: Relay
    down: Leg
    up: Leg | None
    early: bytearray | None  # None until the call is routed, and once it is cancelled
    early_credit: int  # flow-control bytes of early (padding included), credited when sent
    sent: bytearray | None  # None: committed
    held: int
    req_end: bool
    trailers: Headers | None
    end_headers: bool
    request_bytes: int  # DATA the client sent, for the record
    req_framing: f.MessageFraming | None
    # (Call's: an annotation only, so nothing here shadows it)
    _oversized: Callable[[f.MessageFraming | None, bytes, Leg, int, bool], bool]

    def send_request(self, leg: Leg) -> None:
        """Whatever of the request there is goes to leg, a new attempt's stream whose headers
        were just sent: what earlier attempts had (again), then what waited for it."""
        up = leg.peer
        sent, early = self.sent, self.early
        end = self.req_end and self.trailers is None  # END_STREAM on the last DATA
        if sent:  # the client's window had these already
            send_body(up, leg, sent, end and not early, None, 0)
        if early:
            credit, self.early_credit = self.early_credit, 0
            send_body(up, leg, early, end, self.down, credit)
            n = len(early)
            if sent is not None and not sent:  # (the usual case, the first attempt: the two
                self.sent, self.early = early, sent  # swap, nothing is copied)
            else:
                if sent is not None:
                    sent += early
                early.clear()
            if sent is not None:
                self.hold(n)
        elif end and not sent and not self.end_headers:  # it ended with an empty DATA frame
            up.send_data(leg, b"", True, self.down, self.early_credit)
            self.early_credit = 0
        if self.trailers is not None:
            up.send_headers(leg, up.encode(self.trailers), True)

    def hold(self, n: int) -> None:
        """n more bytes of request were sent and are held: past the limits, the attempt
        commits."""
        self.held += n
        relay = self.relay
        relay.held += n
        limits = relay.limits
        if past_limit(self.held, relay.held, limits.retry_buffer_bytes,
                      limits.retry_buffer_total_bytes):
            self.commit()

    def commit(self) -> None:
        """The current attempt is the call's last: its request is no longer held."""
        self.relay.held -= self.held
        self.held = 0
        self.sent = None

    def drop_early(self) -> None:
        """The call goes nowhere: what waited for an attempt is dropped, and credited back."""
        self.early = None
        if self.early_credit:
            self.down.peer.credit(self.down, self.early_credit)
            self.early_credit = 0

    # -- events from the client ---------------------------------------------------------------

    def request_data(self, payload: bytes, end: bool, length: int) -> None:
        """Request DATA (length: its flow-control size, padding included)."""
        down = self.down
        self.request_bytes += len(payload)
        if self._oversized(self.req_framing, payload, down, length, True):
            return
        if end:
            self.req_end = True
        elif not payload:  # an empty frame carries nothing: not passed on, nor held
            if length:
                down.peer.credit(down, length)
            return
        up = self.up
        if up is not None:
            up.peer.send_data(up, payload, end, down, length)
            sent = self.sent
            if sent is not None and payload:
                sent += payload
                self.hold(len(payload))
        elif self.early is not None:
            self.early += payload
            self.early_credit += length
        else:
            down.peer.credit(down, length)

    def request_trailers(self, headers: Headers, block: bytes, verbatim: bool) -> None:
        """Trailers from the client (they end the request): HTTP/2 allows them, gRPC clients
        send none."""
        self.req_end = True
        self.trailers = headers
        up = self.up
        if up is not None:
            up.peer.send_headers(up, block if verbatim else up.peer.encode(headers), True)


def send_body(up: Peer, leg: Leg, body: bytearray, end: bool, src: Leg | None, credit: int
              ) -> None:
    """body as DATA frames no peer refuses for their size; src is credited credit bytes once
    the last one is sent. Each frame is a copy: body may grow after this."""
    size = len(body)
    if size <= MIN_MAX_FRAME:
        up.send_data(leg, bytes(body), end, src, credit)
        return
    view = memoryview(body)
    for start in range(0, size, MIN_MAX_FRAME):
        last = start + MIN_MAX_FRAME >= size
        up.send_data(leg, bytes(view[start:start + MIN_MAX_FRAME]), end and last,
                     src if last else None, credit if last else 0)
    view.release()

