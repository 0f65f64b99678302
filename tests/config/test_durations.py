"""Durations: a number and one unit (ms, s, m, h), whole milliseconds from 1ms to 24h."""
from __future__ import annotations

import pytest

from grpcmesh.config import Duration


@pytest.mark.parametrize(("text", "ms", "canonical"), [
    ("250ms", 250, "250ms"), ("2s", 2000, "2s"), ("1m", 60_000, "1m"), ("1h", 3_600_000, "1h"),
    ("1.5s", 1500, "1500ms"), ("0.1s", 100, "100ms"), ("90m", 5_400_000, "90m"),
    ("120s", 120_000, "2m"), ("0.5ms", None, None), ("24h", 86_400_000, "24h"),
    ("1.000s", 1000, "1s"),
])
def test_parse_and_canonical_text(text: str, ms: int | None, canonical: str | None) -> None:
    if ms is None:
        with pytest.raises(ValueError, match="not a whole number of milliseconds"):
            Duration.parse(text)
        return
    duration = Duration.parse(text)
    assert duration.ms == ms
    assert str(duration) == canonical
    assert Duration.parse(str(duration)) == duration


@pytest.mark.parametrize(("text", "message"), [
    ("2", ("duration '2' is not a duration: expected a number and a unit: ms, s, m or h "
          "(e.g. 250ms, 1.5s, 2m); a bare number has no unit: write 2s or 2ms")),
    ("-1s", "duration '-1s' is not a duration"),
    ("0s", "duration '0s' is out of range: expected 1ms to 24h"),
    ("25h", "duration '25h' is out of range"),
    ("1h30m", "duration '1h30m' is not a duration"),
    ("1 s", "duration '1 s' is not a duration"),
    (".5s", "duration '.5s' is not a duration"),
    ("5us", "duration '5us' is not a duration"),
    ("2S", "duration '2S' is not a duration"),
    ("", "duration '' is not a duration"),
])
def test_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        Duration.parse(text)
    assert str(err.value).startswith(message)


def test_order_and_seconds() -> None:
    assert Duration.parse("500ms") < Duration.parse("1s")
    assert Duration.parse("1500ms").seconds == 1.5
    with pytest.raises(ValueError):
        Duration(0)
