"""The example app's knobs and counts (grpcmesh/example/behaviour.py): pure, seeded rng."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from grpcmesh.example.behaviour import (
    METHODS,
    CallCounts,
    CountsFile,
    EchoBehaviour,
    Plan,
    write_counts,
)

UNAVAILABLE, INTERNAL = 14, 13


class NoChance(random.Random):
    """An rng that must not be asked."""

    def random(self) -> float:
        raise AssertionError("the behaviour drew from its rng")


class Scripted(random.Random):
    """An rng that returns the given numbers in order."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def fates(behaviour: EchoBehaviour, n: int) -> list[Plan]:
    return [behaviour.plan() for _ in range(n)]


def test_without_knobs_every_call_is_answered_at_once_and_nothing_is_drawn() -> None:
    behaviour = EchoBehaviour("a", rng=NoChance())
    assert fates(behaviour, 3) == [Plan(0.0, 0, False)] * 3


def test_fail_code_alone_fails_every_call_as_before_without_drawing() -> None:
    behaviour = EchoBehaviour("a", delay_ms=5, fail_code=UNAVAILABLE, rng=NoChance())
    assert fates(behaviour, 3) == [Plan(5.0, UNAVAILABLE, False)] * 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fail_percent_fails_that_share_and_a_seed_repeats_the_same_calls(seed: int) -> None:
    def run() -> list[int]:
        behaviour = EchoBehaviour("a", fail_code=UNAVAILABLE, fail_percent=30,
                                  rng=random.Random(seed))
        return [plan.fail_code for plan in fates(behaviour, 10_000)]
    codes = run()
    assert set(codes) == {0, UNAVAILABLE}
    assert 2_850 <= codes.count(UNAVAILABLE) <= 3_150  # 30% +- 5 sigma (sigma ~46)
    assert run() == codes


def test_fail_percent_zero_never_fails_and_draws_nothing() -> None:
    behaviour = EchoBehaviour("a", fail_code=INTERNAL, fail_percent=0, rng=NoChance())
    assert fates(behaviour, 3) == [Plan(0.0, 0, False)] * 3


def test_slow_percent_adds_slow_ms_to_that_share_of_the_calls() -> None:
    behaviour = EchoBehaviour("a", delay_ms=10, slow_percent=5, slow_ms=200,
                              rng=random.Random(7))
    plans = fates(behaviour, 20_000)
    slow = [p for p in plans if p.slow]
    assert 850 <= len(slow) <= 1_150  # 5% +- 5 sigma (sigma ~31)
    assert {p.delay_ms for p in slow} == {210.0}
    assert {p.delay_ms for p in plans if not p.slow} == {10.0}


def test_the_slow_draw_comes_first_then_the_failure() -> None:
    behaviour = EchoBehaviour("a", fail_code=UNAVAILABLE, fail_percent=50, slow_percent=50,
                              slow_ms=100, rng=Scripted(0.1, 0.9, 0.9, 0.1))
    assert behaviour.plan() == Plan(100.0, 0, True)  # slow (0.1 < 0.5), answered (0.9)
    assert behaviour.plan() == Plan(0.0, UNAVAILABLE, False)  # not slow, failed


def test_a_request_s_own_delay_and_code_replace_the_server_s_and_always_apply() -> None:
    behaviour = EchoBehaviour("a", delay_ms=10, fail_code=INTERNAL, fail_percent=0,
                              slow_percent=100, slow_ms=200, rng=NoChance())
    assert behaviour.plan(delay_ms=1, fail_code=UNAVAILABLE) == Plan(201.0, UNAVAILABLE, True)
    assert behaviour.plan() == Plan(210.0, 0, True)


def test_recover_stops_failures_and_slow_calls_and_uses_the_recovered_delay() -> None:
    behaviour = EchoBehaviour("a", delay_ms=50, fail_code=INTERNAL, recovered_delay_ms=2,
                              slow_percent=100, slow_ms=200, rng=NoChance())
    behaviour.recover()
    assert fates(behaviour, 2) == [Plan(2.0, 0, False)] * 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"delay_ms": -1}, "delay_ms -1 must not be negative"),
    ({"slow_ms": -5}, "slow_ms -5 must not be negative"),
    ({"recovered_delay_ms": -2}, "recovered_delay_ms -2 must not be negative"),
    ({"fail_code": 17}, "fail code 17 is not a gRPC status code (0-16)"),
    ({"fail_percent": 100.5}, "fail_percent 100.5 is out of range: expected 0-100"),
    ({"slow_percent": -1}, "slow_percent -1 is out of range: expected 0-100"),
    ({"slow_percent": float("nan")}, "slow_percent nan is out of range"),
])
def test_bad_knobs_are_refused_with_their_name(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EchoBehaviour("a", **kwargs)  # type: ignore[arg-type]


def test_counts_are_kept_per_method_and_written_atomically_with_a_sequence(
        tmp_path: Path) -> None:
    counts = CallCounts()
    counts["Get"].calls += 3
    counts["Get"].failed += 1
    counts["Unary"].calls += 2
    counts["Unary"].cancelled += 1
    path = tmp_path / "counts.json"
    file = CountsFile(str(path), "e0", counts)
    file.write()
    first = json.loads(path.read_text())
    assert first["seq"] == 0 and first["instance"] == "e0" and first["pid"] == os.getpid()
    assert set(first["methods"]) == set(METHODS)
    assert first["methods"]["Get"] == {"calls": 3, "failed": 1, "slow": 0, "cancelled": 0}
    assert first["methods"]["Unary"] == {"calls": 2, "failed": 0, "slow": 0, "cancelled": 1}
    counts["Get"].slow += 1
    file.write()
    second = json.loads(path.read_text())
    assert second["seq"] == 1 and second["methods"]["Get"]["slow"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["counts.json"]  # no temporary file left


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_counts(str(tmp_path / "c.json"), {"not json": object()})
    assert list(tmp_path.iterdir()) == []
