"""The relay's call counts, kept in plain objects that an Observer updates from each CallRecord.
Pure: no prometheus-client here (collector.py reads these at scrape time).

The hot path is `CallCounters.observe`, run once per call in every relay that has metrics on: a
few dict lookups and list increments, nothing allocated for a call whose (service, method) was
seen before. Durations are bucket counts (not cumulative; the collector adds them up).

Labels are bounded (a client cannot mint series):
- service: the record's, which the route set (a registry or mesh-config name); "" (no route)
  is counted as "unknown".
- method: the path without its leading "/" if `methods(path)` knows it (the registry's
  registrations: RouteTable.method), else "unknown" (gRPC A66 records unknown methods as
  "other"). Made-up paths are never kept as keys.
- code: one of grpc.StatusCode's 17 names.
- endpoint: the address of the record's last attempt (an instance the registry or the mesh
  config named); series of endpoints no longer in any pool are dropped at scrape time (prune).
- proxy answer reason: code-defined strings; "interceptor NAME" becomes "fault",
  "rate_limited" (the mesh's rules) or "interceptor" (reason_label).

Memory: services x known methods x (17 codes + 15 buckets) numbers per direction, plus
services x endpoints x 17 codes, plus services x reasons.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Container, Iterable

import grpc

from grpcmesh.relay.record import PROXY, CallRecord

CODES = tuple(grpc.StatusCode)  # (indexed by position: CODE_INDEX)
CODE_INDEX = {code: i for i, code in enumerate(CODES)}
# 1 ms to 30 s (the range); a call slower than 30 s falls in +Inf.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNKNOWN = "unknown"

Methods = Callable[[str], object | None]


_RULE_REASONS = {"faults": "fault", "rate_limit": "rate_limited"}  # the mesh's own rules


def reason_label(reason: str) -> str:
    """The proxy's reason as a label value. An interceptor's answer ("interceptor NAME")
    becomes "fault" or "rate_limited" for those mesh rules (named "services.S.faults PART",
    "services.S.rate_limit"), else "interceptor": NAME is free text."""
    if not reason.startswith("interceptor "):
        return reason
    name = reason[len("interceptor "):]
    if name.startswith("services."):
        return _RULE_REASONS.get(name.split(" ", 1)[0].rsplit(".", 1)[-1], "interceptor")
    return "interceptor"


class Series:
    """One (service, method)'s calls: counts per status code, duration bucket counts, sum."""

    __slots__ = ("buckets", "codes", "total_seconds")

    def __init__(self) -> None:
        self.codes = [0] * len(CODES)
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one: above 30 s (+Inf)
        self.total_seconds = 0.0


class CallCounters:
    """One relay's counts (one direction). `observe` is its Observer."""

    __slots__ = ("by_service", "direction", "endpoints", "methods", "proxy_answers", "service")

    def __init__(self, direction: str, methods: Methods, service: str = "") -> None:
        """service: the one service every call is counted under (an inbound relay's, whose
        records name its local target); "" for the record's own (outbound)."""
        self.direction = direction
        self.methods = methods
        self.service = service
        # service -> method label -> Series; the path is cached as a key only once known
        self.by_service: dict[str, dict[str, Series]] = {}
        # service -> endpoint address -> counts per code (None: not counted inbound, whose
        # one endpoint is the local app)
        self.endpoints: dict[str, dict[str, list[int]]] | None = None if service else {}
        self.proxy_answers: dict[tuple[str, str], int] = {}

    def observe(self, record: CallRecord) -> None:
        service = self.service or record.service or UNKNOWN
        methods = self.by_service.get(service)
        if methods is None:
            methods = self.by_service[service] = {}
        series = methods.get(record.method)
        if series is None:
            series = self._series(methods, record.method)
        code = CODE_INDEX[record.code]
        series.codes[code] += 1
        duration = record.duration
        series.buckets[bisect_left(BUCKETS, duration)] += 1
        series.total_seconds += duration
        endpoints = self.endpoints
        if endpoints is not None and record.endpoint:
            by_address = endpoints.get(service)
            if by_address is None:
                by_address = endpoints[service] = {}
            counts = by_address.get(record.endpoint)
            if counts is None:
                counts = by_address[record.endpoint] = [0] * len(CODES)
            counts[code] += 1
        if record.by == PROXY:
            key = (service, reason_label(record.reason))
            self.proxy_answers[key] = self.proxy_answers.get(key, 0) + 1

    def _series(self, methods: dict[str, Series], path: str) -> Series:
        """The series for a path not seen before: its own if the registry knows the method
        (kept under the path from now on), else the shared "unknown" one (not kept under the
        path: made-up paths must not grow the dict)."""
        if self.methods(path) is not None:
            label = path.lstrip("/")
            series = methods.get(label)
            if series is None:
                series = methods[label] = Series()
            methods[path] = series
            return series
        series = methods.get(UNKNOWN)
        if series is None:
            series = methods[UNKNOWN] = Series()
        return series

    def series(self) -> Iterable[tuple[str, str, Series]]:
        """(service, method label, series) once each (the path keys alias their label's)."""
        for service, methods in self.by_service.items():
            for key, series in methods.items():
                if not key.startswith("/"):
                    yield service, key, series

    def prune(self, live: Container[tuple[str, str]]) -> None:
        """Drop the endpoint series whose (service, address) is not live (the endpoint left
        its pool): memory stays bounded by the endpoints that exist."""
        if self.endpoints is None:
            return
        for service, by_address in list(self.endpoints.items()):
            for address in [a for a in by_address if (service, a) not in live]:
                del by_address[address]
            if not by_address:
                del self.endpoints[service]


def cumulative(buckets: list[int]) -> list[int]:
    """Bucket counts as Prometheus wants them: each counts the calls at or below its bound."""
    total = 0
    out = []
    for count in buckets:
        total += count
        out.append(total)
    return out
