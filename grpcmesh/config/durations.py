"""Durations as the config writes them: `250ms`, `1.5s`, `2m`, `1h`.

Accepted: digits, optionally a decimal point and more digits, then one unit: ms, s, m or h. No
sign, no spaces, no compound forms (`1h30m`: write `90m`). The value must be a whole number of
milliseconds from 1ms to 24h. Exact arithmetic (no floats), so `0.1s` is exactly 100ms.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from grpcmesh.config.problems import show

_DURATION = re.compile(r"([0-9]{1,9})(?:\.([0-9]{1,9}))?(ms|s|m|h)\Z")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
MAX_MS = 24 * 3_600_000
EXPECTED = "expected a number and a unit: ms, s, m or h (e.g. 250ms, 1.5s, 2m)"


@dataclass(frozen=True, order=True)
class Duration:
    """A positive duration in whole milliseconds; str() gives its canonical text."""

    ms: int
    # ms / 1000, made once: rules read it per call
    seconds: float = field(init=False, repr=False, compare=False, default=0.0)

    def __post_init__(self) -> None:
        if not 1 <= self.ms <= MAX_MS:
            raise ValueError(f"duration {self.ms}ms is out of range: expected 1ms to 24h")
        object.__setattr__(self, "seconds", self.ms / 1000)

    @classmethod
    def parse(cls, text: str, field: str = "duration") -> Duration:
        m = _DURATION.match(text)
        if not m:
            hint = f"; a bare number has no unit: write {text}s or {text}ms" if (
                len(text) <= 12 and text.isascii() and text.replace(".", "", 1).isdigit()) else ""
            raise ValueError(f"{field} {show(text)} is not a duration: {EXPECTED}{hint}")
        whole, frac, unit = m.group(1), m.group(2) or "", m.group(3)
        scale = 10 ** len(frac)
        units = (int(whole) * scale + int(frac or 0)) * _UNIT_MS[unit]
        ms, rest = divmod(units, scale)
        if rest:
            raise ValueError(f"{field} {show(text)} is not a whole number of milliseconds")
        if not 1 <= ms <= MAX_MS:
            raise ValueError(f"{field} {show(text)} is out of range: expected 1ms to 24h")
        return cls(ms)

    def __str__(self) -> str:
        for unit in ("h", "m", "s"):
            if self.ms % _UNIT_MS[unit] == 0:
                return f"{self.ms // _UNIT_MS[unit]}{unit}"
        return f"{self.ms}ms"
