"""The mesh config as frozen values: what `grpcmesh config check` accepts, and what the
registry will store and sidecars will apply.

Build these with grpcmesh.config.parse_text / from_data, which validate and normalise:
maps are unordered (services, subsets, labels, metadata and `to` are kept sorted by name),
lists are ordered (routes, faults, addresses, proto_services keep the file's order), numbers
that are whole are ints, defaults are filled in. So two configs with the same content are
equal, and to_dict() / canonical_json() / digest() give the same canonical form for both: the
registry can store that form, and applying the same content again is a no-op.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from grpcmesh.config.durations import Duration

if TYPE_CHECKING:  # policies.py imports this module
    from grpcmesh.config.policies import HedgeSettings, OutlierSettings, RetrySettings

Number = int | float
Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MethodPattern:
    """/pkg.Service/Method, or /pkg.Service/* (method None): every method of the service."""

    service: str
    method: str | None = None
    # "/pkg.Service/Method", or "/pkg.Service/" for a service: made once, matched per call
    _text: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        text = f"/{self.service}/{self.method}" if self.method is not None else \
            f"/{self.service}/"
        object.__setattr__(self, "_text", text)

    def matches(self, path: str) -> bool:
        if self.method is not None:
            return path == self._text
        return path.startswith(self._text) and path.count("/") == 2

    def __str__(self) -> str:
        return f"/{self.service}/{self.method or '*'}"


class _Metadata(Protocol):
    """Anything that looks metadata up by name (a dict, or the relay's view of a call)."""

    def get(self, name: str, default: str | None = None, /) -> str | None: ...


@dataclass(frozen=True)
class Match:
    """Which calls a rule applies to; every given condition must hold. Empty: every call."""

    method: MethodPattern | None = None
    metadata: Pairs = ()  # (lowercase name, exact value), sorted

    def matches(self, path: str, metadata: Mapping[str, str] | _Metadata) -> bool:
        # (MethodPattern.matches inline, and loops, not all() over a generator: this runs per
        # call and rule)
        method = self.method
        if method is not None:
            if method.method is not None:
                if path != method._text:
                    return False
            elif not path.startswith(method._text) or path.count("/") != 2:
                return False
        for name, value in self.metadata:
            if metadata.get(name) != value:
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.method is not None:
            out["method"] = str(self.method)
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass(frozen=True)
class Route:
    match: Match = Match()
    to: tuple[tuple[str, Number], ...] = ()  # (subset, weight), sorted; empty: every instance
    timeout: Duration | None = None
    max_timeout: Duration | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.match != Match():
            out["match"] = self.match.to_dict()
        if self.to:
            out["to"] = dict(self.to)
        return _durations(out, timeout=self.timeout, max_timeout=self.max_timeout)


@dataclass(frozen=True)
class Abort:
    code: str  # a grpc.StatusCode name other than OK
    percent: Number = 100

    @property
    def status(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.code]


@dataclass(frozen=True)
class Delay:
    duration: Duration
    percent: Number = 100


@dataclass(frozen=True)
class Fault:
    match: Match = Match()
    abort: Abort | None = None
    delay: Delay | None = None  # at least one of abort and delay is set

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.match != Match():
            out["match"] = self.match.to_dict()
        if self.abort is not None:
            out["abort"] = {"code": self.abort.code, "percent": self.abort.percent}
        if self.delay is not None:
            out["delay"] = {"duration": str(self.delay.duration), "percent": self.delay.percent}
        return out


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per instance, applied by the instance's inbound sidecar."""

    per_second: Number
    burst: int


@dataclass(frozen=True)
class Subset:
    name: str
    labels: Pairs = ()  # sorted; empty: every instance

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.labels)


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    balancer: str | None = None  # one of PICKER_KINDS; None: the sidecar's --balancer
    timeout: Duration | None = None  # None: calls without a deadline keep none
    max_timeout: Duration | None = None  # None: caller deadlines are not cut
    subsets: tuple[Subset, ...] = ()  # sorted by name
    routes: tuple[Route, ...] = ()  # first match wins
    faults: tuple[Fault, ...] = ()  # first match wins
    rate_limit: RateLimit | None = None
    retry: RetrySettings | None = None  # None: no retry once a request reached an app
    hedge: HedgeSettings | None = None  # None: no hedging
    outlier: OutlierSettings | None = None  # None: no outlier detection

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.balancer is not None:
            out["balancer"] = self.balancer
        _durations(out, timeout=self.timeout, max_timeout=self.max_timeout)
        if self.subsets:
            out["subsets"] = {s.name: dict(s.labels) for s in self.subsets}
        if self.routes:
            out["routes"] = [r.to_dict() for r in self.routes]
        if self.faults:
            out["faults"] = [f.to_dict() for f in self.faults]
        if self.rate_limit is not None:
            out["rate_limit"] = {"per_second": self.rate_limit.per_second,
                                 "burst": self.rate_limit.burst}
        for key, policy in (("retry", self.retry), ("hedge", self.hedge),
                            ("outlier", self.outlier)):
            if policy is not None:
                out[key] = policy.to_dict()
        return out


@dataclass(frozen=True)
class Tls:
    server_name: str | None = None  # None: the host of the address being dialled
    ca_file: str | None = None  # None: the system's CAs

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("server_name", self.server_name),
                                  ("ca_file", self.ca_file)) if v is not None}


@dataclass(frozen=True)
class ExternalService:
    name: str
    addresses: tuple[str, ...]  # HOST:PORT, resolved by DNS
    proto_services: tuple[str, ...]  # calls to these go here
    tls: Tls | None = None  # None: plaintext

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"addresses": list(self.addresses),
                               "proto_services": list(self.proto_services)}
        if self.tls is not None:
            out["tls"] = self.tls.to_dict()
        return out


@dataclass(frozen=True)
class MeshConfig:
    services: tuple[ServiceConfig, ...] = ()  # sorted by name
    external: tuple[ExternalService, ...] = ()  # sorted by name

    def service(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form as plain data (JSON-ready); from_data() reads it back."""
        out: dict[str, Any] = {}
        if self.services:
            out["services"] = {s.name: s.to_dict() for s in self.services}
        if self.external:
            out["external"] = {e.name: e.to_dict() for e in self.external}
        return out

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)

    def digest(self) -> str:
        """sha256 of the canonical JSON: equal for configs with the same content."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def summary(self) -> str:
        """One line: what the config holds."""
        def count(n: int, what: str) -> str:
            return f"{n} {what}{'' if n == 1 else 's'}"
        return ", ".join([
            count(len(self.services), "service"),
            count(len(self.external), "external service"),
            count(sum(len(s.subsets) for s in self.services), "subset"),
            count(sum(len(s.routes) for s in self.services), "route"),
            count(sum(len(s.faults) for s in self.services), "fault"),
            count(sum(s.rate_limit is not None for s in self.services), "rate limit"),
        ] + [count(n, what) for n, what in (  # named only when present (issue 11)
            (sum(s.retry is not None for s in self.services), "retry policy"),
            (sum(s.hedge is not None for s in self.services), "hedge policy"),
            (sum(s.outlier is not None for s in self.services), "outlier detector")) if n])


def _durations(out: dict[str, Any], **durations: Duration | None) -> dict[str, Any]:
    out.update((k, str(v)) for k, v in durations.items() if v is not None)
    return out
