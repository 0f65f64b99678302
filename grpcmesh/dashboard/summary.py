"""What the dashboard's /api/summary says, from the sidecars' answers. Pure: no sockets.

The services' figures are `grpcmesh stat`'s rows (output.stat_rows over the sidecars' /stat
windows), so the page and `grpcmesh stat --json` show the same numbers. Each service's
endpoints merge the sidecars' /endpoints views (every sidecar balances on its own) with the
window's outbound calls per endpoint, whose shares are the balancer's choices made visible.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpcmesh.output import stat_rows


def shares(calls: dict[str, int]) -> dict[str, float]:
    """Each key's share (0..1) of the calls; all 0 when there were none."""
    total = sum(calls.values())
    return {key: (n / total if total else 0.0) for key, n in calls.items()}


def merge_endpoints(views: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per service, per endpoint address: the sidecars' /endpoints views made one.

    The estimate and cost are the most pessimistic (highest) of the views that have measured
    the endpoint (an estimate), as /metrics merges --workers; a view that never called it
    only counts when none has. Ejected if any view ejects it; calls, failures and calls in
    flight are summed; `sidecars` is how many views know it."""
    out: dict[str, dict[str, Any]] = {}
    for view in views:
        for name, info in view.get("services", {}).items():
            service = out.setdefault(name, {"balancer": info.get("balancer", ""),
                                            "endpoints": {}})
            for e in info.get("endpoints", ()):
                merged = service["endpoints"].get(e["address"])
                if merged is None:
                    service["endpoints"][e["address"]] = {
                        "address": e["address"], "instance_id": e.get("instance_id", ""),
                        "health": e.get("health", ""), "ejected": bool(e.get("ejected")),
                        "estimate_ms": e.get("estimate_ms"), "cost_ms": e.get("cost_ms"),
                        "in_flight": e.get("in_flight", 0), "total_calls": e.get("calls", 0),
                        "failures": e.get("failures", 0), "sidecars": 1}
                    continue
                merged["sidecars"] += 1
                merged["ejected"] = merged["ejected"] or bool(e.get("ejected"))
                merged["in_flight"] += e.get("in_flight", 0)
                merged["total_calls"] += e.get("calls", 0)
                merged["failures"] += e.get("failures", 0)
                measured = e.get("estimate_ms") is not None
                if measured and (merged["estimate_ms"] is None
                                 or e["estimate_ms"] > merged["estimate_ms"]):
                    merged["estimate_ms"], merged["cost_ms"] = e["estimate_ms"], e.get("cost_ms")
                elif merged["estimate_ms"] is None and not measured and (
                        (e.get("cost_ms") or 0) > (merged["cost_ms"] or 0)):
                    merged["cost_ms"] = e.get("cost_ms")
    return out


def endpoint_table(stat_bodies: Sequence[dict[str, Any]],
                   views: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per service: its balancer, the window's outbound calls, and its endpoints (the merged
    views, plus any endpoint that had calls in the window but left the pools since: health
    "GONE"), each with its window calls and share of them, busiest first."""
    merged = merge_endpoints(views)
    names = set(merged)
    for body in stat_bodies:
        names.update(row["service"] for row in body.get("rows", ())
                     if row.get("endpoint") and row.get("service"))
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        service = merged.get(name, {"balancer": "", "endpoints": {}})
        window = {row["endpoint"]: row["calls"] for row in stat_rows(stat_bodies, name)
                  if row["direction"] == "outbound"}
        endpoints = dict(service["endpoints"])
        for address in window:
            endpoints.setdefault(address, {
                "address": address, "instance_id": "", "health": "GONE", "ejected": False,
                "estimate_ms": None, "cost_ms": None, "in_flight": 0, "total_calls": 0,
                "failures": 0, "sidecars": 0})
        if not endpoints:
            continue
        calls = {address: window.get(address, 0) for address in endpoints}
        share = shares(calls)
        rows = [{**e, "calls": calls[a], "share": round(share[a], 4)}
                for a, e in endpoints.items()]
        rows.sort(key=lambda e: (-e["calls"], e["address"]))
        out[name] = {"balancer": service["balancer"], "calls": sum(calls.values()),
                     "endpoints": rows}
    return out


def summary(admins: Sequence[str], answers: Sequence[tuple[Any, Any]], *, window: int,
            not_asked: int = 0, registry: dict[str, Any] | None = None,
            config: dict[str, Any] | None = None) -> dict[str, Any]:
    """/api/summary: answers[i] is admins[i]'s (/stat, /endpoints) bodies, or an exception
    in place of either (it is listed as unreachable, and left out of the figures)."""
    sidecars: list[dict[str, Any]] = []
    stats: list[dict[str, Any]] = []
    views: list[dict[str, Any]] = []
    for admin, (stat, endpoints) in zip(admins, answers, strict=True):
        failed = next((a for a in (stat, endpoints) if isinstance(a, BaseException)), None)
        if failed is not None:
            sidecars.append({"admin": admin, "ok": False, "error": str(failed) or
                             type(failed).__name__})
            continue
        sidecars.append({"admin": admin, "ok": True, "service": stat.get("service", "")})
        stats.append(stat)
        views.append(endpoints)
    return {"window_s": window, "registry": registry, "config": config, "sidecars": sidecars,
            "not_asked": not_asked, "services": stat_rows(stats, None),
            "endpoints": endpoint_table(stats, views)}
