#!/usr/bin/env python3
"""Simulate the pickers on the real pure objects (Endpoint, PeakEwma, pickers) with a fake clock.

No sockets: a closed loop of CONCURRENCY callers, each endpoint answering in its service time
(plus a fixed proxy overhead). It shows what the balancer decides, free of machine noise; the
real measurement is scripts/bench_balancers.py.

  python scripts/sim_balancers.py [--seeds 5] [--json bench-results/sim.json]

`--blend stored` simulates the alternative estimator (a low sample blended into the stored,
undecayed estimate) that grpcmesh/balance/ewma.py explains it does not use.
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from grpcmesh.balance import ewma  # noqa: E402
from grpcmesh.balance.endpoint import Endpoint, LoadSettings  # noqa: E402
from grpcmesh.balance.picker import PICKER_KINDS, make_picker  # noqa: E402
from grpcmesh.clock import FakeClock  # noqa: E402
from grpcmesh.registry.model import Health, Instance  # noqa: E402

OVERHEAD = 0.002


def _stored_blend(self: ewma.PeakEwma, sample: float, now: float) -> None:
    if self._value is None:
        self._value = sample
    else:
        w = math.exp(-max(0.0, now - self._at) / self.decay)
        decayed = self._value * w
        self._value = sample if sample > decayed else decayed + sample * (1 - w)
    self._at = now


def simulate(kind: str, scenario: str, seed: int, n: int = 5, concurrency: int = 8,
             fast: float = 0.010, slow_factor: float = 20, change_at: float = 30.0,
             duration: float = 90.0) -> dict[str, object]:
    clock = FakeClock(0.0)
    rng = random.Random(seed)
    endpoints = [Endpoint(Instance("s", f"e{i}", f"10.0.0.{i}:1", health=Health.SERVING),
                          LoadSettings()) for i in range(n)]
    picker = make_picker(kind, rng, clock)
    pending: list[tuple[float, int, int, object, bool, float]] = []
    calls: list[tuple[float, float, int, bool]] = []
    seq = 0

    def service(i: int, t: float) -> tuple[float, bool]:
        odd = i == 0 and (scenario != "recover" or t < change_at)
        if odd and scenario == "fail-fast":
            return 0.001, True
        if odd and scenario in ("slow", "recover"):
            return fast * slow_factor, False
        return fast * rng.uniform(0.9, 1.2), False

    def start(t: float) -> None:
        nonlocal seq
        clock._now = t
        endpoint = picker.pick(endpoints)
        assert endpoint is not None
        i = endpoints.index(endpoint)
        handle = endpoint.start(t)
        took, failed = service(i, t)
        seq += 1
        heapq.heappush(pending, (t + took + OVERHEAD, seq, i, handle, failed, t))

    for _ in range(concurrency):
        start(0.0)
    while pending:
        t, _, i, handle, failed, started = heapq.heappop(pending)
        if t > duration:
            break
        clock._now = t
        handle.finish(t, grpc.StatusCode.UNAVAILABLE if failed else grpc.StatusCode.OK)
        calls.append((started, t - started, i, failed))
        start(t)
    end = change_at if scenario == "recover" else duration
    window = [c for c in calls if 2.0 < c[0] < end]
    lat = sorted(c[1] for c in window)
    result: dict[str, object] = {
        "picker": kind, "scenario": scenario, "seed": seed, "calls": len(window),
        "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
        "p999_ms": 1000 * lat[int(len(lat) * 0.999)],
        "errors_pct": 100 * sum(c[3] for c in window) / len(window),
        "share_e0_pct": 100 * sum(1 for c in window if c[2] == 0) / len(window)}
    if scenario == "recover":
        t, recovered = change_at, None
        while t < duration - 2:
            w = [c for c in calls if t <= c[0] < t + 2]
            if w and sum(1 for c in w if c[2] == 0) / len(w) >= 0.8 / n:
                recovered = t - change_at
                break
            t += 0.5
        result["recover_s"] = recovered
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--blend", choices=["decayed", "stored"], default="decayed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.blend == "stored":
        ewma.PeakEwma.observe = _stored_blend  # type: ignore[method-assign]
    rows = []
    for scenario in ("fleet-fast", "slow", "fail-fast", "recover"):
        for kind in PICKER_KINDS:
            runs = [simulate(kind, scenario, seed) for seed in range(1, args.seeds + 1)]
            rec = [r["recover_s"] for r in runs if "recover_s" in r]
            rows.append({
                "scenario": scenario, "picker": kind,
                **{k: statistics.median(float(r[k]) for r in runs)  # type: ignore[arg-type]
                   for k in ("p50_ms", "p99_ms", "p999_ms", "errors_pct", "share_e0_pct")},
                "recover_s_max": (None if not rec or None in rec else max(rec))})  # type: ignore
    header = f"{'scenario':<11}{'picker':<15}{'p50':>7}{'p99':>8}{'p99.9':>8}{'err%':>7}" \
             f"{'e0 share%':>11}{'recover s (max)':>17}"
    print(f"blend={args.blend}, seeds={args.seeds}, medians over seeds; e0 is the odd endpoint")
    print(header)
    for r in rows:
        rec = "-" if r["scenario"] != "recover" else str(r["recover_s_max"])
        print(f"{r['scenario']:<11}{r['picker']:<15}{r['p50_ms']:>7.1f}{r['p99_ms']:>8.1f}"
              f"{r['p999_ms']:>8.1f}{r['errors_pct']:>7.2f}{r['share_e0_pct']:>11.2f}{rec:>17}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"blend": args.blend, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
