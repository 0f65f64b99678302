"""Helpers shared by the balancer tests: endpoints with a known state, and scripted randomness."""
from __future__ import annotations

import grpc

from grpcmesh.balance.endpoint import Endpoint, LoadSettings
from grpcmesh.registry.model import Health, Instance

OK = grpc.StatusCode.OK


def endpoint(name: str = "a1", settings: LoadSettings = LoadSettings()) -> Endpoint:
    return Endpoint(Instance(service="orders", instance_id=name, address=f"{name}.test:8080",
                             health=Health.SERVING), settings)


def answered(name: str, latency: float, now: float = 0.0,
             settings: LoadSettings = LoadSettings()) -> Endpoint:
    """An endpoint whose one call took `latency` and finished at `now`: its estimate is latency."""
    ep = endpoint(name, settings)
    ep.start(now - latency).finish(now, OK)
    return ep


class ScriptedRng:
    """Stands in for random.Random in PowerOfTwo: randrange returns the scripted values."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)
        self.calls: list[int] = []

    def randrange(self, stop: int) -> int:
        self.calls.append(stop)
        value = self.values.pop(0)
        assert 0 <= value < stop, f"scripted {value} is outside range({stop})"
        return value
