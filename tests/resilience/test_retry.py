"""RetryPolicy.decide: each reason, in order, and the never-reached-an-app rule."""
from __future__ import annotations

import random

import grpc
import pytest

from grpcmesh.clock import FakeClock
from grpcmesh.config import Duration, MethodPattern
from grpcmesh.config.policies import BudgetSettings, MethodSet, RetrySettings
from grpcmesh.resilience import STOP, CallRetries, Reason, RetryBudget, RetryPolicy

PATH = "/shop.v1.Orders/Get"


def policy(settings: RetrySettings = RetrySettings(attempts=3), budget: RetryBudget | None = None
           ) -> RetryPolicy:
    return RetryPolicy(settings, budget or RetryBudget(FakeClock()), random.Random(3))


def test_retry_after_a_backoff_then_attempts_run_out() -> None:
    p, call = policy(), CallRetries()
    first = p.decide(call, grpc.StatusCode.UNAVAILABLE, path=PATH, idempotent=True)
    assert first.retry and first.reason is Reason.RETRY and 0 <= first.delay < 0.025
    second = p.decide(call, "UNAVAILABLE", path=PATH, idempotent=True)
    assert second.retry and 0 <= second.delay < 0.050  # n = 2: base x 2
    assert call.attempts == 3
    third = p.decide(call, "UNAVAILABLE", path=PATH, idempotent=True)
    assert (third.retry, third.reason, third.delay) == (False, Reason.ATTEMPTS_EXHAUSTED, 0.0)


@pytest.mark.parametrize(("code", "idempotent", "methods", "reason"), [
    ("INTERNAL", True, MethodSet(), Reason.NOT_RETRYABLE_CODE),
    ("INVALID_ARGUMENT", False, MethodSet("all"), Reason.NOT_RETRYABLE_CODE),
    ("UNAVAILABLE", False, MethodSet(), Reason.NOT_IDEMPOTENT),
    ("UNAVAILABLE", True, MethodSet("list", (MethodPattern("shop.v1.Orders", "Put"),)),
     Reason.NOT_IDEMPOTENT),
])
def test_code_and_method(code: str, idempotent: bool, methods: MethodSet, reason: Reason
                         ) -> None:
    p = policy(RetrySettings(attempts=3, methods=methods))
    decision = p.decide(CallRetries(), code, path=PATH, idempotent=idempotent)
    assert not decision.retry and decision.reason is reason


def test_methods_all_and_lists_override_the_protos() -> None:
    for methods in (MethodSet("all"), MethodSet("list", (MethodPattern("shop.v1.Orders"),))):
        p = policy(RetrySettings(attempts=3, methods=methods))
        assert p.decide(CallRetries(), "UNAVAILABLE", path=PATH, idempotent=False).retry


def test_pushback() -> None:
    p, call = policy(RetrySettings(attempts=5)), CallRetries()
    stop = p.decide(call, "UNAVAILABLE", path=PATH, idempotent=True, pushback_ms=STOP)
    assert not stop.retry and stop.reason is Reason.PUSHBACK
    p.decide(call, "UNAVAILABLE", path=PATH, idempotent=True)  # n = 1
    waited = p.decide(call, "UNAVAILABLE", path=PATH, idempotent=True, pushback_ms=700)
    assert waited.retry and waited.delay == 0.7
    # after a pushback the backoff starts again from base (A6)
    after = p.decide(call, "UNAVAILABLE", path=PATH, idempotent=True)
    assert after.retry and after.delay < 0.025 and call.attempts == 4
    at_once = p.decide(call, "UNAVAILABLE", path=PATH, idempotent=True, pushback_ms=0)
    assert at_once.retry and at_once.delay == 0.0  # a 0 pushback: retry at once
    assert call.attempts == 5


def test_the_deadline_spans_attempts() -> None:
    p = policy()
    late = p.decide(CallRetries(), "UNAVAILABLE", path=PATH, idempotent=True, pushback_ms=500,
                    deadline_left=0.5)
    assert not late.retry and late.reason is Reason.DEADLINE
    ok = p.decide(CallRetries(), "UNAVAILABLE", path=PATH, idempotent=True, pushback_ms=500,
                  deadline_left=0.6)
    assert ok.retry and ok.delay == 0.5


def test_the_budget_is_checked_last_and_only_then_spent() -> None:
    budget = RetryBudget(FakeClock(), ratio=0.2, min_per_second=0)
    p = policy(RetrySettings(attempts=5, budget=BudgetSettings(0.2, 0)), budget)
    for _ in range(5):
        budget.deposit()
    call = CallRetries()
    assert p.decide(call, "UNAVAILABLE", path=PATH, idempotent=True).retry  # 1 of 1
    no = p.decide(call, "UNAVAILABLE", path=PATH, idempotent=True)
    assert not no.retry and no.reason is Reason.BUDGET_EXHAUSTED
    assert call.attempts == 2 and budget.exhausted == 1
    # a refusal for another reason takes nothing from the budget
    p.decide(CallRetries(), "INTERNAL", path=PATH, idempotent=True)
    assert budget.exhausted == 1 and budget.totals() == (5, 1)


def test_a_per_try_timeout_is_retried_whatever_codes_says_and_a_no_is_noted() -> None:
    p = policy(RetrySettings(attempts=2, codes=("UNAVAILABLE",)), RetryBudget(FakeClock()))
    call = CallRetries()
    no = p.decide(call, "DEADLINE_EXCEEDED", path=PATH, idempotent=True)
    assert (no.retry, no.reason, call.stopped) == (False, Reason.NOT_RETRYABLE_CODE,
                                                   "not_retryable_code")
    yes = p.decide(call, "DEADLINE_EXCEEDED", path=PATH, idempotent=True, per_try_timeout=True)
    assert yes.retry and call.attempts == 2
    again = p.decide(call, "DEADLINE_EXCEEDED", path=PATH, idempotent=True,
                     per_try_timeout=True)
    assert not again.retry and call.stopped == "attempts_exhausted"

def test_backoff_comes_from_the_settings() -> None:
    p = policy(RetrySettings(attempts=5, backoff_base=Duration(100), backoff_max=Duration(150)))
    assert p.backoff.cap(1) == 0.1 and p.backoff.cap(2) == 0.15
