"""OutlierDetector: consecutive failures, success rate (A50), ejection times, the cap."""
from __future__ import annotations

import grpc
import pytest

from grpcmesh.clock import FakeClock
from grpcmesh.config import Duration
from grpcmesh.config.policies import OutlierSettings, SuccessRateSettings
from grpcmesh.resilience import OutlierDetector

ADDRS = [f"10.0.0.{i}:50051" for i in range(1, 11)]


def detector(clock: FakeClock, **kw: object) -> OutlierDetector:
    d = OutlierDetector(OutlierSettings(**kw), clock)  # type: ignore[arg-type]
    d.sync(ADDRS)
    return d


def fail(d: OutlierDetector, address: str, n: int, code: str = "UNAVAILABLE") -> None:
    for _ in range(n):
        d.record(address, code)


def test_consecutive_failures_eject_at_once() -> None:
    clock = FakeClock(0.0)
    d = detector(clock)
    fail(d, ADDRS[0], 4)
    assert not d.ejected(ADDRS[0])
    d.record(ADDRS[0], grpc.StatusCode.INTERNAL)
    state = d.state(ADDRS[0])
    assert state is not None and state.ejected and state.ejected_until == 30.0
    assert state.ejection_reason == ("5 consecutive failures (the last: INTERNAL; the limit is "
                                     "5); ejected for 30 s (ejection 1)")
    assert state.to_dict() == {"ejected": True, "ejected_until": 30.0,
                               "ejection_reason": state.ejection_reason}


@pytest.mark.parametrize("code", ["OK", "NOT_FOUND", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"])
def test_other_answers_reset_the_count(code: str) -> None:
    d = detector(FakeClock(0.0))
    fail(d, ADDRS[0], 4)
    d.record(ADDRS[0], code)
    fail(d, ADDRS[0], 4, "DEADLINE_EXCEEDED")
    assert not d.ejected(ADDRS[0])


def test_cancelled_calls_do_not_count() -> None:
    d = detector(FakeClock(0.0))
    fail(d, ADDRS[0], 4)
    d.record(ADDRS[0], None)
    d.record(ADDRS[0], "UNKNOWN")
    assert d.ejected(ADDRS[0])


def test_ejection_ends_and_grows_with_each_ejection() -> None:
    clock = FakeClock(0.0)
    d = detector(clock, interval=Duration(10_000), base_ejection=Duration(30_000))
    fail(d, ADDRS[0], 5)
    clock.advance(29.9)
    assert d.ejected(ADDRS[0])
    clock.advance(0.1)
    assert not d.ejected(ADDRS[0])  # back after 30 s
    state = d.state(ADDRS[0])
    assert state is not None and state.ejected_until is None and state.to_dict()[
        "ejection_reason"] is None
    fail(d, ADDRS[0], 5)  # at once again: the second ejection lasts 2 x 30 s
    assert state.ejected_until == pytest.approx(30.0 + 60.0) and state.ejections == 2


def test_ejection_time_is_capped_at_300_s() -> None:
    clock = FakeClock(0.0)
    d = detector(clock, base_ejection=Duration(200_000), interval=Duration(3_600_000))
    fail(d, ADDRS[0], 5)
    clock.advance(200)
    fail(d, ADDRS[0], 5)  # 2 x 200 s would be 400 s: capped at 300 s
    state = d.state(ADDRS[0])
    assert state is not None and state.ejected_until == pytest.approx(500.0)
    d2 = detector(FakeClock(0.0), base_ejection=Duration(600_000))
    fail(d2, ADDRS[0], 5)  # a base above 300 s is the cap itself (A50)
    assert d2.endpoints[ADDRS[0]].ejected_until == 600.0


def test_a_healthy_interval_forgives_one_ejection() -> None:
    clock = FakeClock(0.0)
    d = detector(clock, interval=Duration(10_000), base_ejection=Duration(1_000))
    fail(d, ADDRS[0], 5)
    clock.advance(10)  # back after 1 s; this interval lowers the count from 1 to 0
    assert not d.ejected(ADDRS[0])
    clock.advance(10)
    d.record(ADDRS[0], "OK")
    assert d.endpoints[ADDRS[0]].ejections == 0


def test_max_ejection_percent_and_at_least_one() -> None:
    d = detector(FakeClock(0.0), max_ejection_percent=20)  # 10 endpoints: 2
    for address in ADDRS[:4]:
        fail(d, address, 5)
    assert [d.ejected(a) for a in ADDRS[:4]] == [True, True, False, False]
    assert d.max_ejected() == 2
    tiny = detector(FakeClock(0.0), max_ejection_percent=0)
    fail(tiny, ADDRS[0], 5)
    fail(tiny, ADDRS[1], 5)
    assert tiny.ejected(ADDRS[0]) and not tiny.ejected(ADDRS[1])


def test_success_rate_ejects_the_outlier_at_the_interval() -> None:
    clock = FakeClock(0.0)
    d = detector(clock, consecutive_failures=1000, max_ejection_percent=50,
                 success_rate=SuccessRateSettings(1.9, 5, 100))
    for address in ADDRS[:9]:
        for i in range(100):
            d.record(address, "UNAVAILABLE" if i < 2 else "OK")  # 98%
    for i in range(100):
        d.record(ADDRS[9], "INTERNAL" if i % 2 else "OK")  # 50%
    assert not d.ejected(ADDRS[9])  # not before the interval ends
    clock.advance(10)
    assert d.ejected(ADDRS[9]) and not any(d.ejected(a) for a in ADDRS[:9])
    reason = d.endpoints[ADDRS[9]].ejection_reason
    assert reason is not None and reason.startswith("success rate 50.0% over 100 calls is "
                                                    "below ")
    assert "1.9 x stdev" in reason and "across 10 endpoints" in reason


def test_success_rate_needs_min_hosts_and_min_requests() -> None:
    clock = FakeClock(0.0)
    d = detector(clock, consecutive_failures=1000,
                 success_rate=SuccessRateSettings(1.9, 5, 100))
    for address in ADDRS[:4]:  # 4 endpoints with enough calls: fewer than min_hosts
        for _ in range(100):
            d.record(address, "OK")
    for i in range(99):  # one more, with 99 calls: not counted
        d.record(ADDRS[4], "INTERNAL")
    clock.advance(10)
    assert not any(d.ejected(a) for a in ADDRS)
    assert d.endpoints[ADDRS[0]].successes == 0  # the counts start again each interval


def test_sync_follows_the_pool() -> None:
    d = detector(FakeClock(0.0))
    fail(d, ADDRS[0], 5)
    d.sync(ADDRS[1:] + ["10.0.0.99:1"])
    assert d.state(ADDRS[0]) is None and d.state("10.0.0.99:1") is not None
    d.record("10.0.0.100:1", "OK")  # an address it was not told of: tracked from now on
    assert d.state("10.0.0.100:1") is not None
