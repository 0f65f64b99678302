"""Helpers for the config tests: the issue's example, and errors as the CLI prints them."""
from __future__ import annotations

from textwrap import dedent

from grpcmesh.config import check_text

EXAMPLE = dedent("""\
    services:
      orders:                              # a mesh service name
        balancer: peak_ewma                # peak_ewma | least_request | round_robin | random
        timeout: 2s                        # deadline for calls that arrive without one
        max_timeout: 30s                   # a longer caller deadline is cut to this
        subsets:                           # named sets of instances, by their labels
          stable: {version: v1}
          canary: {version: v2}
        routes:                            # first match wins; no match: every healthy instance
          - match: {method: /shop.v1.Orders/Create, metadata: {x-canary: "1"}}
            to: {canary: 100}
          - match: {method: /shop.v1.Orders/*}   # exact path, or a service with /*
            to: {stable: 90, canary: 10}         # weights (any positive numbers), by subset
            timeout: 500ms                       # per-route override of timeout / max_timeout
        faults:                            # for testing resilience; first match wins
          - match: {method: /shop.v1.Orders/Get}
            abort: {code: UNAVAILABLE, percent: 10}
            delay: {duration: 100ms, percent: 5}
        rate_limit: {per_second: 100, burst: 20}   # per instance -> RESOURCE_EXHAUSTED
    external:                              # services outside the mesh: the outside world
      weather:
        addresses: [api.weather.example:443]     # resolved by DNS, balanced like instances
        proto_services: [weather.v1.Forecast]    # calls to these are routed here
        tls: {server_name: api.weather.example}  # optional: TLS to the outside (ALPN h2);
                                                 # ca_file: PATH (default: the system's CAs)
    """)


def errors(text: str) -> list[str]:
    """Every error as `f:LINE: PATH: message`; the text is dedented first."""
    report = check_text(dedent(text), "f")
    assert report.config is None if report.errors else report.config is not None
    return [p.format("f") for p in report.errors]


def warnings(text: str, known: dict[str, list[dict[str, str]]] | None = None,
             serving: dict[str, list[str]] | None = None) -> list[str]:
    report = check_text(dedent(text), "f", known, serving)
    assert not report.errors, report.lines()
    return [p.format("f", warning=True) for p in report.warnings]


def service(body: str) -> str:
    """A config with one service `orders` whose keys are body (indented 4 spaces for it)."""
    return "services:\n  orders:\n" + "".join(f"    {line}\n" for line in
                                                dedent(body).strip("\n").splitlines())
