"""Pickers one pick at a time: P2C's draws and comparison, each kind's choice, and the settings."""
from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable

import pytest

from grpcmesh.balance.endpoint import Endpoint, LoadSettings
from grpcmesh.balance.picker import (
    PICKER_KINDS,
    BalancerSettings,
    PowerOfTwo,
    RandomPicker,
    RoundRobin,
    least_request,
    make_picker,
    peak_ewma,
)
from grpcmesh.clock import FakeClock
from tests.balance.support import OK, ScriptedRng, answered, endpoint


def endpoints(n: int) -> list[Endpoint]:
    return [endpoint(f"e{i}") for i in range(n)]


def names(picked: object) -> list[str]:
    return [e.instance.instance_id for e in picked]  # type: ignore[attr-defined]


class RecordingCost:
    """A cost function that returns fixed costs and records which endpoints it was asked about."""

    def __init__(self, costs: dict[Endpoint, float] | None = None) -> None:
        self.costs = costs or {}
        self.asked: list[Endpoint] = []

    def __call__(self, ep: Endpoint) -> float:
        self.asked.append(ep)
        return self.costs.get(ep, 1.0)


def never_called(ep: Endpoint) -> float:
    raise AssertionError(f"cost of {ep} asked for")


# -- PowerOfTwo ---------------------------------------------------------------------------------


def test_p2c_always_compares_two_distinct_endpoints() -> None:
    eps = endpoints(5)
    cost = RecordingCost()
    picker = PowerOfTwo(random.Random(11), cost)
    for _ in range(5000):
        picked = picker.pick(eps)
        assert picked is not None
    assert len(cost.asked) == 10_000  # two costs per pick
    pairs = list(zip(cost.asked[::2], cost.asked[1::2], strict=True))
    assert all(a is not b for a, b in pairs)
    unordered = Counter(frozenset(names(p)) for p in pairs)
    assert len(unordered) == 10  # every one of the C(5, 2) pairs is drawn...
    assert min(unordered.values()) > 400  # ...about 500 times each


@pytest.mark.parametrize(("i", "j", "first", "second"), [
    (0, 0, 0, 1), (0, 1, 0, 2), (1, 0, 1, 0), (1, 1, 1, 2), (2, 0, 2, 0), (2, 1, 2, 1)])
def test_p2c_second_draw_skips_the_first(i: int, j: int, first: int, second: int) -> None:
    eps = endpoints(3)
    rng = ScriptedRng(i, j)
    # Equal costs: the first drawn wins the tie.
    assert PowerOfTwo(rng, lambda e: 1.0).pick(eps) is eps[first]  # type: ignore[arg-type]
    assert rng.calls == [3, 2]
    cheaper = {eps[second]: 0.5}
    rng = ScriptedRng(i, j)
    assert PowerOfTwo(rng, RecordingCost(cheaper)).pick(eps) is eps[second]  # type: ignore[arg-type]


def test_p2c_lower_cost_wins() -> None:
    cheap, dear = endpoints(2)
    picker = PowerOfTwo(random.Random(1), RecordingCost({cheap: 0.010, dear: 0.011}))
    assert {picker.pick([cheap, dear]) for _ in range(100)} == {cheap}
    assert {picker.pick([dear, cheap]) for _ in range(100)} == {cheap}


def test_p2c_picks_a_lone_candidate_without_asking_its_cost() -> None:
    only, other = endpoints(2)
    picker = PowerOfTwo(random.Random(1), never_called)
    assert picker.pick([only]) is only
    assert picker.pick([only, other], exclude={other}) is only


def test_p2c_with_no_candidate_picks_none() -> None:
    eps = endpoints(3)
    picker = PowerOfTwo(random.Random(1), never_called)
    assert picker.pick([]) is None
    assert picker.pick(eps, exclude=set(eps)) is None


