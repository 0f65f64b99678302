"""What the example app does with each call, and what it counts (pure: no gRPC, no asyncio).

EchoBehaviour decides one call's fate: its delay and the status it fails with. The server's
knobs (flags of `grpcmesh example-server`) apply unless the request asks for its own
(EchoRequest.delay_ms / fail_code, which always apply). Chance comes from the injected
`random.Random`: `fail_percent` of the calls fail with `fail_code` (100, the default, fails
every call), and `slow_percent` of them take `slow_ms` more. A knob at 0% or 100% draws
nothing, so a server without partial knobs never touches its rng, and a seeded rng gives the
same sequence of fates whatever the timing.

CallCounts counts, per method, the calls that reached the handler (after the request was
read), the ones failed on purpose, the ones made slow and the ones the client cancelled: the
benchmark's evidence of how many attempts the mesh sent (scripts/bench_resilience.py reads
them from another process through `--counts-file`, written by `write_counts`).
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

METHODS = ("Unary", "Get", "ServerStream", "ClientStream", "BidiStream")


@dataclass(frozen=True, slots=True)
class Plan:
    """One call's fate."""
    delay_ms: float  # the wait before the answer (the slow extra included)
    fail_code: int  # 0: answer; otherwise abort with this gRPC status code
    slow: bool  # slow_ms was added


def _check_percent(name: str, value: float) -> None:
    if not 0 <= value <= 100:
        raise ValueError(f"{name} {value:g} is out of range: expected 0-100")


@dataclass
class EchoBehaviour:
    name: str
    delay_ms: float = 0.0
    fail_code: int = 0
    recovered_delay_ms: float = 0.0
    fail_percent: float = 100.0  # of the calls, failed with fail_code (when it is not 0)
    slow_percent: float = 0.0  # of the calls, answered slow_ms later
    slow_ms: float = 0.0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("delay_ms", "recovered_delay_ms", "slow_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} {getattr(self, name):g} must not be negative")
        if not 0 <= self.fail_code <= 16:
            raise ValueError(f"fail code {self.fail_code} is not a gRPC status code (0-16)")
        _check_percent("fail_percent", self.fail_percent)
        _check_percent("slow_percent", self.slow_percent)

    def plan(self, delay_ms: float = 0.0, fail_code: int = 0) -> Plan:
        """One call's fate. A request's own delay_ms or fail_code replaces the server's delay
        or failure (and always applies); the slow extra is drawn first, then the failure."""
        slow = self._draw(self.slow_percent) if self.slow_ms else False
        delay = (delay_ms or self.delay_ms) + (self.slow_ms if slow else 0.0)
        code = fail_code
        if not code and self.fail_code and self._draw(self.fail_percent):
            code = self.fail_code
        return Plan(delay, code, slow)

    def _draw(self, percent: float) -> bool:
        if percent <= 0:
            return False
        if percent >= 100:
            return True
        return self.rng.random() * 100 < percent

    def recover(self) -> None:
        """Stop misbehaving (SIGUSR1 from the command line): no failures, no slow calls, and
        the recovered delay."""
        self.delay_ms = self.recovered_delay_ms
        self.fail_code = 0
        self.slow_percent = 0.0


@dataclass(slots=True)
class MethodCounts:
    calls: int = 0  # calls that reached the handler: the request was read
    failed: int = 0  # answered with the server's or the request's fail code
    slow: int = 0  # given the slow extra (counted when drawn, even if cancelled during it)
    cancelled: int = 0  # cancelled by the client (or its proxy) before the answer


class CallCounts:
    """Per-method counts of one server, since it started."""

    def __init__(self) -> None:
        self.methods = {name: MethodCounts() for name in METHODS}

    def __getitem__(self, method: str) -> MethodCounts:
        return self.methods[method]

    def to_json(self) -> dict[str, dict[str, int]]:
        return {name: asdict(counts) for name, counts in self.methods.items()}


def write_counts(path: str, body: dict[str, Any]) -> None:
    """Write body as JSON to path atomically: a reader sees the old file or the new one whole
    (a temporary file in the same directory, then os.replace)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".counts-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class CountsFile:
    """A server's counts as a JSON file that another process reads (`--counts-file`):
    {"instance", "pid", "seq", "methods": {METHOD: {"calls", "failed", "slow",
    "cancelled"}}}. `seq` goes up by one with each write, so a reader that asked for a fresh
    copy (SIGUSR2) knows when it has it."""

    def __init__(self, path: str, instance: str, counts: CallCounts) -> None:
        self.path, self.instance, self.counts = path, instance, counts
        self.seq = 0

    def write(self) -> None:
        write_counts(self.path, {"instance": self.instance, "pid": os.getpid(),
                                 "seq": self.seq, "methods": self.counts.to_json()})
        self.seq += 1
