"""Backoff: random(0, min(base x 2^(n-1), max)), and grpc-retry-pushback-ms."""
from __future__ import annotations

import random

import pytest

from grpcmesh.resilience import STOP, Backoff, parse_pushback


def test_caps_double_up_to_max() -> None:
    backoff = Backoff(0.025, 0.25, random.Random(1))
    assert [backoff.cap(n) for n in range(1, 7)] == pytest.approx(
        [0.025, 0.05, 0.1, 0.2, 0.25, 0.25])
    assert backoff.cap(1000) == 0.25
    with pytest.raises(ValueError):
        backoff.cap(0)


def test_delays_are_drawn_below_the_cap() -> None:
    backoff = Backoff(0.025, 0.25, random.Random(7))
    for n in (1, 2, 3, 4, 5):
        delays = [backoff.delay(n) for _ in range(500)]
        assert all(0 <= d < backoff.cap(n) for d in delays)
        assert max(delays) > 0.9 * backoff.cap(n)  # full jitter: the whole range is used


def test_pushback_replaces_the_backoff() -> None:
    backoff = Backoff(0.025, 0.25, random.Random(1))
    assert backoff.after(3, 1500) == 1.5
    assert backoff.after(3, 0) == 0.0
    assert backoff.after(3, STOP) is None
    delay = backoff.after(1, None)
    assert delay is not None and 0 <= delay < 0.025


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("0", 0), ("250", 250), (b"250", 250), ("-1", STOP), ("-250", STOP),
    ("abc", STOP), ("", STOP), ("010", STOP), ("1.5", STOP), (" 5", STOP),
    ("2147483647", 2147483647), ("2147483648", STOP),
])
def test_parse_pushback(value: str | bytes | None, expected: int | None) -> None:
    assert parse_pushback(value) == expected


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        Backoff(0.5, 0.25, random.Random())
    with pytest.raises(ValueError):
        Backoff(0, 0.25, random.Random())
