#!/usr/bin/env python3
"""Simulate the pickers on the real pure objects with a fake clock (grpcmesh/balance/simulation.py).

Five endpoints answering in FAST (x 0.9-1.1), calls arriving every millisecond of fake time, the
same scenarios as scripts/bench_balancers.py: fleet-fast, slow (e0 20x slower), fail-fast (e0
answers UNAVAILABLE in 1 ms), recover (e0 slow, then fast from CHANGE_AT; seconds until a 2 s
window gives it >= 80% of its fair share). Deterministic; it shows what the balancer decides,
free of machine noise.

  python scripts/sim_balancers.py [--seeds 5] [--blend stored] [--json bench-results/sim.json]

`--blend stored` swaps in the alternative estimator (a low sample blended into the stored,
undecayed estimate), which grpcmesh/balance/ewma.py explains it does not use.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from grpcmesh.balance import ewma
from grpcmesh.balance.picker import PICKER_KINDS
from grpcmesh.balance.simulation import Behaviour, Simulation

FAST, N, DURATION, CHANGE_AT, WARMUP = 0.010, 5, 40.0, 20.0, 2.0


def _stored_blend(self: ewma.PeakEwma, sample: float, now: float) -> None:
    if self._value is None:
        self._value = sample
    else:
        w = math.exp(-max(0.0, now - self._at) / self.decay)
        decayed = self._value * w
        self._value = sample if sample > decayed else decayed + sample * (1 - w)
    self._at = now


def run(kind: str, scenario: str, seed: int) -> dict[str, float | None]:
    odd = {"fleet-fast": Behaviour(FAST), "slow": Behaviour(20 * FAST),
           "recover": Behaviour(20 * FAST),
           "fail-fast": Behaviour(0.001, grpc.StatusCode.UNAVAILABLE)}[scenario]
    sim = Simulation(kind, [odd] + [Behaviour(FAST) for _ in range(N - 1)], seed)
    end = DURATION
    if scenario == "recover":
        sim.run_for(CHANGE_AT)
        sim.behaviours[0] = Behaviour(FAST)
        end = CHANGE_AT
    sim.run_for(DURATION - sim.clock.now())
    window = [c for c in sim.completed if WARMUP <= c.started < end]
    lat = sorted(c.latency * 1000 for c in window)
    return {"p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(0.99 * len(lat))],
            "p999_ms": lat[int(0.999 * len(lat))],
            "errors_pct": 100 * sum(c.code != grpc.StatusCode.OK for c in window) / len(window),
            "e0_share_pct": 100 * sim.share(0, WARMUP, end),
            "recover_s": (sim.recovered_after(0, CHANGE_AT, 0.8 / N)
                          if scenario == "recover" else None)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--blend", choices=["decayed", "stored"], default="decayed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.blend == "stored":
        ewma.PeakEwma.observe = _stored_blend  # type: ignore[method-assign]
    rows = []
    print(f"blend={args.blend}; medians over {args.seeds} seeds (recover: the slowest seed); "
          "e0 is the odd endpoint")
    print(f"{'scenario':<11}{'picker':<15}{'p50':>7}{'p99':>8}{'p99.9':>8}{'err%':>7}"
          f"{'e0 share%':>11}{'recover s':>11}")
    for scenario in ("fleet-fast", "slow", "fail-fast", "recover"):
        for kind in PICKER_KINDS:
            runs = [run(kind, scenario, seed) for seed in range(1, args.seeds + 1)]
            row: dict[str, object] = {"scenario": scenario, "picker": kind}
            for key in ("p50_ms", "p99_ms", "p999_ms", "errors_pct", "e0_share_pct"):
                row[key] = statistics.median(float(r[key] or 0) for r in runs)
            recovered = [r["recover_s"] for r in runs]
            row["recover_s"] = (None if scenario != "recover" or None in recovered
                                else max(float(x or 0) for x in recovered))
            rows.append(row)
            rec = "-" if scenario != "recover" else (
                "never" if row["recover_s"] is None else f"{row['recover_s']:.1f}")
            print(f"{scenario:<11}{kind:<15}{row['p50_ms']:>7.1f}{row['p99_ms']:>8.1f}"
                  f"{row['p999_ms']:>8.1f}{row['errors_pct']:>7.2f}{row['e0_share_pct']:>11.2f}"
                  f"{rec:>11}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"blend": args.blend, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
