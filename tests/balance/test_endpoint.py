"""Endpoint cost, the CallHandle that records each call, and LoadSettings validation."""
from __future__ import annotations

import grpc
import pytest

from grpcmesh.balance.endpoint import PENALISED, LoadSettings
from grpcmesh.clock import FakeClock
from tests.balance.support import OK, answered, endpoint

Code = grpc.StatusCode


# -- cost ---------------------------------------------------------------------------------------


def test_cost_is_estimate_times_in_flight_plus_one() -> None:
    ep = answered("a1", 0.020, now=10.0)
    assert ep.cost(10.0) == pytest.approx(0.020)
    ep.start(10.0)
    ep.start(10.0)
    assert ep.in_flight == 2
    assert ep.cost(10.0) == pytest.approx(0.060)


def test_cost_decays_with_the_estimate() -> None:
    ep = answered("a1", 0.020, now=10.0)
    assert ep.cost(20.0) == pytest.approx(0.020 * 0.36787944, rel=1e-6)  # one decay time


def test_a_new_endpoint_is_free_until_its_probe_is_out() -> None:
    ep = endpoint("a1", LoadSettings(default_rtt=0.030))
    assert ep.cost(0.0) == 0.0
    ep.start(0.0)
    assert ep.cost(0.0) == pytest.approx(0.060)  # default_rtt x (1 + 1)
    ep.start(0.0)
    assert ep.cost(0.0) == pytest.approx(0.090)
    other = endpoint("b1", LoadSettings(default_rtt=0.100))
    other.start(0.0)
    assert other.cost(5.0) == pytest.approx(0.200)  # no estimate, so nothing decays


def test_a_new_endpoint_whose_only_call_was_cancelled_is_free_again() -> None:
    ep = endpoint()
    ep.start(0.0).finish(1.0, None)
    assert ep.rtt.get(1.0) is None
    assert ep.cost(1.0) == 0.0


# -- CallHandle ---------------------------------------------------------------------------------


def test_start_and_finish_count_calls_in_flight() -> None:
    ep = endpoint()
    first, second = ep.start(0.0), ep.start(0.1)
    assert ep.in_flight == 2
    first.finish(0.2, OK)
    assert ep.in_flight == 1
    second.finish(0.3, OK)
    assert (ep.in_flight, ep.calls, ep.failures) == (0, 2, 0)


def test_latency_is_measured_to_the_first_response() -> None:
    clock = FakeClock()
    ep = endpoint()
    handle = ep.start(clock.now())
    clock.advance(0.005)
    handle.first_response(clock.now())
    clock.advance(0.500)
    handle.first_response(clock.now())  # later messages of the stream do not count
    clock.advance(30.0)
    handle.finish(clock.now(), OK)
    assert ep.rtt.get(clock.now()) == pytest.approx(0.005)


def test_latency_is_measured_to_the_finish_without_a_response_message() -> None:
    clock = FakeClock()
    ep = endpoint()
    handle = ep.start(clock.now())
    clock.advance(0.040)
    handle.finish(clock.now(), OK)
    assert ep.rtt.get(clock.now()) == pytest.approx(0.040)


def test_a_first_response_at_clock_zero_counts() -> None:
    clock = FakeClock(start=0.0)
    ep = endpoint()
    handle = ep.start(clock.now())
    handle.first_response(clock.now())  # at t = 0.0, a falsy float
    clock.advance(2.0)
    handle.finish(clock.now(), OK)
    assert ep.rtt.get(clock.now()) == 0.0


def test_the_penalised_codes() -> None:
    assert PENALISED == {Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED, Code.INTERNAL, Code.UNKNOWN}


@pytest.mark.parametrize("code", sorted(PENALISED, key=str))
@pytest.mark.parametrize(("penalty", "pushback_ms", "recorded"), [
    (5.0, None, 5.0),
    (5.0, 100, 5.0),  # a pushback below the penalty does not lower it
    (5.0, 8000, 8.0),  # the server asked for more
    (0.5, 2000, 2.0),
    (5.0, -1, 5.0),  # a negative pushback means "do not retry": ignored here
    (0.1, -5000, 0.1),
])
def test_a_failure_records_a_penalised_sample(code: grpc.StatusCode, penalty: float,
                                              pushback_ms: int | None, recorded: float) -> None:
    ep = endpoint(settings=LoadSettings(failure_penalty=penalty))
    ep.start(10.0).finish(10.001, code, pushback_ms)
    assert ep.rtt.get(10.001) == pytest.approx(recorded)
    assert (ep.in_flight, ep.calls, ep.failures) == (0, 1, 1)


