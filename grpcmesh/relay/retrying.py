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
from grpcmesh.relay.record import Attempt
from grpcmesh.relay.request_side import RequestSide
from grpcmesh.relay.settings import PUSHBACK
from grpcmesh.resilience.backoff import parse_pushback

if TYPE_CHECKING:
    from grpcmesh.interceptors.api import CallView
    from grpcmesh.interceptors.chain import Chain
    from grpcmesh.relay.call import Call
    from grpcmesh.resilience.retry import CallRetries, RetryPolicy

_SC = grpc.StatusCode


class Retrying(RequestSide):
    """Call's retry methods (a mixin: Call holds the state it does not)."""

    __slots__ = ("headers_out", "pause", "retry", "waiting")
    retry: tuple[RetryPolicy, CallRetries, bool] | None  # the rule's (policy, count, idempotent)
    waiting: tuple[bytes, Headers | None, bool] | None  # response headers held: block, ...
    attempts: list[Attempt]
    chain: Chain | None
    view: CallView | None
    headers_out: bool  # response headers went to the client
    method: str
    service: str
    deadline: float | None
    closed: bool
    pause: asyncio.TimerHandle | None  # an interceptor's Delay, or a retry's backoff
    # (Call's: annotations only, so nothing here shadows it)
    reply_error: Callable[..., None]

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

    def try_again(self, code: grpc.StatusCode, headers: Headers | None = None) -> bool:
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
                                 else self.deadline - now)
        if not decision.retry:
            return False
        attempt = self.attempts[-1]
        attempt.handle.finish(now, code, None)
        up, self.up, self.waiting = self.up, None, None
        if up is not None and not (up.ended_in and up.ended_out):
            up.peer.reset(up, f.CANCEL)
        previous = count.attempts - 1
        self.pause = relay.call_later(decision.delay, lambda: self._again(previous))
        return True

    def _again(self, previous: int) -> None:
        self.pause = None
        if self.closed:
            return
        if not self.relay.retry(cast("Call", self), previous):
            self.reply_error(_SC.UNAVAILABLE, f"no instance of {self.service} to send "
                             f"{self.method} to again (attempt {previous + 1})",
                             "no_healthy_instance")
