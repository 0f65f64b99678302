"""One instance as the balancer sees it: its registry record plus what calls to it observed.

Load is tracked by a completion handle (tower's approach): `start()` counts a call in flight;
the forwarder marks the first response message and then calls `finish()` exactly once, which
records the latency and the outcome. "Latency" is the time to the first response message, or to
the end of the call if there was none, so a long-lived stream does not look like a slow endpoint
(linkerd does the same).
"""
from __future__ import annotations

from dataclasses import dataclass

import grpc

from grpcmesh.balance.ewma import PeakEwma
from grpcmesh.registry.model import Health, Instance

# Answers that say the endpoint could not serve the call, rather than an application answer.
PENALISED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                       grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


@dataclass(frozen=True)
class LoadSettings:
    """Linkerd's defaults: decay 10 s, 30 ms for an endpoint that has not answered yet."""

    decay: float = 10.0
    default_rtt: float = 0.030
    # A PENALISED failure counts as a latency sample of max(penalty, grpc-retry-pushback-ms),
    # so an endpoint that fails fast does not look fast. 0 turns it off.
    failure_penalty: float = 5.0

    def __post_init__(self) -> None:
        if self.decay <= 0:
            raise ValueError(f"decay {self.decay} must be positive")
        if self.default_rtt <= 0:
            raise ValueError(f"default_rtt {self.default_rtt} must be positive")
        if self.failure_penalty < 0:
            raise ValueError(f"failure_penalty {self.failure_penalty} must not be negative")


class Endpoint:
    __slots__ = ("calls", "failures", "in_flight", "instance", "rtt", "settings")

    def __init__(self, instance: Instance, settings: LoadSettings = LoadSettings()) -> None:
        self.instance = instance
        self.settings = settings
        self.rtt = PeakEwma(settings.decay)
        self.in_flight = 0
        self.calls = 0
        self.failures = 0

    @property
    def address(self) -> str:
        return self.instance.address

    @property
    def healthy(self) -> bool:
        return self.instance.health == Health.SERVING

    def cost(self, now: float) -> float:
        """estimate x (in-flight + 1). An endpoint that has never answered costs 0 while no
        call is on its way to it, so a new endpoint gets one probe call at once (Finagle); while
        the probe is out it costs default_rtt x (in-flight + 1)."""
        estimate = self.rtt.get(now)
        if estimate is None:
            return 0.0 if self.in_flight == 0 else self.settings.default_rtt * (self.in_flight + 1)
        return estimate * (self.in_flight + 1)

    def start(self, now: float) -> CallHandle:
        self.in_flight += 1
        return CallHandle(self, now)

    def __repr__(self) -> str:
        inst = self.instance
        return f"Endpoint({inst.service}/{inst.instance_id} {inst.address} {inst.health.name})"


class CallHandle:
    __slots__ = ("endpoint", "finished", "first_response_at", "started")

    def __init__(self, endpoint: Endpoint, now: float) -> None:
        self.endpoint = endpoint
        self.started = now
        self.first_response_at: float | None = None
        self.finished = False

    def first_response(self, now: float) -> None:
        if self.first_response_at is None:
            self.first_response_at = now

    def finish(self, now: float, code: grpc.StatusCode | None,
               pushback_ms: int | None = None) -> None:
        """Record the outcome; code None means our caller cancelled: not the endpoint's fault,
        so no sample is recorded."""
        if self.finished:
            return
        self.finished = True
        ep = self.endpoint
        ep.in_flight -= 1
        if code is None:
            return
        ep.calls += 1
        answered = self.first_response_at if self.first_response_at is not None else now
        sample = answered - self.started
        if code in PENALISED:
            ep.failures += 1
            penalty = ep.settings.failure_penalty
            if penalty > 0:
                hint = pushback_ms / 1000 if pushback_ms is not None and pushback_ms >= 0 else 0.0
                sample = max(penalty, hint)
        ep.rtt.observe(sample, now)

    def abandon(self, now: float) -> None:
        """The call stopped waiting for this endpoint (a hedge that lost the race): not its
        failure, but it had not answered after now - started. That counts as a sample only if
        it is above the endpoint's estimate (it was at least that slow); a shorter wait says
        nothing, and must not make the endpoint look faster than it is."""
        if self.finished:
            return
        self.finished = True
        ep = self.endpoint
        ep.in_flight -= 1
        if self.first_response_at is not None:
            return
        waited = now - self.started
        estimate = ep.rtt.get(now)
        if estimate is not None and waited > estimate:
            ep.rtt.observe(waited, now)
