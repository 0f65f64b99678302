"""Kept: a service's retry budget and latency window outlive config versions (pure)."""
from __future__ import annotations

from grpcmesh.clock import FakeClock
from grpcmesh.config import parse_text
from grpcmesh.config.policies import BudgetSettings
from grpcmesh.interceptors.kept import Kept


def test_a_budget_is_kept_while_its_settings_stay_and_made_again_when_they_change() -> None:
    kept = Kept(FakeClock())
    budget = kept.budget("svc", BudgetSettings())
    budget.deposit()
    assert kept.budget("svc", BudgetSettings()) is budget
    assert kept.describe("svc")["retry_budget"]["calls"] == 1
    changed = kept.budget("svc", BudgetSettings(ratio=0.5))
    assert changed is not budget and changed.ratio == 0.5
    assert kept.describe("other") == {}


def test_what_a_new_config_no_longer_uses_is_dropped() -> None:
    kept = Kept(FakeClock())
    for name in ("a", "b", "c"):
        kept.budget(name, BudgetSettings())
        kept.window(name)
    kept.prune(parse_text("services:\n"
                          "  a:\n    retry: {attempts: 2}\n"
                          "  b:\n    hedge: {delay: p90}\n", "mesh.yaml"))
    assert sorted(kept.budgets) == ["a", "b"]
    assert sorted(kept.windows) == ["b"]  # only a percentile hedge keeps its window
    window = kept.windows["b"]
    assert kept.window("b") is window