def test_p2c_never_picks_or_weighs_an_excluded_endpoint() -> None:
    eps = endpoints(4)
    cost = RecordingCost({eps[0]: 0.0})  # the cheapest, but this call already tried it
    picker = PowerOfTwo(random.Random(3), cost)
    picked = Counter(picker.pick(eps, exclude={eps[0]}) for _ in range(3000))
    assert eps[0] not in picked and eps[0] not in cost.asked
    assert set(picked) == set(eps[1:])


# -- peak_ewma and least_request ------------------------------------------------------------------


def test_peak_ewma_weighs_latency_by_calls_in_flight() -> None:
    clock = FakeClock(10.0)
    fast = answered("fast", 0.010, now=10.0)  # 10 ms with 3 in flight: 0.010 x 4 = 0.040
    slow = answered("slow", 0.030, now=10.0)  # 30 ms and idle:           0.030 x 1 = 0.030
    for _ in range(3):
        fast.start(10.0)
    picker = peak_ewma(random.Random(1), clock)
    assert {picker.pick([fast, slow]) for _ in range(50)} == {slow}
    fast.start(10.0).finish(10.0, None)  # 3 in flight still
    slow.start(10.0)  # now 0.030 x 2 = 0.060 > 0.040
    assert {picker.pick([fast, slow]) for _ in range(50)} == {fast}


def test_peak_ewma_reads_the_clock_it_was_given() -> None:
    clock = FakeClock(10.0)
    slow = answered("slow", 0.200, now=10.0)  # then idle: 0.200 x e^(-idle / 10 s)
    picker = peak_ewma(random.Random(1), clock)
    clock.advance(29.0)
    fast = answered("fast", 0.010, now=clock.now())
    assert picker.pick([slow, fast]) is fast  # slow: 0.200 x e^-2.9 = 0.01100 > 0.010
    clock.advance(1.0)
    fast.start(clock.now() - 0.010).finish(clock.now(), OK)  # fast is still 0.010
    assert picker.pick([slow, fast]) is slow  # slow: 0.200 x e^-3.0 = 0.00996 < 0.010


def test_peak_ewma_gives_a_new_endpoint_one_probe() -> None:
    clock = FakeClock(10.0)
    known = answered("known", 0.010, now=10.0)
    new = endpoint("new")
    picker = peak_ewma(random.Random(1), clock)
    assert picker.pick([known, new]) is new  # costs 0
    new.start(clock.now())  # the probe is out: 0.030 x 2 = 0.060
    assert {picker.pick([known, new]) for _ in range(50)} == {known}


def test_least_request_prefers_fewer_calls_in_flight() -> None:
    busy, idle = endpoints(2)
    busy.start(0.0)
    busy.start(0.0)
    idle.start(0.0)
    picker = least_request(random.Random(1))
    assert {picker.pick([busy, idle]) for _ in range(50)} == {idle}


def test_least_request_ignores_latency() -> None:
    slow = answered("slow", 2.0)
    fast = answered("fast", 0.001)
    fast.start(0.0)
    picker = least_request(random.Random(1))
    assert {picker.pick([slow, fast]) for _ in range(50)} == {slow}


# -- RandomPicker and RoundRobin ------------------------------------------------------------------


def test_random_is_roughly_uniform() -> None:
    eps = endpoints(4)
    picker = RandomPicker(random.Random(42))
    counts = Counter(picker.pick(eps) for _ in range(8000))
    assert set(counts) == set(eps)
    assert all(1850 < c < 2150 for c in counts.values()), counts


def test_random_honours_exclude() -> None:
    eps = endpoints(4)
    picker = RandomPicker(random.Random(42))
    counts = Counter(picker.pick(eps, exclude={eps[1], eps[2]}) for _ in range(2000))
    assert set(counts) == {eps[0], eps[3]}
    assert picker.pick(eps, exclude=set(eps)) is None
    assert picker.pick([]) is None


def test_round_robin_takes_each_in_turn() -> None:
    eps = endpoints(3)
    picker = RoundRobin()
    assert names(picker.pick(eps) for _ in range(7)) == ["e0", "e1", "e2", "e0", "e1", "e2", "e0"]


