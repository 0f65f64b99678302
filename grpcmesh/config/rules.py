"""Reading one service's rules: matches, routes and their weights, faults, the rate limit."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import grpc

from grpcmesh import names
from grpcmesh.config.durations import Duration
from grpcmesh.config.problems import show
from grpcmesh.config.reader import Reader, describe, join
from grpcmesh.config.schema import (
    Abort,
    Delay,
    Fault,
    Match,
    MethodPattern,
    Number,
    RateLimit,
    Route,
)
from grpcmesh.config.yamlnodes import Map, Node, Scalar

STATUS_NAMES = tuple(c.name for c in grpc.StatusCode if c.name != "OK")
_STATUS_BY_NUMBER = {c.value[0]: c.name for c in grpc.StatusCode}


class Limits:
    """The service-level timeout and max_timeout, which a route's own values override."""

    def __init__(self, timeout: Duration | None, max_timeout: Duration | None) -> None:
        self.timeout, self.max_timeout = timeout, max_timeout


def read_match(node: Node, path: str, r: Reader, external: Mapping[str, str]) -> Match | None:
    """external: proto service -> the external service its calls go to."""
    m = r.map(node, path, "a map with method and/or metadata")
    if m is None:
        return None
    f = r.fields(m, path, ("method", "metadata"))
    method = None
    if "method" in f:
        mpath = join(path, "method")
        text = r.text(f["method"], mpath, "a method path such as /shop.v1.Orders/Get")
        parsed = None if text is None else r.check(names.parse_method_pattern, text,
                                                  f["method"], mpath, "method")
        if parsed is not None:
            method = MethodPattern(*parsed)
            if method.service in external:
                r.error(f["method"], mpath, f"calls to {method.service} go to external service "
                        f"{external[method.service]}, so this rule never applies to them")
    metadata: list[tuple[str, str]] = []
    if "metadata" in f:
        mpath = join(path, "metadata")
        entries = r.map(f["metadata"], mpath, "a map of metadata names to exact values")
        for key, value in entries.items if entries else ():
            name = r.check(names.check_metadata_name, key.text, key, mpath, "metadata")
            text = r.text(value, join(mpath, key.text), "a metadata value")
            if text is not None and not (text.isascii() and text.isprintable()):
                r.error(value, join(mpath, key.text), f"metadata value {show(text)} must be "
                        "printable ASCII (what gRPC allows in text metadata)")
            elif name is not None and text is not None:
                metadata.append((name, text))
    return Match(method, tuple(sorted(metadata)))


def read_route(node: Node, path: str, r: Reader, subsets: Mapping[str, object] | None,
               limits: Limits, external: Mapping[str, str]) -> Route | None:
    """subsets: the service's subset names, or None if they could not be read."""
    m = r.map(node, path, "a route: a map with match, to, timeout and/or max_timeout")
    if m is None:
        return None
    f = r.fields(m, path, ("match", "to", "timeout", "max_timeout"))
    match = read_match(f["match"], join(path, "match"), r, external) if "match" in f else Match()
    to = read_to(f["to"], join(path, "to"), r, subsets) if "to" in f else ()
    timeout = r.duration(f["timeout"], join(path, "timeout")) if "timeout" in f else None
    max_timeout = (r.duration(f["max_timeout"], join(path, "max_timeout"))
                   if "max_timeout" in f else None)
    if timeout or max_timeout:
        check_order(r, timeout or limits.timeout, max_timeout or limits.max_timeout,
                    f.get("max_timeout") or f["timeout"], path,
                    "" if timeout else " (the service's)", "" if max_timeout else " (the service's)")
    if match is None or to is None:
        return None
    return Route(match, to, timeout, max_timeout)


def check_order(r: Reader, timeout: Duration | None, max_timeout: Duration | None, node: Node,
                path: str, whose_timeout: str = "", whose_max: str = "") -> None:
    if timeout and max_timeout and max_timeout < timeout:
        r.error(node, path, f"max_timeout {max_timeout}{whose_max} is shorter than timeout "
                f"{timeout}{whose_timeout}: a deadline given by the mesh would be cut at once")


def read_to(node: Node, path: str, r: Reader, subsets: Mapping[str, object] | None
            ) -> tuple[tuple[str, Number], ...] | None:
    m = r.map(node, path, "a map of subset names to weights, e.g. {stable: 90, canary: 10}")
    if m is None:
        return None
    if not m.items:
        r.error(m, path, "names no subset: give at least one subset and its weight, or leave "
                         "'to' out to send the calls to every healthy instance")
    weights: list[tuple[str, Number]] = []
    for key, value in m.items:
        weight = value.value if isinstance(value, Scalar) else None
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                math.isfinite(weight) and weight > 0):
            r.error(value, path, f"weights must be positive numbers, got {describe(value)} "
                                 f"for {show(key.text)}")
        elif subsets is not None and key.text not in subsets:
            known = ", ".join(list(subsets)[:10]) or "none"
            r.error(key, path, f"unknown subset {show(key.text)}: the service's subsets are "
                               f"{known}")
        else:
            weights.append((key.text, int(weight) if float(weight).is_integer() else weight))
    return tuple(sorted(weights))