@pytest.mark.parametrize("code", sorted(PENALISED, key=str))
def test_without_a_penalty_a_failure_records_its_real_latency(code: grpc.StatusCode) -> None:
    ep = endpoint(settings=LoadSettings(failure_penalty=0.0))
    ep.start(10.0).finish(10.001, code, 8000)
    assert ep.rtt.get(10.001) == pytest.approx(0.001)
    assert (ep.calls, ep.failures) == (1, 1)


@pytest.mark.parametrize("code", [Code.OK, Code.NOT_FOUND, Code.INVALID_ARGUMENT,
                                  Code.PERMISSION_DENIED, Code.FAILED_PRECONDITION,
                                  Code.ALREADY_EXISTS, Code.UNAUTHENTICATED,
                                  Code.DEADLINE_EXCEEDED])
def test_an_application_answer_records_its_latency_and_no_failure(code: grpc.StatusCode) -> None:
    ep = endpoint()
    ep.start(10.0).finish(10.012, code, 8000)
    assert ep.rtt.get(10.012) == pytest.approx(0.012)
    assert (ep.in_flight, ep.calls, ep.failures) == (0, 1, 0)


def test_a_cancelled_call_records_nothing_but_leaves_the_in_flight_count() -> None:
    ep = answered("a1", 0.020, now=10.0)
    handle = ep.start(10.0)
    handle.finish(40.0, None)
    assert (ep.in_flight, ep.calls, ep.failures) == (0, 1, 0)
    assert ep.rtt.get(10.0) == pytest.approx(0.020)  # no 30 s sample


def test_finishing_twice_changes_nothing() -> None:
    ep = endpoint()
    handle = ep.start(0.0)
    handle.finish(0.010, OK)
    handle.finish(9.0, Code.UNAVAILABLE, 60_000)
    handle.finish(9.0, None)
    assert (ep.in_flight, ep.calls, ep.failures) == (0, 1, 0)
    assert ep.rtt.get(0.010) == pytest.approx(0.010)


def test_an_abandoned_hedge_that_waited_longer_than_the_estimate_raises_it() -> None:
    ep = answered("a1", 0.020, now=10.0)
    handle = ep.start(10.0)
    handle.abandon(10.2)  # it had not answered after 200 ms: it is at least that slow
    assert (ep.in_flight, ep.calls, ep.failures) == (0, 1, 0)
    assert ep.rtt.get(10.2) == pytest.approx(0.2)


def test_an_abandoned_hedge_that_waited_less_says_nothing() -> None:
    ep = answered("a1", 0.020, now=10.0)
    handle = ep.start(10.0)
    handle.abandon(10.005)  # the other attempt won after 5 ms: no sample
    assert ep.in_flight == 0
    assert ep.rtt.get(10.0) == pytest.approx(0.020)
    fresh = endpoint("b1")
    fresh.start(0.0).abandon(1.0)  # nothing to compare with: no sample either
    assert fresh.rtt.get(1.0) is None
    answering = answered("c1", 0.020, now=10.0)
    late = answering.start(10.0)
    late.first_response(10.001)  # (its response had started: not waiting)
    late.abandon(11.0)
    late.finish(12.0, OK)  # once only
    assert answering.rtt.get(10.0) == pytest.approx(0.020)
    assert answering.in_flight == 0


# -- LoadSettings -------------------------------------------------------------------------------


def test_load_settings_defaults_are_linkerds() -> None:
    assert LoadSettings() == LoadSettings(decay=10.0, default_rtt=0.030, failure_penalty=5.0)


def test_a_zero_failure_penalty_is_allowed() -> None:
    assert LoadSettings(failure_penalty=0.0).failure_penalty == 0.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"decay": 0.0}, "decay 0.0 must be positive"),
    ({"decay": -1.0}, "decay -1.0 must be positive"),
    ({"default_rtt": 0.0}, "default_rtt 0.0 must be positive"),
    ({"default_rtt": -0.03}, "default_rtt -0.03 must be positive"),
    ({"failure_penalty": -0.1}, "failure_penalty -0.1 must not be negative"),
])
def test_load_settings_reject_bad_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadSettings(**kwargs)
