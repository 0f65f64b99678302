"""One gRPC call through the relay: it owns its life from the client's HEADERS to its one end.

The two connections a call spans (the client's, and the upstream's of its current attempt) only
map stream ids to calls and hand them events: request data and trailers from the client, the
client's reset or departure; response headers, data and trailers from the upstream, its reset,
its GOAWAY, its loss. The call decides what goes where. It ends exactly once, in `end`, with one
CallRecord that the balancer and every observer read; the proxy's own answers end it too.

Until an attempt commits, the call holds on to its request (`sent`: what went to an attempt;
`early`: what waits for one), so that it can be sent again. An attempt commits (gRFC A6) when
anything of its response goes to the client, or when the request held passes
retry_buffer_bytes (or all calls' held requests pass retry_buffer_total_bytes). Until then an
attempt that never reached its app (the endpoint's REFUSED_STREAM, or its GOAWAY below the
attempt's stream) is tried again on another endpoint, whatever the method: no app saw it.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc

from grpcmesh.balance.endpoint import Endpoint
from grpcmesh.relay import frames as f
from grpcmesh.relay.hedging import NON_FATAL
from grpcmesh.relay.peer import Headers, Leg
from grpcmesh.relay.record import APP, CLIENT, PROXY, RESET_STATUS, Attempt, CallRecord, status_of
from grpcmesh.relay.retrying import Retrying
from grpcmesh.resilience.commit import holds_headers

if TYPE_CHECKING:
    from grpcmesh.interceptors.api import CallView
    from grpcmesh.interceptors.chain import Chain
    from grpcmesh.relay.hedging import Race
    from grpcmesh.relay.relay import Relay
    from grpcmesh.resilience.retry import CallRetries, RetryPolicy
    from grpcmesh.routing import Target

_SC = grpc.StatusCode
_MAX_MESSAGE = 1024  # characters of grpc-message in the proxy's own answers


class Call(Retrying):
    __slots__ = ("attempts", "born", "chain", "deadline", "down", "end_headers",
                 "ended", "limit", "method", "race", "relay", "req_framing", "request",
                 "resp_framing", "response_bytes", "service", "target", "task", "tick", "view")

    def __init__(self, relay: Relay, down: Leg) -> None:
        self.relay = relay
        self.born = relay.clock.now()
        self.down = down  # the client's stream
        self.up: Leg | None = None  # the current attempt's stream
        self.attempts: list[Attempt] = []
        self.method = ""
        self.service = ""
        self.deadline: float | None = None
        self.tick: int | None = None  # its deadline's bucket in relay.deadlines
        self.pause: asyncio.TimerHandle | None = None  # an interceptor's Delay
        # The request (request_side.py): DATA that waits for an attempt, not yet credited to
        # the client (None until the call is routed, and once it is cancelled); DATA attempts
        # had, held until one commits (None: committed); its end; its trailers.
        self.early: bytearray | None = None
        self.early_credit = 0
        self.sent: bytearray | None = bytearray()
        self.held = 0  # len(sent), counted in relay.held too
        self.req_end = False
        self.trailers: Headers | None = None
        self.target: Target | None = None  # where the call was routed
        self.request: Headers = []  # the request headers its attempts are sent
        self.end_headers = False  # the request had no body
        self.headers_out = False  # response headers were sent to the client
        self.closed = False  # the client's side is over: nothing more to do upstream
        self.ended = False
        self.req_framing: f.MessageFraming | None = None
        self.resp_framing: f.MessageFraming | None = None
        self.task: asyncio.Task[None] | None = None
        self.limit = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.chain: Chain | None = None  # its interceptors, if its target has any
        self.view: CallView | None = None  # what they see of it
        self.retry: tuple[RetryPolicy, CallRetries, bool] | None = None  # (retrying.py)
        self.waiting: tuple[bytes, Headers | None, bool] | None = None
        self.refused = 0
        self.try_timer: asyncio.TimerHandle | None = None
        self.reached = 0
        self.race: Race | None = None  # the hedge rule's attempts (hedging.py)

    # -- the one end --------------------------------------------------------------------------

    def end(self, code: grpc.StatusCode, by: str, reason: str = "",
            blame: grpc.StatusCode | None = None, pushback: int | None = None) -> None:
        """The call is over for its client: record it once. blame is what the endpoint is
        charged with (None: not its doing, such as a client that cancelled)."""
        if self.ended:
            return
        self.ended = True
        if self.sent is not None:
            self.commit()
        now = self.relay.clock.now()
        if self.tick is not None:
            self.relay.deadlines.remove(self)
        if self.pause is not None:
            self.pause.cancel()
        if self.race is not None:
            self.race.stop()
        if self.try_timer is not None:
            self.try_timer.cancel()
        attempt = self.attempts[-1] if self.attempts else None
        if attempt is not None and not attempt.handle.finished:
            attempt.handle.finish(now, blame, pushback)
        relay = self.relay
        relay.in_flight -= 1
        chain = self.chain
        if chain is not None and not chain.wants_end:
            chain = None
        if relay.observers or chain is not None:
            record = CallRecord(
                self.method, self.down.peer.caller, self.service,
                attempt.endpoint.address if attempt is not None else "", code, by, reason,
                self.born, now - self.born,
                None if attempt is None or attempt.first_byte is None
                else attempt.first_byte - self.born,
                self.request_bytes, self.response_bytes, len(self.attempts),
                self.retry[1].stopped if self.retry is not None else "", self.request)
            for observe in relay.observers:
                observe(record)
            if chain is not None and self.view is not None:
                chain.end(self.view, record)

    # -- the proxy's own answers --------------------------------------------------------------

    def reply_error(self, code: grpc.StatusCode, message: str, reason: str, http: int = 200,
                    blame: grpc.StatusCode | None = None) -> None:
        """The proxy answers (trailers-only when nothing was sent yet); the upstream stream, if
        any, is cancelled."""
        self.cancel_upstream()
        down = self.down
        peer = down.peer
        if not down.ended_out:
            status = [("grpc-status", str(code.value[0])),
                      ("grpc-message", f.encode_message(message[:_MAX_MESSAGE]))]
            if not self.headers_out:
                status = [(":status", str(http)), ("content-type", "application/grpc"), *status]
            peer.reset_pending(down)
            peer.send_headers(down, peer.encode(status), True)
            if not down.ended_in:  # tell the client to stop sending
                peer.reset(down, f.NO_ERROR)
        self.closed = True
        self.end(code, PROXY, reason, blame)

    def expire(self) -> None:
        """The deadline passed with the call still open: the relay's own timer answers."""
        if not self.ended:
            self.reply_error(_SC.DEADLINE_EXCEEDED, f"deadline exceeded for {self.method} "
                             "(the proxy's timer; the upstream call was cancelled)", "deadline",
                             blame=_SC.DEADLINE_EXCEEDED if self.up is not None else None)

    def _oversized(self, framing: f.MessageFraming | None, payload: bytes, leg: Leg,
                   length: int, request: bool) -> bool:
        """Whether payload (from leg) starts a message over the limit: then it is dropped (and
        credited back) and the proxy answers RESOURCE_EXHAUSTED."""
        size = framing.feed(payload) if framing is not None else None
        if size is None:
            return False
        leg.peer.credit(leg, length)
        self.too_big(request, size)
        return True

    def too_big(self, request: bool, size: int) -> None:
        what = "request message to" if request else "response message of"
        self.reply_error(_SC.RESOURCE_EXHAUSTED, f"{what} {self.method} is {size} bytes; the "
                         f"proxy's limit is {self.limit}", "too_large",
                         blame=None if request else _SC.RESOURCE_EXHAUSTED)

    def cancel_upstream(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        if self.race is not None:
            self.race.cancel()
        self.drop_early()
        if self.sent is not None:
            self.commit()
        up = self.up
        if up is not None and not (up.ended_in and up.ended_out):
            up.peer.reset(up, f.CANCEL)

    # -- an attempt ---------------------------------------------------------------------------

    def attempt(self, endpoint: Endpoint, leg: Leg, block: bytes) -> None:
        """Start an attempt on leg, a new stream on endpoint's connection: the request headers
        (block) and whatever of the request waited for it go out."""
        up = leg.peer
        self.up = leg
        now = self.relay.clock.now()
        self.attempts.append(Attempt(endpoint, leg, endpoint.start(now), now))
        up.send_headers(leg, block, self.end_headers)
        self.send_request(leg)
        race = self.race
        if race is not None:
            if len(self.attempts) == 1:
                race.start(now)  # the hedge rule's timer
            elif race.timer is None:
                race.fire()  # (its hedge may have come due while this attempt was on its way)
        if self.retry is not None:
            self.start_try_timer()

    # -- events from the client (and request_side.py) -----------------------------------------

    def malformed(self, why: str) -> None:
        """The client's stream broke HTTP/2's rules for a request (RFC 9113 8.1.1): it is reset
        with PROTOCOL_ERROR, and the call ends."""
        self.closed = True
        self.cancel_upstream()
        down = self.down
        if not (down.ended_in and down.ended_out):
            down.peer.reset(down, f.PROTOCOL_ERROR)
        self.end(_SC.INTERNAL, PROXY, "malformed")

    def client_gone(self) -> None:
        """The client reset the stream or closed its connection."""
        self.closed = True
        self.cancel_upstream()
        expired = self.deadline is not None and self.relay.clock.now() >= self.deadline
        if expired:
            self.end(_SC.DEADLINE_EXCEEDED, CLIENT, blame=_SC.DEADLINE_EXCEEDED)
        else:
            self.end(_SC.CANCELLED, CLIENT)

    # -- events from the upstream -------------------------------------------------------------

    def response_headers(self, block: bytes, headers: Headers | None, verbatim: bool,
                         end: bool) -> None:
        """Response headers, or (end) the trailers or a trailers-only response. With a retry
        rule and the attempt not committed: the headers of a call whose request is complete
        wait for its first message (commit) or its trailers (which may be retried), so that
        headers then an error, with no message, can still be retried (gRFC A6)."""
        code = pushback = None
        if end:
            assert headers is not None
            code, pushback = status_of(headers)
            race = self.race
            if race is not None and code in NON_FATAL and self.sent is not None:
                race.alone().response_headers(block, headers, verbatim, end)  # (hedging.py)
                return
            if self.retry is not None and self.sent is not None and code is not _SC.OK and \
                    self.try_again(code, headers):
                return
            if self.waiting is not None:
                self._pass_headers(*self.waiting)
        elif self.sent is not None:
            if holds_headers(self.retry is not None, self.req_end or self.end_headers):
                self.waiting = (block, headers, verbatim)
                return
            self.commit()
        down = self.down
        peer = down.peer
        chain = self.chain
        if chain is not None and chain.wants_responses and self.view is not None:
            assert headers is not None  # decoded for it (Upstream.on_headers)
            if end:
                chain.trailers(self.view, headers)
            else:
                chain.response_headers(self.view, headers)
        if code is not None:
            self.end(code, APP, blame=code, pushback=pushback)
        else:
            self.headers_out = True
        if not verbatim:
            assert headers is not None  # a block that is not forwarded as it is was decoded
            block = peer.encode(headers)
        peer.send_headers(down, block, end)

    def response_data(self, payload: bytes, end: bool, length: int) -> None:
        attempt = self.attempts[-1]
        up = attempt.leg
        if attempt.first_byte is None:
            now = self.relay.clock.now()
            attempt.first_byte = now
            attempt.handle.first_response(now)
        self.response_bytes += len(payload)
        if self.sent is not None:
            self.commit()
            if self.waiting is not None:  # the headers it held go first
                self._pass_headers(*self.waiting)
        if self._oversized(self.resp_framing, payload, up, length, False):
            return
        if end:  # a response without trailers: gRPC reads it as UNKNOWN, and so does the pick
            self.end(_SC.UNKNOWN, APP, blame=_SC.UNKNOWN)
        down = self.down
        down.peer.send_data(down, payload, end, up, length)

    def upstream_reset(self, code: int, finished: bool) -> None:
        down = self.down
        if finished:
            # The response is complete (trailers received): this only says "stop sending the
            # request" (RFC 9113 8.1), which gRPC servers do when a client has not half-closed.
            # What waits for the client's window is still delivered, then the client is told.
            down.peer.end_then_reset(down)
            return
        race = self.race
        if race is not None and code != f.REFUSED_STREAM and self.sent is not None:
            race.alone().upstream_reset(code, finished)  # (hedging.py)
            return
        if code == f.REFUSED_STREAM:  # the endpoint did not process it (RFC 9113 8.7)
            if not self.try_elsewhere(_SC.UNAVAILABLE):
                self.refuse()
            return
        status = RESET_STATUS.get(code, _SC.INTERNAL)
        if self.retry is not None and self.sent is not None and not self.closed and \
                self.try_again(status):
            return
        self.end(status, APP, blame=status)
        if not (down.ended_in and down.ended_out):
            down.peer.reset(down, code)

    def upstream_refused(self) -> None:
        """The upstream's GOAWAY came before it saw this call: another endpoint takes it, or
        (none left) the client is refused it."""
        if not self.try_elsewhere(None):  # (a graceful GOAWAY: not the endpoint's failure)
            self.refuse()

    def upstream_lost(self, finished: bool, address: str) -> None:
        down = self.down
        if finished:  # its response is complete, and may still be on its way out
            down.peer.end_then_reset(down)
            return
        if self.closed:  # (a closed call has ended already: its client left, or we answered)
            return
        race = self.race
        if race is not None and self.sent is not None:
            race.alone().upstream_lost(finished, address)  # (hedging.py)
            return
        if self.retry is not None and self.sent is not None and \
                self.try_again(_SC.UNAVAILABLE):
            return
        self.up = None
        self.reply_error(_SC.UNAVAILABLE, f"the connection to {address} was lost while "
                         f"{self.method} was in flight", "upstream_lost", blame=_SC.UNAVAILABLE)