def test_round_robin_skips_excluded_and_continues_after_the_pick() -> None:
    eps = endpoints(3)
    picker = RoundRobin()
    assert picker.pick(eps, exclude={eps[0]}) is eps[1]
    assert picker.pick(eps) is eps[2]
    assert picker.pick(eps, exclude={eps[0], eps[1]}) is eps[2]
    assert picker.pick(eps) is eps[0]
    assert picker.pick(eps, exclude=set(eps)) is None
    assert picker.pick([]) is None


def test_round_robin_survives_a_shrinking_pool() -> None:
    eps = endpoints(4)
    picker = RoundRobin()
    for _ in range(3):
        picker.pick(eps)
    assert names(picker.pick(eps[:2]) for _ in range(3)) == ["e1", "e0", "e1"]


# -- make_picker and BalancerSettings -------------------------------------------------------------


def test_picker_kinds() -> None:
    assert PICKER_KINDS == ("peak_ewma", "least_request", "round_robin", "random")


@pytest.mark.parametrize(("kind", "expected"), [
    ("peak_ewma", "lat"), ("least_request", "req"), ("round_robin", "e0"), ("random", None)])
def test_make_picker_builds_each_kind(kind: str, expected: str | None) -> None:
    # "lat": 1 ms with one call in flight (0.002); "req": 100 ms and idle (0.100).
    lat, req = answered("lat", 0.001, now=5.0), answered("req", 0.100, now=5.0)
    lat.start(5.0)
    picker = make_picker(kind, random.Random(1), FakeClock(5.0))
    if kind == "round_robin":
        e0, e1 = endpoints(2)
        assert isinstance(picker, RoundRobin)
        assert names([picker.pick([e0, e1]), picker.pick([e0, e1])]) == ["e0", "e1"]
    elif kind == "random":
        assert isinstance(picker, RandomPicker)
        assert set(Counter(picker.pick([lat, req]) for _ in range(100))) == {lat, req}
    else:
        assert isinstance(picker, PowerOfTwo)
        assert {picker.pick([lat, req]) for _ in range(20)} == {lat if expected == "lat" else req}


def test_make_picker_rejects_an_unknown_kind_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        make_picker("fastest", random.Random(1), FakeClock())
    message = str(info.value)
    assert "'fastest'" in message
    assert "peak_ewma, least_request, round_robin, random" in message


def test_balancer_settings_default_to_peak_ewma() -> None:
    settings = BalancerSettings()
    assert settings.kind_for("orders") == "peak_ewma"
    assert settings.load == LoadSettings()


def test_balancer_settings_per_service_overrides() -> None:
    settings = BalancerSettings(default="least_request",
                                per_service=(("orders", "round_robin"), ("billing", "random")),
                                load=LoadSettings(decay=2.0))
    assert settings.kind_for("orders") == "round_robin"
    assert settings.kind_for("billing") == "random"
    assert settings.kind_for("users") == "least_request"
    assert settings.load.decay == 2.0


def test_balancer_settings_later_override_wins() -> None:
    settings = BalancerSettings(per_service=(("orders", "random"), ("orders", "round_robin")))
    assert settings.kind_for("orders") == "round_robin"


@pytest.mark.parametrize("make", [
    lambda: BalancerSettings(default="fastest"),
    lambda: BalancerSettings(per_service=(("orders", "round_robin"), ("billing", "fastest"))),
])
def test_balancer_settings_reject_an_unknown_kind(make: Callable[[], BalancerSettings]) -> None:
    with pytest.raises(ValueError, match="'fastest' is unknown: expected one of peak_ewma, "
                                         "least_request, round_robin, random"):
        make()


def test_make_picker_accepts_every_kind_balancer_settings_accepts() -> None:
    for kind, other in itertools.product(PICKER_KINDS, repeat=2):
        settings = BalancerSettings(default=kind, per_service=(("x", other),))
        make_picker(settings.kind_for("x"), random.Random(1), FakeClock())
        make_picker(settings.kind_for("y"), random.Random(1), FakeClock())
