"""The endpoints of one mesh service, following discovery events.

Endpoints that stay keep their state (in-flight counts, and later latency estimates) across
updates; an instance whose address changes becomes a new endpoint.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from grpcmesh.balance.endpoint import Endpoint, LoadSettings
from grpcmesh.registry.model import Instance


class Pool:
    def __init__(self, service: str,
                 on_removed: Callable[[Endpoint], None] = lambda e: None,
                 load: LoadSettings = LoadSettings()) -> None:
        self.service = service
        self.load = load
        self.endpoints: dict[str, Endpoint] = {}
        self.ready: tuple[Endpoint, ...] = ()
        self.version = 0  # bumped whenever ready may have changed
        self.ejected: frozenset[str] = frozenset()  # addresses the outlier detector took out
        self._on_removed = on_removed

    def upsert(self, instance: Instance) -> None:
        current = self.endpoints.get(instance.instance_id)
        if current is not None and current.address == instance.address:
            current.instance = instance
        else:
            if current is not None:
                self._on_removed(current)
            self.endpoints[instance.instance_id] = Endpoint(instance, self.load)
        self._refresh()

    def remove(self, instance_id: str) -> None:
        endpoint = self.endpoints.pop(instance_id, None)
        if endpoint is not None:
            self._on_removed(endpoint)
            self._refresh()

    def reset(self, instances: Iterable[Instance]) -> None:
        wanted = {i.instance_id: i for i in instances}
        for instance_id in [k for k in self.endpoints if k not in wanted]:
            self.remove(instance_id)
        for inst in wanted.values():
            self.upsert(inst)
        self._refresh()

    def eject(self, addresses: frozenset[str]) -> None:
        """The outlier detector's ejected endpoints leave ready (grpcmesh/resilience/)."""
        if addresses != self.ejected:
            self.ejected = addresses
            self._refresh()

    def _refresh(self) -> None:
        healthy = tuple(e for _, e in sorted(self.endpoints.items()) if e.healthy)
        ejected = self.ejected
        # Panic mode (Envoy's): if ejection would leave no endpoint, all healthy ones serve.
        self.ready = tuple(e for e in healthy if e.address not in ejected) or healthy \
            if ejected else healthy
        self.version += 1

    def describe(self) -> str:
        total = len(self.endpoints)
        ejected = f", {len(self.ejected)} ejected" if self.ejected else ""
        return f"{total} known, {len(self.ready)} serving{ejected}"
