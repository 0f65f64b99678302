"""The dashboard's /api/summary computed from sidecars' answers, without sockets."""
from __future__ import annotations

from typing import Any

import pytest

from grpcmesh.cli import build_parser
from grpcmesh.commands import UsageError, settings_from
from grpcmesh.dashboard.server import DashboardSettings
from grpcmesh.dashboard.summary import endpoint_table, merge_endpoints, shares, summary
from grpcmesh.output import stat_rows


def _row(direction: str, endpoint: str, calls: int, ok: int, bucket: int = 3) -> dict[str, Any]:
    buckets = [0] * 15
    buckets[bucket] = calls
    return {"direction": direction, "service": "echo", "endpoint": endpoint, "calls": calls,
            "ok": ok, "buckets": buckets}


def _endpoint(address: str, calls: int, estimate: float | None, cost: float,
              ejected: bool = False) -> dict[str, Any]:
    return {"instance_id": address, "address": address, "health": "SERVING",
            "estimate_ms": estimate, "in_flight": 1, "cost_ms": cost, "calls": calls,
            "failures": 0, **({"ejected": True} if ejected else {})}


CLIENT_A = {"window_s": 10, "service": "a", "serving": {"echo": 2},
            "rows": [_row("outbound", "", 30, 29), _row("outbound", "e1:1", 20, 20),
                     _row("outbound", "e2:1", 10, 9, bucket=6)]}
CLIENT_B = {"window_s": 10, "service": "b", "serving": {"echo": 2},
            "rows": [_row("outbound", "", 10, 10), _row("outbound", "e1:1", 10, 10)]}
VIEW_A = {"services": {"echo": {"balancer": "peak_ewma", "endpoints": [
    _endpoint("e1:1", 20, 3.0, 6.0), _endpoint("e2:1", 10, 40.0, 80.0, ejected=True)]}}}
VIEW_B = {"services": {"echo": {"balancer": "peak_ewma", "endpoints": [
    _endpoint("e1:1", 10, 5.0, 10.0), _endpoint("e2:1", 0, None, 30.0)]}}}


def test_shares_add_up_to_one_and_are_zero_without_calls() -> None:
    assert shares({"a": 3, "b": 1}) == {"a": 0.75, "b": 0.25}
    assert shares({"a": 0, "b": 0}) == {"a": 0.0, "b": 0.0}
    assert shares({}) == {}


def test_views_merge_pessimistically_and_counts_add_up() -> None:
    merged = merge_endpoints([VIEW_A, VIEW_B])["echo"]["endpoints"]
    e1, e2 = merged["e1:1"], merged["e2:1"]
    assert (e1["estimate_ms"], e1["cost_ms"], e1["total_calls"], e1["in_flight"]) == (
        5.0, 10.0, 30, 2)
    # B never called e2: its default cost does not count against A's measurement
    assert (e2["estimate_ms"], e2["cost_ms"], e2["ejected"], e2["sidecars"]) == (
        40.0, 80.0, True, 2)


def test_endpoint_shares_come_from_the_window_busiest_first() -> None:
    table = endpoint_table([CLIENT_A, CLIENT_B], [VIEW_A, VIEW_B])["echo"]
    assert table["calls"] == 40 and table["balancer"] == "peak_ewma"
    assert [(e["address"], e["calls"], e["share"]) for e in table["endpoints"]] == [
        ("e1:1", 30, 0.75), ("e2:1", 10, 0.25)]


def test_an_endpoint_that_left_the_pools_still_shows_its_calls() -> None:
    table = endpoint_table([CLIENT_A], [{"services": {"echo": {
        "balancer": "round_robin", "endpoints": [_endpoint("e1:1", 20, 3.0, 6.0)]}}}])
    gone = {e["address"]: e for e in table["echo"]["endpoints"]}["e2:1"]
    assert (gone["health"], gone["calls"], gone["share"]) == ("GONE", 10, 0.3333)


def test_services_are_grpcmesh_stats_rows_and_unreachable_sidecars_are_listed() -> None:
    down = OSError("Connection refused")
    body = summary(["a:1", "b:1", "c:1"],
                   [(CLIENT_A, VIEW_A), (CLIENT_B, VIEW_B), (down, down)], window=10,
                   not_asked=2, config={"version": 3, "applied_at": None})
    assert body["services"] == stat_rows([CLIENT_A, CLIENT_B], None)
    assert body["services"][0]["calls"] == 40 and body["services"][0]["rps"] == 4.0
    assert body["sidecars"] == [
        {"admin": "a:1", "ok": True, "service": "a"}, {"admin": "b:1", "ok": True, "service": "b"},
        {"admin": "c:1", "ok": False, "error": "Connection refused"}]
    assert (body["not_asked"], body["config"]["version"], body["window_s"]) == (2, 3, 10)


def test_one_answer_missing_leaves_the_sidecar_out_of_the_figures() -> None:
    body = summary(["a:1"], [(CLIENT_A, TimeoutError())], window=10)
    assert body["sidecars"] == [{"admin": "a:1", "ok": False, "error": "TimeoutError"}]
    assert body["services"] == [] and body["endpoints"] == {}


def test_the_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["dashboard", "--registry", "127.0.0.1:7700"])
    settings = settings_from(args, DashboardSettings)
    assert (settings.listen, settings.window, settings.max_sidecars, settings.timeout) == (
        "127.0.0.1:7800", 10, 50, 2.0)
    for bad in (["--window", "2m"], ["--max-sidecars", "0"], ["--listen", "nowhere"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(["dashboard", *bad])
        assert exit_.value.code == 2
    with pytest.raises(UsageError, match="--timeout 0 must be positive"):
        settings_from(build_parser().parse_args(["dashboard", "--timeout", "0"]),
                      DashboardSettings)
