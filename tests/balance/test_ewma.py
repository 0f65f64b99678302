"""PeakEwma: peak rule, time-weighted blend, and a decay toward zero that reading does not change."""
from __future__ import annotations

import math
import random

import pytest

from grpcmesh.balance.ewma import PeakEwma


def test_no_estimate_before_the_first_sample() -> None:
    ewma = PeakEwma(10.0)
    assert ewma.get(0.0) is None
    assert ewma.get(1e6) is None


def test_first_sample_becomes_the_estimate() -> None:
    ewma = PeakEwma(10.0)
    ewma.observe(0.05, 100.0)
    assert ewma.get(100.0) == 0.05


def test_a_higher_sample_replaces_the_estimate_at_once() -> None:
    ewma = PeakEwma(10.0)
    ewma.observe(0.010, 0.0)
    ewma.observe(0.500, 0.001)
    assert ewma.get(0.001) == 0.500


def test_a_lower_sample_blends_into_the_decayed_estimate_with_w_exp_minus_elapsed() -> None:
    ewma = PeakEwma(10.0)
    ewma.observe(0.100, 0.0)
    ewma.observe(0.020, 2.0)
    w = math.exp(-2.0 / 10.0)
    decayed = 0.100 * w
    assert ewma.get(2.0) == pytest.approx(decayed * w + 0.020 * (1 - w), rel=1e-12)
    assert ewma.get(2.0) == pytest.approx(0.0706574, rel=1e-6)


def test_a_lower_sample_lands_between_itself_and_the_decayed_estimate() -> None:
    rng = random.Random(5)
    ewma = PeakEwma(10.0)
    now = 0.0
    ewma.observe(0.5, now)
    for _ in range(2000):
        now += rng.uniform(0.0, 3.0)
        before = ewma.get(now)
        assert before is not None
        sample = rng.uniform(0.0, 0.6)
        ewma.observe(sample, now)
        after = ewma.get(now)
        assert after is not None
        if sample > before:
            assert after == sample
        else:
            assert sample <= after <= before  # a fast answer never makes it look slower


def test_a_lower_sample_at_the_same_instant_leaves_the_estimate() -> None:
    ewma = PeakEwma(10.0)
    ewma.observe(0.100, 5.0)
    ewma.observe(0.001, 5.0)  # w = exp(0) = 1: no time has passed, so no weight for the sample
    assert ewma.get(5.0) == 0.100


def test_the_peak_rule_compares_with_the_decayed_estimate() -> None:
    ewma = PeakEwma(10.0)
    ewma.observe(0.100, 0.0)
    # After one decay time the estimate has fallen to 0.1/e = 0.0368, so 0.05 is a new peak.
    ewma.observe(0.050, 10.0)
    assert ewma.get(10.0) == 0.050


def test_the_estimate_decays_toward_zero_when_read_later() -> None:
    ewma = PeakEwma(10.0)
    ewma.observe(0.200, 0.0)
    assert ewma.get(0.0) == 0.200
    assert ewma.get(5.0) == pytest.approx(0.200 * math.exp(-0.5), rel=1e-12)
    assert ewma.get(30.0) == pytest.approx(0.200 * math.exp(-3.0), rel=1e-12)
    assert ewma.get(-1.0) == 0.200  # a read before the last sample does not grow it


def test_reading_is_pure() -> None:
    ewma = PeakEwma(10.0)
    ewma.observe(0.200, 0.0)
    first = ewma.get(7.0)
    assert ewma.get(7.0) == first
    assert ewma.get(3.0) == pytest.approx(0.200 * math.exp(-0.3), rel=1e-12)
    assert ewma.get(7.0) == first


def test_how_often_it_is_read_does_not_change_what_it_records() -> None:
    read_often, never_read = PeakEwma(10.0), PeakEwma(10.0)
    samples = [(0.0, 0.050), (0.3, 0.010), (1.0, 0.200), (4.0, 0.020), (4.1, 0.015),
               (12.0, 0.030), (12.5, 0.001), (40.0, 0.002)]
    seen_often, seen_never = [], []
    previous = 0.0
    for at, sample in samples:
        t = previous
        while t < at:  # read every 50 ms between samples
            read_often.get(t)
            t += 0.05
        read_often.observe(sample, at)
        never_read.observe(sample, at)
        seen_often.append(read_often.get(at))
        seen_never.append(never_read.get(at))
        previous = at
    assert seen_often == seen_never


def test_steady_samples_converge_to_the_sample() -> None:
    ewma = PeakEwma(10.0)
    ewma.observe(0.500, 0.0)
    seen: list[float] = []
    for step in range(1, 1001):  # 0.020 every 100 ms for 100 s
        ewma.observe(0.020, step * 0.1)
        estimate = ewma.get(step * 0.1)
        assert estimate is not None
        seen.append(estimate)
    assert seen == sorted(seen, reverse=True)  # it only comes down
    assert seen[9] > 0.3  # one second in, one slow answer still dominates
    assert ewma.get(100.0) == pytest.approx(0.020, rel=1e-9)


def test_steady_samples_pull_a_low_estimate_up_to_the_sample_at_once() -> None:
    ewma = PeakEwma(10.0)
    ewma.observe(0.005, 0.0)
    for step in range(1, 11):
        ewma.observe(0.020, step * 0.1)
        assert ewma.get(step * 0.1) == 0.020


@pytest.mark.parametrize("decay", [0.0, -1.0])
def test_decay_must_be_positive(decay: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        PeakEwma(decay)
