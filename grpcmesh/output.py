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
