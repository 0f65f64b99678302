"""services.NAME.retry, .hedge and .outlier as frozen values (issue 11).

The readers in resilience_rules.py fill every default in, so two files with the same content
give equal values and the same canonical form (to_dict). The objects that apply them live in
grpcmesh/resilience/ and take these settings in their constructors. docs/config.md lists each
key and its default, docs/resilience.md the rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grpcmesh.config.durations import Duration
from grpcmesh.config.schema import MethodPattern, Number

# What `methods` may say besides a list of method patterns.
METHOD_KINDS = ("idempotent", "all")
# Default durations (module constants: dataclass defaults are made once anyway)
BACKOFF_BASE, BACKOFF_MAX = Duration(25), Duration(250)  # Envoy's base, and 10 x base
INTERVAL, BASE_EJECTION = Duration(10_000), Duration(30_000)  # gRFC A50, Envoy


@dataclass(frozen=True)
class MethodSet:
    """Which methods a retry or hedge policy covers: `idempotent` (the methods the protos mark
    IDEMPOTENT or NO_SIDE_EFFECTS), `all`, or exactly the listed methods (a list replaces what
    the protos say, in both directions)."""

    kind: str = "idempotent"  # "idempotent", "all" or "list"
    patterns: tuple[MethodPattern, ...] = ()  # for "list", in the file's order

    def covers(self, path: str, idempotent: bool) -> bool:
        """path: the call's /pkg.Service/Method; idempotent: what the protos say of it."""
        if self.kind == "idempotent":
            return idempotent
        if self.kind == "all":
            return True
        return any(p.matches(path) for p in self.patterns)

    def to_data(self) -> str | list[str]:
        return [str(p) for p in self.patterns] if self.kind == "list" else self.kind


@dataclass(frozen=True)
class BudgetSettings:
    """Retries (and hedges) <= ratio x calls + min_per_second x 10 s, over the last 10 s."""

    ratio: Number = 0.2
    min_per_second: Number = 10


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 2  # total attempts, the first one included: 1..5
    codes: tuple[str, ...] = ("UNAVAILABLE",)  # grpc.StatusCode names, in the file's order
    backoff_base: Duration = BACKOFF_BASE
    backoff_max: Duration = BACKOFF_MAX
    per_try_timeout: Duration | None = None  # None: each attempt has the call's deadline
    budget: BudgetSettings = BudgetSettings()
    methods: MethodSet = MethodSet()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attempts": self.attempts, "codes": list(self.codes),
            "backoff": {"base": str(self.backoff_base), "max": str(self.backoff_max)},
            "budget": {"ratio": self.budget.ratio,
                       "min_per_second": self.budget.min_per_second},
            "methods": self.methods.to_data()}
        if self.per_try_timeout is not None:
            out["per_try_timeout"] = str(self.per_try_timeout)
        return out


@dataclass(frozen=True)
class HedgeSettings:
    delay: Duration | None = None  # a fixed delay, or None when percentile is set
    percentile: Number | None = None  # 50..99.9: the observed latency percentile
    max_attempts: int = 2  # 2..5, the first attempt included
    methods: MethodSet = MethodSet()

    def to_dict(self) -> dict[str, Any]:
        delay = str(self.delay) if self.delay is not None else f"p{self.percentile}"
        return {"delay": delay, "max_attempts": self.max_attempts,
                "methods": self.methods.to_data()}


@dataclass(frozen=True)
class SuccessRateSettings:
    """gRFC A50's success-rate ejection (its defaults)."""

    stdev_factor: Number = 1.9
    min_hosts: int = 5
    min_requests: int = 100


@dataclass(frozen=True)
class OutlierSettings:
    consecutive_failures: int = 5  # Envoy's consecutive_5xx
    interval: Duration = INTERVAL
    base_ejection: Duration = BASE_EJECTION
    max_ejection_percent: Number = 10  # A50 and Envoy; at least one endpoint may be ejected
    success_rate: SuccessRateSettings | None = None  # None: no success-rate ejection

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "consecutive_failures": self.consecutive_failures, "interval": str(self.interval),
            "base_ejection": str(self.base_ejection),
            "max_ejection_percent": self.max_ejection_percent}
        if self.success_rate is not None:
            sr = self.success_rate
            out["success_rate"] = {"stdev_factor": sr.stdev_factor, "min_hosts": sr.min_hosts,
                                   "min_requests": sr.min_requests}
        return out
