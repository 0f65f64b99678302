"""Pickers choose one ready endpoint for a call.

The interface is deliberately small so that the peak-EWMA P2C balancer can replace the simple
round robin used here: `pick(ready, exclude)` gets the healthy endpoints of a target (in a stable
order) and the endpoints this call already tried, and returns one or None.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from grpcmesh.balance.endpoint import Endpoint


class Picker(Protocol):
    def pick(self, ready: Sequence[Endpoint], exclude: Collection[Endpoint] = ()
             ) -> Endpoint | None: ...


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
