"""grpcmesh top's computing part, without sockets: two /metrics answers to rows."""
from __future__ import annotations

import pytest

from grpcmesh.telemetry.window import BUCKETS
from grpcmesh.telemetry.window import quantile as window_quantile
from grpcmesh.top import add, delta, parse_metrics, quantile, top_rows

LES = [*(f"{b:g}" for b in BUCKETS), "+Inf"]


def metrics(rows: list[tuple[str, str, str, dict[str, int], list[int]]]) -> str:
    """/metrics text: per (direction, service, method), calls by code and per-bucket counts
    (written cumulatively, as Prometheus does)."""
    lines = ["# TYPE grpcmesh_calls_total counter",
             "# TYPE grpcmesh_call_duration_seconds histogram"]
    for direction, service, method, codes, per_bucket in rows:
        labels = f'direction="{direction}",service="{service}",method="{method}"'
        for code, n in codes.items():
            lines.append(f'grpcmesh_calls_total{{{labels},code="{code}"}} {n}')
        running = 0
        for le, n in zip(LES, per_bucket, strict=True):
            running += n
            lines.append(f'grpcmesh_call_duration_seconds_bucket{{{labels},le="{le}"}} {running}')
        lines.append(f"grpcmesh_call_duration_seconds_count{{{labels}}} {running}")
        lines.append(f"grpcmesh_call_duration_seconds_sum{{{labels}}} 0.5")
    lines.append("# TYPE grpcmesh_config_version gauge")
    lines.append("grpcmesh_config_version 3")
    return "\n".join(lines) + "\n"


def hist(**at: int) -> list[int]:
    out = [0] * (len(BUCKETS) + 1)
    for index, n in at.items():
        out[int(index.removeprefix("b"))] = n
    return out


def test_rows_are_the_deltas_per_second_busiest_first() -> None:
    before = parse_metrics(metrics([
        ("outbound", "echo", "e.Echo/Unary", {"OK": 10}, hist(b3=10)),
        ("outbound", "echo", "e.Echo/Stream", {"OK": 5}, hist(b3=5)),
    ]))
    after = parse_metrics(metrics([
        # +20 calls, 15 OK; all 20 new ones in (5 ms, 10 ms]
        ("outbound", "echo", "e.Echo/Unary", {"OK": 25, "INTERNAL": 5}, hist(b3=30)),
        ("outbound", "echo", "e.Echo/Stream", {"OK": 7}, hist(b3=5, b6=2)),  # +2, slow
        ("inbound", "echo", "e.Echo/Unary", {"OK": 99}, hist(b0=99)),
    ]))
    rows = top_rows(delta(before, after), 2.0)
    assert [(r.method, r.calls, r.rps, r.success) for r in rows] == [
        ("e.Echo/Unary", 20, 10.0, 0.75), ("e.Echo/Stream", 2, 1.0, 1.0)]
    assert rows[0].p50_ms == pytest.approx(7.5)  # halfway through (5, 10] ms
    assert rows[0].p99_ms == pytest.approx(9.95)
    assert rows[1].p50_ms == pytest.approx(75.0)  # both in (50, 100] ms
    [inbound] = top_rows(delta(before, after), 2.0, direction="inbound")
    assert (inbound.method, inbound.calls) == ("e.Echo/Unary", 99)  # new since before


def test_idle_methods_and_other_services_are_left_out() -> None:
    text = metrics([("outbound", "echo", "e.Echo/Unary", {"OK": 4}, hist(b1=4)),
                    ("outbound", "shop", "s.Shop/Buy", {"OK": 1}, hist(b1=1))])
    same = parse_metrics(text)
    assert top_rows(delta(same, parse_metrics(text)), 1.0) == []
    later = parse_metrics(text.replace("} 4", "} 6").replace("} 1\n", "} 3\n"))
    assert [r.service for r in top_rows(delta(same, later), 1.0)] == ["echo", "shop"]
    assert [r.service for r in top_rows(delta(same, later), 1.0, "shop")] == ["shop"]


def test_a_restarted_sidecar_counts_from_zero_and_sidecars_add_up() -> None:
    before = parse_metrics(metrics([("outbound", "echo", "m/A", {"OK": 100}, hist(b2=100))]))
    restarted = parse_metrics(metrics([("outbound", "echo", "m/A", {"OK": 3}, hist(b2=3))]))
    [row] = top_rows(delta(before, restarted), 1.0)
    assert (row.calls, row.success) == (3, 1.0)
    other = parse_metrics(metrics([("outbound", "echo", "m/A", {"UNAVAILABLE": 1},
                                    hist(b2=1))]))
    [total] = top_rows(add([delta(before, restarted), delta({}, other)]), 1.0)
    assert (total.calls, total.success) == (4, 0.75)


def test_quantile_matches_the_window_one_on_the_same_buckets() -> None:
    per_bucket = hist(b0=3, b4=10, b9=6, b14=1)  # b14: above 30 s
    cumulative, running = {}, 0
    for le, n in zip(LES, per_bucket, strict=True):
        running += n
        cumulative[float(le)] = float(running)
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert quantile(q, cumulative) == pytest.approx(window_quantile(q, per_bucket))
    assert quantile(0.5, {float(le): 0.0 for le in LES}) is None


def test_not_prometheus_text_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not Prometheus text"):
        parse_metrics("grpcmesh_calls_total{direction=\n")
