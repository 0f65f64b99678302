"""services.NAME.outlier applied: one OutlierDetector per service with the rule, fed every
call's end record, its ejections handed to the service's pool (Pool.eject), whose ready list
the picker reads. Pure: the sidecar calls observe() per call and tick() from a timer.

When the config changes, a service whose outlier settings stay the same keeps its detector
(its ejections and counts stand; tick() drops endpoints no longer in the pool); a service
whose settings changed gets a new detector (no ejection carries over); a service that lost
its rule has its ejections lifted at once.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpcmesh.balance.pool import Pool
from grpcmesh.clock import Clock, iso_utc
from grpcmesh.config import MeshConfig
from grpcmesh.relay.record import CLIENT, CallRecord
from grpcmesh.resilience.outlier import OutlierDetector

PoolOf = Callable[[str], "Pool | None"]


class Ejections:
    def __init__(self, pool_of: PoolOf, clock: Clock) -> None:
        self.detectors: dict[str, OutlierDetector] = {}
        self._seen: dict[str, int] = {}  # the detector's changes last handed to its pool
        self._pool_of = pool_of
        self.clock = clock

    def configure(self, config: MeshConfig) -> None:
        wanted = {s.name: s.outlier for s in config.services if s.outlier is not None}
        for name in [n for n in self.detectors if n not in wanted]:
            del self.detectors[name]
            self._seen.pop(name, None)
            pool = self._pool_of(name)
            if pool is not None:
                pool.eject(frozenset())
        for name, settings in wanted.items():
            current = self.detectors.get(name)
            if current is None or current.settings != settings:
                self.detectors[name] = OutlierDetector(settings, self.clock)
        self.tick()

    def observe(self, record: CallRecord) -> None:
        """A relay observer: a call's outcome counts against the endpoint it reached."""
        detector = self.detectors.get(record.service)
        if detector is None or not record.endpoint:  # (a proxy answer that reached none)
            return
        detector.record(record.endpoint, None if record.by == CLIENT else record.code)
        if detector.changes != self._seen.get(record.service):
            self._hand_over(record.service, detector)

    def tick(self) -> None:
        """The interval's work (success-rate rule, returns) off the call path; the detector
        follows its pool's endpoints, and the pool its ejections (Pool.eject does nothing
        when they are the same)."""
        for name, detector in self.detectors.items():
            pool = self._pool_of(name)
            if pool is not None:
                detector.sync(e.address for e in pool.endpoints.values())
            detector.advance()
            self._hand_over(name, detector)  # (also to a pool made anew: an external's)

    def _hand_over(self, name: str, detector: OutlierDetector) -> None:
        self._seen[name] = detector.changes
        pool = self._pool_of(name)
        if pool is not None:
            pool.eject(detector.ejected_addresses())

    def describe(self, service: str, address: str, wall_offset: float) -> dict[str, Any]:
        """What /endpoints shows for an endpoint; wall_offset turns the detector's clock
        into Unix time (ejected_until is then an ISO time)."""
        detector = self.detectors.get(service)
        state = detector.endpoints.get(address) if detector is not None else None
        if state is None or not state.ejected or state.ejected_until is None:
            return {"ejected": False, "ejected_until": None, "ejection_reason": None}
        return {"ejected": True, "ejected_until": iso_utc(state.ejected_until + wall_offset),
                "ejection_reason": state.ejection_reason}
