"""scripts/bench_registry.py in short form (--quick) on the memory store and on a real etcd: it
runs end to end and its JSON holds every figure. How fast the registry is, is the benchmark's to
say, not a test's."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.etcd import ETCD, MISSING

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("registrations_per_s", "register_p99_ms", "bytes_per_instance", "all_snapshots_s",
           "flip_p50_ms", "flip_p99_ms", "flips_missed", "flip_errors", "keepalives_per_s",
           "watcher_lag_max_ms", "load_before", "load_after")
FAILOVER = ("failover_catch_up_s", "failover_resumed", "failover_snapshot")


@pytest.mark.timeout(90)
def test_the_quick_benchmark_reports_every_figure_for_memory_and_etcd(tmp_path: Path) -> None:
    if ETCD is None:  # tests.etcd raises at import under GRPCMESH_CI: never skipped there
        pytest.skip(MISSING)
    out = tmp_path / "registry.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_registry.py"),
                           "--quick", "--stores", "memory,etcd", "--json", str(out)],
                          check=False, capture_output=True, text=True, timeout=80,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"memory", "etcd"}
    for store, result in results.items():
        missing = [f for f in FIGURES if result.get(f) is None]
        assert not missing, f"{store}: no {missing}"
        assert result["flips_missed"] == 0 and result["flip_errors"] == 0, result
        assert result["registrations_per_s"] > 0 and result["keepalives_per_s"] > 0
        assert result["flip_p99_ms"] >= result["flip_p50_ms"] > 0
    assert not any(f in results["memory"] for f in FAILOVER)  # one process: nothing to fail over
    etcd = results["etcd"]
    assert etcd["failover_catch_up_s"] is not None and etcd["failover_catch_up_s"] > 0
    assert etcd["failover_resumed"] + etcd["failover_snapshot"] == report["settings"]["watchers"]
    checked = {(t["store"], t["target"].split()[0]) for t in report["targets"]}
    assert checked == {("memory", "flip_p99_ms"), ("memory", "registrations_per_s"),
                       ("memory", "bytes_per_instance"), ("etcd", "flip_p99_ms"),
                       ("etcd", "bytes_per_instance")}
    assert "PASS" in done.stdout or "MISS" in done.stdout
