"""The retry rule in a call (services.NAME.retry; the decision is grpcmesh/resilience/retry.py).

An attempt that fails before it commits (request_side.py says when) is offered to the rule:
it may be sent again after its backoff or the server's grpc-retry-pushback-ms, with
grpc-previous-rpc-attempts, to an endpoint not yet tried (Dispatch.retry). So that headers then
an error, with no message, can still be retried (where Envoy and Linkerd do not), the response
headers of a call whose request is complete wait (`waiting`) until its first message, which
commits it, or its trailers, which may be retried. A call whose request is still open passes
its headers at once, and commits: a client may wait for them before it sends.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import grpc

from grpcmesh.relay import frames as f
from grpcmesh.relay.peer import Headers
from grpcmesh.relay.record import PROXY, Attempt
from grpcmesh.relay.request_side import RequestSide
from grpcmesh.relay.settings import PUSHBACK
from grpcmesh.resilience.backoff import parse_pushback

if TYPE_CHECKING:
    from grpcmesh.interceptors.api import CallView
    from grpcmesh.interceptors.chain import Chain
    from grpcmesh.relay.call import Call
    from grpcmesh.resilience.retry import CallRetries, RetryPolicy

_SC = grpc.StatusCode
REFUSED_ATTEMPTS = 3  # endpoints a call is offered to when each refuses it unseen


class Retrying(RequestSide):
    """Call's retry methods (a mixin: Call holds the state it does not)."""

    __slots__ = ("closed", "headers_out", "pause", "reached", "refused", "retry", "try_timer",
                 "waiting")
    retry: tuple[RetryPolicy, CallRetries, bool] | None  # the rule's (policy, count, idempotent)
    waiting: tuple[bytes, Headers | None, bool] | None  # response headers held: block, ...
    attempts: list[Attempt]
    chain: Chain | None
    view: CallView | None
    headers_out: bool  # response headers went to the client
    method: str
    service: str
    deadline: float | None
    closed: bool  # the client's side is over: nothing more to do upstream
    pause: asyncio.TimerHandle | None  # an interceptor's Delay, or a retry's backoff
    refused: int  # attempts refused unseen (REFUSED_STREAM, GOAWAY) and sent elsewhere
    try_timer: asyncio.TimerHandle | None  # the current attempt's per_try_timeout
    ended: bool
    reached: int  # hedged attempts that reached an app and dropped out of the race (hedging.py)
    # (Call's: annotations only, so nothing here shadows them)
    reply_error: Callable[..., None]
    end: Callable[..., None]
    cancel_upstream: Callable[[], None]

    def seen(self) -> int:
        """How many attempts an app saw (the retry rule's count, or the hedges that dropped out
        after they reached an app; the current attempt counts once it sent response
        headers)."""
        earlier = self.retry[1].attempts - 1 if self.retry is not None else 0
        return earlier + self.reached + (self.waiting is not None)

    def try_elsewhere(self, blame: grpc.StatusCode | None) -> bool:
        """The current attempt never reached its app (REFUSED_STREAM, or the endpoint's GOAWAY
        below it): it goes to an endpoint the call has not tried, if the request is still held,
        no app answered this attempt and time is left (Dispatch.retry); False if not."""
        attempt = self.attempts[-1]
        attempt.handle.finish(self.relay.clock.now(), blame, None)
        self.up = None
        if self.waiting is not None or self.sent is None or self.closed or \
                self.refused >= REFUSED_ATTEMPTS - 1:
            return False  # (an app that sent headers saw it: not sent again unseen)
        self.refused += 1
        if not self.relay.retry(cast("Call", self), self.seen(), fallback=False):
            return False
        self.relay.retries[self.service, "refused"] += 1
        return True

    def refuse(self) -> None:
        """The current attempt was refused unseen and goes nowhere else. If no app saw the
        call, the client's stream is reset with REFUSED_STREAM, which gRPC clients retry
        transparently (RFC 9113 8.7); if an earlier attempt reached an app, that would let
        the client send it again, so the call ends with UNAVAILABLE instead."""
        seen = self.seen()
        self.waiting = None
        if seen:
            self.reply_error(_SC.UNAVAILABLE, f"{self.method}: attempt {len(self.attempts)} "
                             f"was refused by {self.attempts[-1].endpoint.address}, and no "
                             f"other instance took it; {seen} earlier attempt(s) failed",
                             "refused")
            return
        self.closed = True
        self.cancel_upstream()
        self.end(_SC.UNAVAILABLE, PROXY, "refused")
        down = self.down
        if not (down.ended_in and down.ended_out):
            down.peer.reset(down, f.REFUSED_STREAM)

    def _pass_headers(self, block: bytes, headers: Headers | None, verbatim: bool) -> None:
        """The response headers held while the attempt had not committed go to the client."""
        self.waiting = None
        self.headers_out = True
        chain = self.chain
        if chain is not None and chain.wants_responses and self.view is not None:
            assert headers is not None
            chain.response_headers(self.view, headers)
        peer = self.down.peer
        if not verbatim:
            assert headers is not None
            block = peer.encode(headers)
        peer.send_headers(self.down, block, False)

    def start_try_timer(self) -> None:
        """An attempt started: with `retry.per_try_timeout`, it has that long to commit."""
        assert self.retry is not None
        per_try = self.retry[0].per_try
        if per_try is not None and self.sent is not None:
            if self.try_timer is not None:
                self.try_timer.cancel()
            self.try_timer = self.relay.call_later(per_try, self._try_timed_out)

    def _try_timed_out(self) -> None:
        """The current attempt did not commit within per_try_timeout: it is cancelled, and
        sent again if the rule allows; if not, the client gets DEADLINE_EXCEEDED."""
        self.try_timer = None
        if self.closed or self.ended or self.sent is None or self.up is None:
            return  # answered, committed, or between two attempts
        if self.try_again(_SC.DEADLINE_EXCEEDED, per_try_timeout=True):
            return
        assert self.retry is not None
        policy, count, _ = self.retry
        self.reply_error(_SC.DEADLINE_EXCEEDED,
                         f"{self.method}: attempt {count.attempts} at "
                         f"{self.attempts[-1].endpoint.address} had no response within "
                         f"retry.per_try_timeout ({policy.per_try:g}s) and was not tried "
                         f"again ({count.stopped})", "per_try_timeout",
                         blame=_SC.DEADLINE_EXCEEDED)

    def try_again(self, code: grpc.StatusCode, headers: Headers | None = None,
                  per_try_timeout: bool = False) -> bool:
        """The current attempt failed with code before it committed: the retry rule decides
        whether the call is sent again (after its backoff or the server's pushback), and the
        attempt is over. False: it is not, and the client gets this attempt's answer."""
        assert self.retry is not None
        policy, count, idempotent = self.retry
        relay = self.relay
        now = relay.clock.now()
        pushback = None
        for key, value in headers or ():
            if key == PUSHBACK:
                pushback = parse_pushback(value)
        decision = policy.decide(count, code, path=self.method, idempotent=idempotent,
                                 pushback_ms=pushback,
                                 deadline_left=None if self.deadline is None
                                 else self.deadline - now, per_try_timeout=per_try_timeout)
        if not decision.retry:
            return False
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        attempt = self.attempts[-1]
        attempt.handle.finish(now, code, pushback if pushback is not None and pushback >= 0
                              else None)
        up, self.up, self.waiting = self.up, None, None
        if up is not None and not (up.ended_in and up.ended_out):
            up.peer.reset(up, f.CANCEL)
        previous = count.attempts - 1
        relay.retries[self.service, "per_try_timeout" if per_try_timeout else code.name] += 1
        self.pause = relay.call_later(decision.delay, lambda: self._again(previous))
        return True

    def _again(self, previous: int) -> None:
        self.pause = None
        if self.closed:
            return
        if not self.relay.retry(cast("Call", self), previous, fallback=True):
            self.reply_error(_SC.UNAVAILABLE, f"no instance of {self.service} to send "
                             f"{self.method} to again (attempt {previous + 1})",
                             "no_healthy_instance")
