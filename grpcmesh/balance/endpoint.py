"""One instance as the balancer sees it: its registry record plus what calls to it observed."""
from __future__ import annotations

from grpcmesh.registry.model import Health, Instance


class Endpoint:
    __slots__ = ("instance", "in_flight", "calls", "failures")

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.in_flight = 0
        self.calls = 0
        self.failures = 0

    @property
    def address(self) -> str:
        return self.instance.address

    @property
    def healthy(self) -> bool:
        return self.instance.health == Health.SERVING

    def __repr__(self) -> str:
        inst = self.instance
        return f"Endpoint({inst.service}/{inst.instance_id} {inst.address} {inst.health.name})"
