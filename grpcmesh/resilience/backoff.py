"""Waiting between attempts: gRFC A6's exponential backoff with full jitter, and the
server's pushback.

- Retry n (n = 1 for the first retry, so the wait before attempt 2) waits a random time in
  [0, min(base x 2^(n-1), max)) (A6 with backoffMultiplier 2; Envoy draws from the same kind
  of range).
- grpc-retry-pushback-ms from the server replaces the backoff: a non-negative whole number of
  milliseconds is the wait, exactly; a negative or unparseable one means "do not retry".
- After a pushback, the backoff starts again from base (A6: "retry delay will reset to
  initial backoff for the following retry"): the caller counts n from the last pushback.
"""
from __future__ import annotations

import random
import re

# A6: an ASCII signed 32-bit integer with no unnecessary leading zeros.
_PUSHBACK = re.compile(r"-?(0|[1-9][0-9]{0,9})\Z")
STOP = -1  # what parse_pushback returns for "do not retry"


def parse_pushback(value: str | bytes | None) -> int | None:
    """grpc-retry-pushback-ms as milliseconds: None when absent, STOP (-1) when negative or
    unparseable (the server asks for no retry), else the wait (0 included)."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if not _PUSHBACK.match(text):
        return STOP
    ms = int(text)
    return STOP if ms < 0 or ms > 2**31 - 1 else ms


class Backoff:
    __slots__ = ("base", "max", "rng")

    def __init__(self, base: float, max: float, rng: random.Random) -> None:
        if not 0 < base <= max:
            raise ValueError(f"backoff base {base} s and max {max} s: expected 0 < base <= max")
        self.base, self.max, self.rng = base, max, rng

    def cap(self, n: int) -> float:
        """The upper end of retry n's wait: min(base x 2^(n-1), max)."""
        if n < 1:
            raise ValueError(f"retry number {n} must be at least 1")
        return self.max if n > 64 else min(self.base * 2 ** (n - 1), self.max)

    def delay(self, n: int) -> float:
        """Retry n's wait in seconds, drawn from [0, cap(n))."""
        return self.rng.random() * self.cap(n)

    def after(self, n: int, pushback_ms: int | None) -> float | None:
        """The wait before retry n given the server's pushback (from parse_pushback):
        None when the server asked for no retry."""
        if pushback_ms is None:
            return self.delay(n)
        return None if pushback_ms < 0 else pushback_ms / 1000
