"""The last minute of calls for `grpcmesh stat` (pure: times come from the records)."""
from __future__ import annotations

import grpc
import pytest

from grpcmesh.relay.record import CallRecord
from grpcmesh.telemetry.window import BUCKETS, SLOTS, Window, quantile


def call(at: float, duration: float, code: grpc.StatusCode = grpc.StatusCode.OK,
         service: str = "echo", endpoint: str = "a:1") -> CallRecord:
    return CallRecord("/p.S/M", "c", service, endpoint, code, "app", "", at, duration, None,
                      0, 0, 1)


def test_a_window_adds_up_its_seconds_per_service_and_endpoint() -> None:
    window = Window()
    observe = window.observer("outbound")
    for second in range(100, 110):  # 10 s: 3 calls a second, one failing, on two endpoints
        observe(call(second, 0.004))
        observe(call(second, 0.020, endpoint="b:1"))
        observe(call(second, 0.004, grpc.StatusCode.UNAVAILABLE))
    observe(call(110, 0.001, grpc.StatusCode.UNIMPLEMENTED, service="", endpoint=""))
    rows = {(r["service"], r["endpoint"]): r for r in window.summary(110.5, 5)}
    echo = rows[("echo", "")]
    assert (echo["calls"], echo["ok"]) == (12, 8)  # seconds 106..109 (110 had none for echo)
    assert (rows[("echo", "a:1")]["calls"], rows[("echo", "b:1")]["calls"]) == (8, 4)
    assert rows[("", "")]["calls"] == 1 and ("", "") in rows and len(rows) == 4
    assert sum(echo["buckets"]) == 12 and len(echo["buckets"]) == len(BUCKETS) + 1
    assert window.summary(200.0, 60) == []  # all older than the window


def test_a_slot_is_reused_after_a_minute_and_idle_keys_go() -> None:
    window = Window()
    observe = window.observer("inbound")
    observe(call(5, 0.01, endpoint="old:1"))
    observe(call(5 + SLOTS, 0.01, endpoint="new:1"))  # same slot index, a minute later
    rows = window.summary(5 + SLOTS, SLOTS)
    assert {r["endpoint"]: r["calls"] for r in rows} == {"": 1, "new:1": 1}
    assert ("inbound", "echo", "old:1") not in window.rings  # idle: dropped for the new key


@pytest.mark.parametrize(("q", "expected"), [(0.5, 0.0075), (0.99, 0.00995), (1.0, 0.01)])
def test_quantiles_interpolate_within_a_bucket(q: float, expected: float) -> None:
    hist = [0] * (len(BUCKETS) + 1)
    hist[BUCKETS.index(0.01)] = 100  # all in (5 ms, 10 ms]
    assert quantile(q, hist) == pytest.approx(expected)
    assert quantile(0.5, [0] * (len(BUCKETS) + 1)) is None
    over = [0] * len(BUCKETS) + [3]
    assert quantile(0.99, over) == BUCKETS[-1]