def read_fault(node: Node, path: str, r: Reader, external: Mapping[str, str]) -> Fault | None:
    m = r.map(node, path, "a fault: a map with match, abort and/or delay")
    if m is None:
        return None
    f = r.fields(m, path, ("match", "abort", "delay"))
    if "abort" not in f and "delay" not in f:
        r.error(m, path, "a fault needs abort, delay or both")
    match = read_match(f["match"], join(path, "match"), r, external) if "match" in f else Match()
    abort = delay = None
    if "abort" in f:
        a = _fields(r, f["abort"], join(path, "abort"), ("code", "percent"),
                    "{code: UNAVAILABLE, percent: 10}")
        if a is not None:
            code = _status(r, a[1], a[0], join(path, "abort"))
            percent = _percent(r, a[1], join(path, "abort"))
            abort = None if code is None or percent is None else Abort(code, percent)
    if "delay" in f:
        d = _fields(r, f["delay"], join(path, "delay"), ("duration", "percent"),
                    "{duration: 100ms, percent: 5}")
        if d is not None:
            dpath = join(path, "delay")
            dnode = r.require(d[1], "duration", d[0], dpath)
            duration = None if dnode is None else r.duration(dnode, join(dpath, "duration"))
            percent = _percent(r, d[1], dpath)
            delay = None if duration is None or percent is None else Delay(duration, percent)
    if match is None or (abort is None and delay is None):
        return None
    return Fault(match, abort, delay)


def _fields(r: Reader, node: Node, path: str, known: Sequence[str], example: str
            ) -> tuple[Map, dict[str, Node]] | None:
    m = r.map(node, path, f"a map such as {example}")
    return None if m is None else (m, r.fields(m, path, known))


def _status(r: Reader, f: Mapping[str, Node], m: Map, path: str) -> str | None:
    node = r.require(f, "code", m, path)
    return None if node is None else read_status(r, node, join(path, "code"))


def read_status(r: Reader, node: Node, path: str) -> str | None:
    """A grpc.StatusCode name other than OK, with a hint for a number or lower case."""
    value = node.value if isinstance(node, Scalar) else None
    text = r.text(node, path, "a gRPC status name such as UNAVAILABLE")
    if text is None or text in STATUS_NAMES:
        return text
    if isinstance(value, int) and not isinstance(value, bool) and value in _STATUS_BY_NUMBER:
        hint = f" (write {_STATUS_BY_NUMBER[value]} for {value})"
    elif text.upper() in STATUS_NAMES:
        hint = f" (write {text.upper()})"
    else:
        hint = ""
    r.error(node, path, f"{show(text)} is not a gRPC status name{hint}: expected one of "
                        f"{', '.join(STATUS_NAMES)}" + (" (OK is not an error)"
                                                        if text == "OK" else ""))
    return None


def _percent(r: Reader, f: Mapping[str, Node], path: str) -> Number | None:
    node = f.get("percent")
    if node is None:
        return 100
    ppath = join(path, "percent")
    value = r.number(node, ppath, "a percentage from 0 to 100")
    if value is not None and not 0 <= value <= 100:
        r.error(node, ppath, f"percent must be from 0 to 100, got {show(value)}")
        return None
    return value


def read_rate_limit(node: Node, path: str, r: Reader) -> RateLimit | None:
    got = _fields(r, node, path, ("per_second", "burst"), "{per_second: 100, burst: 20}")
    if got is None:
        return None
    m, f = got
    per_second: Number | None = None
    rate = r.require(f, "per_second", m, path)
    if rate is not None:
        per_second = r.number(rate, join(path, "per_second"), "a positive number")
        if per_second is not None and per_second <= 0:
            r.error(rate, join(path, "per_second"), f"per_second must be positive, got "
                                                    f"{show(per_second)}")
            per_second = None
    burst: Number | None = max(1, math.ceil(per_second)) if per_second else None
    if "burst" in f:
        burst = r.number(f["burst"], join(path, "burst"), "a whole number of at least 1")
        if burst is not None and (not isinstance(burst, int) or burst < 1):
            r.error(f["burst"], join(path, "burst"), f"burst must be a whole number of at "
                                                     f"least 1, got {show(burst)}")
            burst = None
    if per_second is None or not isinstance(burst, int):
        return None
    return RateLimit(per_second, burst)
