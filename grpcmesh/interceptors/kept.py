"""What a service's rules keep across mesh config versions. Pure (the clock is passed in).

Chains are built again for each config version (relay/intercept.py), but a retry budget that
started empty at every `config apply` would let a storm through, and a latency window that
forgot every sample would stop hedging for the next 100 calls. So each service's budget lives
here for as long as its budget settings stay the same, and its latency window for as long as
it is hedged at a percentile. Memory: one budget (10 slots) and one window (1,000 samples) per
configured service, whatever the traffic; services that leave the config are dropped.
"""
from __future__ import annotations

from typing import Any

from grpcmesh.clock import Clock
from grpcmesh.config.policies import BudgetSettings
from grpcmesh.config.schema import MeshConfig
from grpcmesh.resilience.budget import RetryBudget
from grpcmesh.resilience.latency import LatencyWindow


class Kept:
    __slots__ = ("budgets", "clock", "windows")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.budgets: dict[str, RetryBudget] = {}
        self.windows: dict[str, LatencyWindow] = {}

    def budget(self, service: str, settings: BudgetSettings) -> RetryBudget:
        """service's retry budget (its retries and hedges share it)."""
        budget = self.budgets.get(service)
        if budget is None or (budget.ratio, budget.min_per_second) != (
                settings.ratio, settings.min_per_second):
            budget = self.budgets[service] = RetryBudget(self.clock, settings.ratio,
                                                         settings.min_per_second)
        return budget

    def window(self, service: str) -> LatencyWindow:
        """service's observed latency, for `hedge: {delay: pNN}`."""
        window = self.windows.get(service)
        if window is None:
            window = self.windows[service] = LatencyWindow()
        return window

    def prune(self, config: MeshConfig) -> None:
        """config is in force: what its services no longer use is dropped."""
        for name in list(self.budgets):
            service = config.service(name)
            if service is None or (service.retry is None and service.hedge is None):
                del self.budgets[name]
        for name in list(self.windows):
            service = config.service(name)
            if service is None or service.hedge is None or service.hedge.delay is not None:
                del self.windows[name]

    def describe(self, service: str) -> dict[str, Any]:
        """service's retry budget as /endpoints shows it ({} without one)."""
        budget = self.budgets.get(service)
        if budget is None:
            return {}
        calls, retries = budget.totals()
        return {"retry_budget": {
            "ratio": budget.ratio, "min_per_second": budget.min_per_second,
            "window_s": budget.window, "calls": calls, "retries": retries,
            "available": round(max(0.0, budget.balance()), 1),
            "exhausted": budget.exhausted}}
