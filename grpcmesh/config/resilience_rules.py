"""Reading services.NAME.retry, .hedge and .outlier (issue 11), with every error's line and
key path. Defaults are filled in here (docs/config.md has the table); the values are in
policies.py.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from grpcmesh import names
from grpcmesh.config.durations import MAX_MS, Duration
from grpcmesh.config.policies import (
    METHOD_KINDS,
    BudgetSettings,
    HedgeSettings,
    MethodSet,
    OutlierSettings,
    RetrySettings,
    SuccessRateSettings,
)
from grpcmesh.config.problems import show
from grpcmesh.config.reader import Reader, join
from grpcmesh.config.rules import read_status
from grpcmesh.config.schema import MethodPattern, Number
from grpcmesh.config.yamlnodes import Node, Scalar

MAX_ATTEMPTS = 5  # gRFC A6's client-side cap, for retries and hedges alike
_PERCENTILE = re.compile(r"p([0-9]{2})(?:\.([0-9]))?\Z")
# YAML 1.1 reads a bare `on` key as the boolean true: say so instead of "unknown key 'on'".
_ON_HINT = ("a bare 'on' key is read by YAML 1.1 as the boolean true; the retried status "
            "codes are given as codes: [UNAVAILABLE]")
RETRY_KEYS = ("attempts", "codes", "backoff", "per_try_timeout", "budget", "methods")
HEDGE_KEYS = ("delay", "max_attempts", "methods")
OUTLIER_KEYS = ("consecutive_failures", "interval", "base_ejection", "max_ejection_percent",
                "success_rate")


def read_retry(node: Node, path: str, r: Reader, external: Mapping[str, str]
               ) -> RetrySettings | None:
    m = r.map(node, path, "a map such as {attempts: 3, codes: [UNAVAILABLE]}")
    if m is None:
        return None
    f = r.fields(m, path, RETRY_KEYS, {"on": _ON_HINT, "retry_on": _ON_HINT})
    d = RetrySettings()
    attempts = _whole(r, f, "attempts", path, 1, MAX_ATTEMPTS, d.attempts,
                      "total attempts, the first one included; gRFC A6 caps them at 5")
    codes = _codes(r, f["codes"], join(path, "codes")) if "codes" in f else d.codes
    base: Duration | None = d.backoff_base
    top: Duration | None = d.backoff_max
    if "backoff" in f:
        base, top = _backoff(r, f["backoff"], join(path, "backoff"), d)
    per_try = (r.duration(f["per_try_timeout"], join(path, "per_try_timeout"))
               if "per_try_timeout" in f else None)
    budget = _budget(r, f["budget"], join(path, "budget")) if "budget" in f else d.budget
    methods = _methods(r, f["methods"], join(path, "methods"), external) \
        if "methods" in f else d.methods
    if attempts is None or codes is None or base is None or top is None or budget is None \
            or methods is None or ("per_try_timeout" in f and per_try is None):
        return None
    return RetrySettings(attempts, codes, base, top, per_try, budget, methods)


def read_hedge(node: Node, path: str, r: Reader, external: Mapping[str, str]
               ) -> HedgeSettings | None:
    m = r.map(node, path, "a map such as {delay: p95, max_attempts: 2}")
    if m is None:
        return None
    f = r.fields(m, path, HEDGE_KEYS)
    delay: Duration | None = None
    percentile: Number | None = None
    node_delay = r.require(f, "delay", m, path)
    if node_delay is not None:
        dpath = join(path, "delay")
        text = r.text(node_delay, dpath, "a duration such as 20ms, or a percentile p50..p99.9")
        if text is not None and text.startswith("p"):
            percentile = r.check(_percentile, text, node_delay, dpath)
        elif text is not None:
            delay = r.check(Duration.parse, text, node_delay, dpath)
    d = HedgeSettings()
    attempts = _whole(r, f, "max_attempts", path, 2, MAX_ATTEMPTS, d.max_attempts,
                      "total attempts, the first one included")
    methods = _methods(r, f["methods"], join(path, "methods"), external) \
        if "methods" in f else d.methods
    if (delay is None and percentile is None) or attempts is None or methods is None:
        return None
    return HedgeSettings(delay, percentile, attempts, methods)


def read_outlier(node: Node, path: str, r: Reader) -> OutlierSettings | None:
    m = r.map(node, path, "a map such as {consecutive_failures: 5, interval: 10s}")
    if m is None:
        return None
    f = r.fields(m, path, OUTLIER_KEYS)
    d = OutlierSettings()
    failures = _whole(r, f, "consecutive_failures", path, 1, None, d.consecutive_failures,
                      "failures in a row")
    interval = _duration(r, f, "interval", path, d.interval)
    base = _duration(r, f, "base_ejection", path, d.base_ejection)
    percent: Number | None = d.max_ejection_percent
    if "max_ejection_percent" in f:
        ppath = join(path, "max_ejection_percent")
        percent = r.number(f["max_ejection_percent"], ppath, "a percentage from 0 to 100")
        if percent is not None and not 0 <= percent <= 100:
            r.error(f["max_ejection_percent"], ppath, f"max_ejection_percent must be from 0 "
                    f"to 100, got {show(percent)}")
            percent = None
    rate: SuccessRateSettings | None = None
    if "success_rate" in f:
        rate = _success_rate(r, f["success_rate"], join(path, "success_rate"))
    if failures is None or interval is None or base is None or percent is None or (
            "success_rate" in f and rate is None):
        return None
    return OutlierSettings(failures, interval, base, percent, rate)


def check_exclusive(r: Reader, retry: RetrySettings, hedge: HedgeSettings, node: Node,
                    path: str) -> None:
    """gRFC A6: a method has a retry policy or a hedging policy, not both. Both may be given
    only with method lists that share no method."""
    one, two = retry.methods, hedge.methods
    if one.kind == "list" and two.kind == "list":
        shared = [str(p) for p in one.patterns if any(_overlap(p, q) for q in two.patterns)]
        if not shared:
            return
        what = f"both cover {', '.join(shared[:3])}"
    else:
        what = (f"retry covers {one.kind if one.kind != 'list' else 'a list of'} methods and "
                f"hedge {two.kind if two.kind != 'list' else 'a list of'} methods, which may "
                "be the same")
    r.error(node, path, f"retry and hedge: {what}; a method has a retry policy or a hedging "
                        "policy, not both (gRFC A6): give them method lists that share no "
                        "method, or keep one")


def _overlap(a: MethodPattern, b: MethodPattern) -> bool:
    return a.service == b.service and (a.method is None or b.method is None
                                       or a.method == b.method)


def _whole(r: Reader, f: Mapping[str, Node], key: str, path: str, low: int, high: int | None,
           default: int, what: str) -> int | None:
    if key not in f:
        return default
    kpath = join(path, key)
    expected = f"a whole number from {low} to {high}" if high else f"a whole number of at " \
                                                                   f"least {low}"
    value = r.number(f[key], kpath, f"{expected} ({what})")
    if value is not None and (not isinstance(value, int) or value < low
                              or (high is not None and value > high)):
        r.error(f[key], kpath, f"{key} must be {expected} ({what}), got {show(value)}")
        return None
    return value


def _backoff(r: Reader, node: Node, path: str, d: RetrySettings
             ) -> tuple[Duration | None, Duration | None]:
    m = r.map(node, path, "a map such as {base: 25ms, max: 250ms}")
    if m is None:
        return None, None
    f = r.fields(m, path, ("base", "max"))
    # Left out, max is 10 x base (Envoy's default), and base is at most max.
    base = _duration(r, f, "base", path, d.backoff_base)
    top = _duration(r, f, "max", path, d.backoff_max if base is None else
                    Duration(min(MAX_MS, base.ms * 10)))
    if "base" not in f and top is not None:
        base = min(d.backoff_base, top)
    if base is not None and top is not None and top < base:
        r.error(f.get("max") or f["base"], join(path, "max"), f"max {top} is shorter than "
                f"base {base}: expected base <= max")
        return base, None
    return base, top


def _duration(r: Reader, f: Mapping[str, Node], key: str, path: str, default: Duration
              ) -> Duration | None:
    return r.duration(f[key], join(path, key)) if key in f else default


def _codes(r: Reader, node: Node, path: str) -> tuple[str, ...] | None:
    seq = r.seq(node, path, "a list of gRPC status names such as [UNAVAILABLE]")
    if seq is None:
        return None
    if not seq.items:
        r.error(seq, path, "is empty: give at least one status name, or remove retry")
        return None
    codes: list[str] = []
    for i, item in enumerate(seq.items):
        code = read_status(r, item, f"{path}[{i}]")
        if code is not None and code in codes:
            r.error(item, f"{path}[{i}]", f"{code} is listed twice")
        elif code is not None:
            codes.append(code)
    return tuple(codes) if len(codes) == len(seq.items) else None


def _budget(r: Reader, node: Node, path: str) -> BudgetSettings | None:
    m = r.map(node, path, "a map such as {ratio: 0.2, min_per_second: 10}")
    if m is None:
        return None
    f = r.fields(m, path, ("ratio", "min_per_second"))
    d = BudgetSettings()
    ratio: Number | None = d.ratio
    if "ratio" in f:
        ratio = r.number(f["ratio"], join(path, "ratio"), "a number above 0, at most 1")
        if ratio is not None and not 0 < ratio <= 1:
            r.error(f["ratio"], join(path, "ratio"), f"ratio must be above 0 and at most 1 "
                    f"(retries per call), got {show(ratio)}")
            ratio = None
    rate: Number | None = d.min_per_second
    if "min_per_second" in f:
        rate = r.number(f["min_per_second"], join(path, "min_per_second"),
                        "a number of at least 0")
        if rate is not None and rate < 0:
            r.error(f["min_per_second"], join(path, "min_per_second"), "min_per_second must "
                    f"be at least 0, got {show(rate)}")
            rate = None
    return None if ratio is None or rate is None else BudgetSettings(ratio, rate)


def _methods(r: Reader, node: Node, path: str, external: Mapping[str, str]
             ) -> MethodSet | None:
    """idempotent | all | a non-empty list of /pkg.Service/Method or /pkg.Service/*."""
    expected = ("idempotent, all, or a list of method paths such as "
                "[/shop.v1.Orders/Get, /shop.v1.Catalog/*]")
    if isinstance(node, Scalar):
        text = r.text(node, path, expected)
        if text is None:
            return None
        if text not in METHOD_KINDS:
            r.error(node, path, f"methods {show(text)} is unknown: expected {expected}")
            return None
        return MethodSet(text)
    seq = r.seq(node, path, expected)
    if seq is None:
        return None
    if not seq.items:
        r.error(seq, path, f"is empty: expected {expected}")
        return None
    patterns: list[MethodPattern] = []
    for i, item in enumerate(seq.items):
        ipath = f"{path}[{i}]"
        text = r.text(item, ipath, "a method path such as /shop.v1.Orders/Get")
        parsed = None if text is None else r.check(names.parse_method_pattern, text, item,
                                                  ipath, "method")
        if parsed is None:
            continue
        pattern = MethodPattern(*parsed)
        if pattern.service in external:
            r.error(item, ipath, f"calls to {pattern.service} go to external service "
                                 f"{external[pattern.service]}, so this never applies to them")
        elif pattern in patterns:
            r.error(item, ipath, f"{pattern} is listed twice")
        else:
            patterns.append(pattern)
    if len(patterns) != len(seq.items):
        return None
    return MethodSet("list", tuple(patterns))


def _percentile(text: str, field: str) -> Number:
    m = _PERCENTILE.match(text)
    value = None if m is None else (int(m.group(1)) if m.group(2) is None
                                    else float(f"{m.group(1)}.{m.group(2)}"))
    if value is None or not 50 <= value <= 99.9:
        raise ValueError(f"{field} {show(text)} is not a percentile from p50 to p99.9 (such as "
                         "p95 or p99.9) nor a duration such as 20ms")
    return int(value) if float(value).is_integer() else value


def _success_rate(r: Reader, node: Node, path: str) -> SuccessRateSettings | None:
    m = r.map(node, path, "a map such as {stdev_factor: 1.9, min_hosts: 5, min_requests: 100}")
    if m is None:
        return None
    f = r.fields(m, path, ("stdev_factor", "min_hosts", "min_requests"))
    d = SuccessRateSettings()
    factor: Number | None = d.stdev_factor
    if "stdev_factor" in f:
        factor = r.number(f["stdev_factor"], join(path, "stdev_factor"), "a positive number")
        if factor is not None and factor <= 0:
            r.error(f["stdev_factor"], join(path, "stdev_factor"), f"stdev_factor must be "
                    f"positive, got {show(factor)}")
            factor = None
    hosts = _whole(r, f, "min_hosts", path, 1, None, d.min_hosts,
                   "endpoints with enough calls for the rule to run")
    calls = _whole(r, f, "min_requests", path, 1, None, d.min_requests,
                   "calls in an interval for an endpoint to count")
    if factor is None or hosts is None or calls is None:
        return None
    return SuccessRateSettings(factor, hosts, calls)
