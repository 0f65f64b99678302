"""How the query commands print: aligned tables for people, JSON for scripts."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format

from generated.grpcmesh.registry.v1 import registry_pb2 as pb


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells)


def _json(message: Any) -> str:
    return json.dumps(json_format.MessageToDict(message, always_print_fields_with_no_presence=True),
                      indent=2)


def print_services(resp: pb.ListServicesResponse, as_json: bool) -> None:
    if as_json:
        print(_json(resp))
        return
    if not resp.services:
        print("no services registered")
        return
    print(table(["SERVICE", "INSTANCES", "SERVING", "PROTO SERVICES"],
                [[s.service, s.instances, s.serving, ", ".join(s.proto_services)]
                 for s in resp.services]))


def print_instances(resp: pb.ResolveResponse, as_json: bool) -> None:
    if as_json:
        print(_json(resp))
        return
    print(table(["SERVICE", "INSTANCE", "ADDRESS", "HEALTH", "LEASE", "ADMIN", "LABELS"],
                [[i.service, i.instance_id, i.address, pb.HealthStatus.Name(i.health),
                  i.lease_id or "registry-checked", i.admin_address or "-",
                  ",".join(f"{k}={v}" for k, v in sorted(i.labels.items())) or "-"]
                 for i in resp.instances]))


def print_endpoints(body: dict[str, Any], service: str | None, as_json: bool) -> None:
    services = body["services"]
    if service:
        services = {service: services[service]}
    if as_json:
        print(json.dumps({**body, "services": services}, indent=2))
        return
    # With --workers, every process balances on its own: one row per worker and endpoint.
    views = body.get("workers") or [{"worker": 0, "services": body["services"]}]
    several = len(views) > 1
    rows = []
    for view in views:
        if "error" in view:
            print(f"worker {view['worker']} (pid {view['pid']}): {view['error']}")
            continue
        for name, info in sorted(view["services"].items()):
            if service and name != service:
                continue
            for e in info["endpoints"]:
                estimate = "-" if e["estimate_ms"] is None else f"{e['estimate_ms']:.2f}"
                rows.append([*([view["worker"]] if several else []), name, info["balancer"],
                             e["address"], e["health"],
                             "ejected" if e.get("ejected") else "ok", estimate, e["in_flight"],
                             f"{e['cost_ms']:.2f}", e["calls"], e["failures"]])
    if not rows:
        print("no endpoints known yet")
        return
    print(table([*(["WORKER"] if several else []), "SERVICE", "BALANCER", "ADDRESS", "HEALTH",
                 "STATE", "ESTIMATE MS", "IN FLIGHT", "COST MS", "CALLS", "FAILURES"], rows))
    budgets = [[*([view["worker"]] if several else []), name, b["calls"], b["retries"],
                f"{b['available']:g}", b["exhausted"]]
               for view in views if "error" not in view
               for name, info in sorted(view["services"].items())
               if (b := info.get("retry_budget")) and (not service or name == service)]
    if budgets:  # services with retry or hedge rules (the last 10 s)
        print()
        print(table([*(["WORKER"] if several else []), "SERVICE", "CALLS", "RETRIES+HEDGES",
                     "BUDGET LEFT", "EXHAUSTED"], budgets))


def stat_rows(bodies: Sequence[dict[str, Any]], service: str | None) -> list[dict[str, Any]]:
    """What `grpcmesh stat` shows, from sidecars' /stat answers added up: per service and
    direction (or, for one service, per endpoint): calls, success rate, calls/s and latency
    percentiles from the summed histograms, and the instances the sidecars route to."""
    from grpcmesh.telemetry.window import quantile

    sums: dict[tuple[str, str, str], list[Any]] = {}
    serving: dict[str, int] = {}
    window = 1
    for body in bodies:
        window = max(window, int(body.get("window_s", 1)))
        for name, count in body.get("serving", {}).items():
            serving[name] = max(serving.get(name, 0), count)
        for row in body.get("rows", ()):
            if service is None and row["endpoint"] or service is not None and (
                    row["service"] != service or not row["endpoint"]):
                continue
            key = (row["service"], row["direction"], row["endpoint"])
            total = sums.setdefault(key, [0, 0, [0] * len(row["buckets"])])
            total[0] += row["calls"]
            total[1] += row["ok"]
            total[2] = [a + b for a, b in zip(total[2], row["buckets"], strict=True)]
    out = []
    for (name, direction, endpoint), (calls, ok, hist) in sorted(sums.items()):
        def ms(q: float, hist: list[int] = hist) -> float | None:
            value = quantile(q, hist)
            return None if value is None else round(value * 1000, 2)
        out.append({"service": name or "(no route)", "direction": direction,
                    "endpoint": endpoint, "calls": calls,
                    "success": round(ok / calls, 4) if calls else None,
                    "rps": round(calls / window, 2), "p50_ms": ms(0.5), "p95_ms": ms(0.95),
                    "p99_ms": ms(0.99), "serving": serving.get(name)})
    return out


def print_stat(rows: list[dict[str, Any]], service: str | None, as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no calls in the window")
        return
    def cell(value: Any, fmt: str = "{}") -> str:
        return "-" if value is None else fmt.format(value)
    header = ["SERVICE", "DIRECTION", *(["ENDPOINT"] if service else []), "SUCCESS", "RPS",
              "P50 MS", "P95 MS", "P99 MS", *([] if service else ["SERVING"])]
    print(table(header, [
        [r["service"], r["direction"], *([r["endpoint"]] if service else []),
         cell(None if r["success"] is None else r["success"] * 100, "{:.2f}%"),
         cell(r["rps"], "{:g}"), cell(r["p50_ms"], "{:g}"), cell(r["p95_ms"], "{:g}"),
         cell(r["p99_ms"], "{:g}"), *([] if service else [cell(r["serving"])])]
        for r in rows]))


def tap_line(entry: dict[str, Any] | None) -> str:
    """One call as `grpcmesh tap` prints it (None: the header); {"dropped": N}: a note."""
    if entry is None:
        return (f"{'TIME':12}  {'DIR':3}  {'METHOD':40}  {'ENDPOINT':21}  {'STATUS':17}  "
                f"{'LATENCY':>9}  ATTEMPTS")
    if "dropped" in entry:
        return f"({entry['dropped']} calls not shown so far: the terminal was behind)"
    status = entry["code"] + (f" ({entry['reason']})" if entry.get("reason") else "")
    return (f"{entry['start'][11:23]:12}  {entry['direction'][:3]:3}  {entry['method']:40}  "
            f"{entry['endpoint'] or '-':21}  {status:17}  {entry['duration_ms']:>7.2f}ms  "
            f"{entry['attempts']}")
