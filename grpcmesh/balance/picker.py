"""Pickers choose one ready endpoint for a call.

`pick(ready, exclude)` gets the healthy endpoints of a target (in a stable order) and the ones
this call already tried, and returns one or None. Kinds, chosen per service:

- peak_ewma (default): power of two choices on cost = peak-EWMA latency x (in-flight + 1).
- least_request: power of two choices on in-flight calls.
- round_robin: each call takes the next endpoint.
- random: uniformly at random.

Power of two choices (Mitzenmacher; tower's `p2c`): draw two distinct candidates at random and
keep the cheaper. It avoids the herd behaviour of always picking the global minimum from
slightly stale load, and costs O(1) per call. One candidate alone is picked without comparison.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from grpcmesh.balance.endpoint import Endpoint, LoadSettings
from grpcmesh.clock import Clock


class Picker(Protocol):
    def pick(self, ready: Sequence[Endpoint], exclude: Collection[Endpoint] = ()
             ) -> Endpoint | None: ...


def _candidates(ready: Sequence[Endpoint], exclude: Collection[Endpoint]
                ) -> Sequence[Endpoint]:
    return [e for e in ready if e not in exclude] if exclude else ready


class RoundRobin:
    """Each call takes the next ready endpoint, skipping the ones this call already tried."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, ready: Sequence[Endpoint], exclude: Collection[Endpoint] = ()
             ) -> Endpoint | None:
        n = len(ready)
        for offset in range(n):
            endpoint = ready[(self._next + offset) % n]
            if endpoint not in exclude:
                self._next = (self._next + offset + 1) % n
                return endpoint
        return None


class RandomPicker:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, ready: Sequence[Endpoint], exclude: Collection[Endpoint] = ()
             ) -> Endpoint | None:
        candidates = _candidates(ready, exclude)
        return self._rng.choice(candidates) if candidates else None


class PowerOfTwo:
    """Two distinct random candidates; the lower cost wins (the first drawn on a tie)."""

    def __init__(self, rng: random.Random, cost: Callable[[Endpoint], float]) -> None:
        self._rng = rng
        self._cost = cost

    def pick(self, ready: Sequence[Endpoint], exclude: Collection[Endpoint] = ()
             ) -> Endpoint | None:
        candidates = _candidates(ready, exclude)
        n = len(candidates)
        if n < 2:
            return candidates[0] if n else None
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        return b if self._cost(b) < self._cost(a) else a


def least_request(rng: random.Random) -> PowerOfTwo:
    return PowerOfTwo(rng, lambda e: e.in_flight)


def peak_ewma(rng: random.Random, clock: Clock) -> PowerOfTwo:
    return PowerOfTwo(rng, lambda e: e.cost(clock.now()))


PICKER_KINDS = ("peak_ewma", "least_request", "round_robin", "random")


def make_picker(kind: str, rng: random.Random, clock: Clock) -> Picker:
    if kind == "peak_ewma":
        return peak_ewma(rng, clock)
    if kind == "least_request":
        return least_request(rng)
    if kind == "round_robin":
        return RoundRobin()
    if kind == "random":
        return RandomPicker(rng)
    raise ValueError(f"balancer {kind!r} is unknown: expected one of {', '.join(PICKER_KINDS)}")


@dataclass(frozen=True)
class BalancerSettings:
    """Which picker each service uses, and how endpoint load is estimated."""

    default: str = "peak_ewma"
    per_service: tuple[tuple[str, str], ...] = ()
    load: LoadSettings = field(default_factory=LoadSettings)

    def __post_init__(self) -> None:
        for kind in (self.default, *(k for _, k in self.per_service)):
            if kind not in PICKER_KINDS:
                raise ValueError(f"balancer {kind!r} is unknown: expected one of "
                                 f"{', '.join(PICKER_KINDS)}")

    def kind_for(self, service: str) -> str:
        return dict(self.per_service).get(service, self.default)
