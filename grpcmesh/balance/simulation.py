"""A deterministic load simulation over the real Endpoint, PeakEwma and pickers.

Calls arrive every `interval` seconds of fake time (open loop); each goes to the endpoint the
picker chooses and finishes after that endpoint's latency (x a seeded jitter of 0.9-1.1) with its
status code. No sockets, no sleeps: a heap of completions and a FakeClock. The balancer unit
tests and scripts/sim_balancers.py both use it; the real measurement is
scripts/bench_balancers.py.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

import grpc

from grpcmesh.balance.endpoint import CallHandle, Endpoint, LoadSettings
from grpcmesh.balance.picker import make_picker
from grpcmesh.clock import FakeClock
from grpcmesh.registry.model import Health, Instance


@dataclass
class Behaviour:
    """How one endpoint answers; change it mid-run to simulate a recovery."""

    latency: float
    code: grpc.StatusCode = grpc.StatusCode.OK


@dataclass(frozen=True)
class Completed:
    started: float
    latency: float
    endpoint: int
    code: grpc.StatusCode


class Simulation:
    def __init__(self, kind: str, behaviours: list[Behaviour], seed: int = 1,
                 settings: LoadSettings = LoadSettings(), interval: float = 0.001) -> None:
        self.clock = FakeClock(0.0)
        self.behaviours = behaviours
        self.endpoints = [
            Endpoint(Instance(service="sim", instance_id=f"e{i}", address=f"e{i}.sim:1",
                              health=Health.SERVING), settings)
            for i in range(len(behaviours))]
        self.picker = make_picker(kind, random.Random(seed), self.clock)
        self.jitter = random.Random(seed + 1)
        self.interval = interval
        self.picks: list[tuple[float, int]] = []  # (time, endpoint index) of every call
        self.completed: list[Completed] = []
        self.counts = [0] * len(behaviours)
        self._pending: list[tuple[float, int, float, int, CallHandle, grpc.StatusCode]] = []
        self._seq = 0
        self._index = {id(e): i for i, e in enumerate(self.endpoints)}

    def run(self, calls: int) -> None:
        for _ in range(calls):
            self._complete_until(self.clock.now() + self.interval)
            picked = self.picker.pick(self.endpoints)
            assert picked is not None
            i = self._index[id(picked)]
            now = self.clock.now()
            behaviour = self.behaviours[i]
            took = behaviour.latency * self.jitter.uniform(0.9, 1.1)
            self._seq += 1
            heapq.heappush(self._pending, (now + took, self._seq, now, i, picked.start(now),
                                           behaviour.code))
            self.picks.append((now, i))
            self.counts[i] += 1

    def run_for(self, seconds: float) -> None:
        self.run(round(seconds / self.interval))

    def run_until_picked(self, i: int, within: float = 60.0) -> None:
        before, deadline = self.counts[i], self.clock.now() + within
        while self.counts[i] == before:
            if self.clock.now() >= deadline:
                raise AssertionError(f"e{i} was not picked within {within} s")
            self.run(1)

    def _complete_until(self, until: float) -> None:
        while self._pending and self._pending[0][0] <= until:
            at, _, started, i, handle, code = heapq.heappop(self._pending)
            self.clock.advance(max(0.0, at - self.clock.now()))
            handle.finish(at, code)
            self.completed.append(Completed(started, at - started, i, code))
        self.clock.advance(until - self.clock.now())

    def share(self, i: int, start: float = 0.0, end: float = float("inf")) -> float:
        """The fraction of the calls started in [start, end) that went to endpoint i."""
        window = [j for t, j in self.picks if start <= t < end]
        return sum(1 for j in window if j == i) / len(window)

    def recovered_after(self, i: int, since: float, fair: float, window: float = 2.0,
                        step: float = 0.5) -> float | None:
        """Seconds from `since` to the first window in which endpoint i got >= `fair`."""
        t = since
        while t + window <= self.clock.now():
            if self.share(i, t, t + window) >= fair:
                return t - since
            t += step
        return None
