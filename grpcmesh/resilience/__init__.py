"""Retries, hedging and outlier ejection as plain objects (issue 11): no sockets, no asyncio;
time comes from an injected clock (or `now` arguments) and chance from an injected
random.Random, so each rule is tested without sleeping.

Modules, one concern each: budget (RetryBudget), backoff (Backoff, parse_pushback), retry
(RetryPolicy: retry or not, and why), commit (holds_headers, past_limit: when a call
commits to an attempt), latency (LatencyWindow, HedgeTimer, HedgeSchedule), outlier (OutlierDetector).
Their settings are the config's values (grpcmesh.config.policies); docs/resilience.md has
the rules in words.
"""
from grpcmesh.resilience.backoff import STOP, Backoff, parse_pushback
from grpcmesh.resilience.budget import RetryBudget
from grpcmesh.resilience.commit import holds_headers, past_limit
from grpcmesh.resilience.latency import HedgeSchedule, HedgeTimer, LatencyWindow
from grpcmesh.resilience.outlier import FAILURES, EndpointState, OutlierDetector
from grpcmesh.resilience.retry import CallRetries, Decision, Reason, RetryPolicy

__all__ = ["FAILURES", "STOP", "Backoff", "CallRetries", "Decision", "EndpointState",
           "HedgeSchedule", "HedgeTimer", "LatencyWindow", "OutlierDetector", "Reason",
           "RetryBudget", "RetryPolicy", "holds_headers", "parse_pushback", "past_limit"]
