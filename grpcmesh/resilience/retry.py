"""Whether a failed attempt is tried again, and after how long (gRFC A6, issue 11).

`RetryPolicy.decide()` is asked once per failed attempt that reached an app and has not
committed (commit.py says when an attempt commits; a committed call is never retried). An
attempt that never reached an app (connection refused, REFUSED_STREAM, GOAWAY above its
stream) is not asked about: the relay sends it to another endpoint whatever the rule says
(A6's transparent retries; relay/retrying.py, Retrying.try_elsewhere). The checks, in order,
and the reason given when one says no:

1. `not_retryable_code`: the status is not in `codes` (an attempt cut by `per_try_timeout`
   passes this check: retrying it is what the setting is for).
2. `not_idempotent`: `methods` does not cover the method (by default: the protos do not mark
   it IDEMPOTENT or NO_SIDE_EFFECTS).
3. `attempts_exhausted`: `attempts` attempts (the first one included) reached an app.
4. `pushback`: the server sent a negative (or unparseable) grpc-retry-pushback-ms.
5. `deadline`: the wait (the pushback, else the backoff) would end at or after the call's
   deadline: the call fails now with the last attempt's status rather than later.
6. `budget_exhausted`: the retry budget refuses (checked last, as a yes takes a token).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

import grpc

from grpcmesh.config.policies import RetrySettings
from grpcmesh.resilience.backoff import Backoff
from grpcmesh.resilience.budget import RetryBudget


class Reason(StrEnum):
    RETRY = "retry"  # yes: after the backoff or the pushback
    NOT_RETRYABLE_CODE = "not_retryable_code"
    NOT_IDEMPOTENT = "not_idempotent"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    PUSHBACK = "pushback"
    DEADLINE = "deadline"
    BUDGET_EXHAUSTED = "budget_exhausted"


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool
    delay: float  # seconds to wait before the next attempt; 0 when retry is False
    reason: Reason


class CallRetries:
    """One call's count: attempts that reached an app (A6's count, and the value of
    grpc-previous-rpc-attempts on the next one), retries since the last pushback (the backoff's
    n starts again after one), and why the rule last said no."""

    __slots__ = ("attempts", "since_pushback", "stopped")

    def __init__(self) -> None:
        self.attempts = 1
        self.since_pushback = 0
        self.stopped = ""  # the reason of the last decision not to retry, for the end record


class RetryPolicy:
    __slots__ = ("backoff", "budget", "codes", "per_try", "settings")

    def __init__(self, settings: RetrySettings, budget: RetryBudget, rng: random.Random
                 ) -> None:
        self.settings = settings
        self.budget = budget
        self.codes = frozenset(settings.codes)
        self.per_try = (settings.per_try_timeout.seconds if settings.per_try_timeout is not None
                        else None)
        self.backoff = Backoff(settings.backoff_base.seconds, settings.backoff_max.seconds, rng)

    def decide(self, call: CallRetries, code: grpc.StatusCode | str, *, path: str,
               idempotent: bool, pushback_ms: int | None = None,
               deadline_left: float | None = None, per_try_timeout: bool = False
               ) -> Decision:
        """code: the failed attempt's status; idempotent: what the protos say of the method;
        pushback_ms: from backoff.parse_pushback; deadline_left: seconds, None for none;
        per_try_timeout: the attempt was cut by per_try_timeout (retried whatever `codes`
        says: that is what the setting is for). A no is noted in call.stopped (the end
        record's retry_stop)."""
        decision = self._decide(call, code, path, idempotent, pushback_ms, deadline_left,
                                per_try_timeout)
        if not decision.retry:
            call.stopped = decision.reason
        return decision

    def _decide(self, call: CallRetries, code: grpc.StatusCode | str, path: str,
                idempotent: bool, pushback_ms: int | None, deadline_left: float | None,
                per_try_timeout: bool) -> Decision:
        name = code.name if isinstance(code, grpc.StatusCode) else code
        if name not in self.codes and not per_try_timeout:
            return _no(Reason.NOT_RETRYABLE_CODE)
        if not self.settings.methods.covers(path, idempotent):
            return _no(Reason.NOT_IDEMPOTENT)
        if call.attempts >= self.settings.attempts:
            return _no(Reason.ATTEMPTS_EXHAUSTED)
        delay = self.backoff.after(call.since_pushback + 1, pushback_ms)
        if delay is None:
            return _no(Reason.PUSHBACK)
        if deadline_left is not None and delay >= deadline_left:
            return _no(Reason.DEADLINE)
        if not self.budget.withdraw():
            return _no(Reason.BUDGET_EXHAUSTED)
        call.attempts += 1
        call.since_pushback = 0 if pushback_ms is not None else call.since_pushback + 1
        return Decision(True, delay, Reason.RETRY)


def _no(reason: Reason) -> Decision:
    return Decision(False, 0.0, reason)
