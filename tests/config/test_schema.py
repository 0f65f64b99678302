"""The canonical form: round trips, equality of equal content, and the pure matchers."""
from __future__ import annotations

import json

import grpc
import pytest

from grpcmesh.config import (
    ConfigInvalid,
    Duration,
    Match,
    MethodPattern,
    check_data,
    from_data,
    parse_text,
)

from .support import EXAMPLE, service

CANONICAL = {
    "services": {"orders": {
        "balancer": "peak_ewma", "timeout": "2s", "max_timeout": "30s",
        "subsets": {"canary": {"version": "v2"}, "stable": {"version": "v1"}},
        "routes": [
            {"match": {"method": "/shop.v1.Orders/Create", "metadata": {"x-canary": "1"}},
             "to": {"canary": 100}},
            {"match": {"method": "/shop.v1.Orders/*"}, "to": {"canary": 10, "stable": 90},
             "timeout": "500ms"},
        ],
        "faults": [{"match": {"method": "/shop.v1.Orders/Get"},
                    "abort": {"code": "UNAVAILABLE", "percent": 10},
                    "delay": {"duration": "100ms", "percent": 5}}],
        "rate_limit": {"per_second": 100, "burst": 20},
    }},
    "external": {"weather": {
        "addresses": ["api.weather.example:443"], "proto_services": ["weather.v1.Forecast"],
        "tls": {"server_name": "api.weather.example"},
    }},
}


def test_example_round_trips_through_the_canonical_form() -> None:
    config = parse_text(EXAMPLE)
    assert config.to_dict() == CANONICAL
    assert from_data(config.to_dict()) == config
    assert from_data(json.loads(config.canonical_json())) == config
    assert parse_text(json.dumps(config.to_dict())) == config  # JSON is YAML too
    assert config.canonical_json() == json.dumps(CANONICAL, sort_keys=True,
                                                 separators=(",", ":"))


def test_same_content_is_equal_and_hashes_the_same() -> None:
    a = parse_text(service("""
        timeout: 2000ms
        subsets: {b: {zone: x, version: v1}, a: {}}
        routes:
          - {to: {b: 90.0, a: 10}, match: {metadata: {y: '2', x: '1'}}}
        faults: [{abort: {code: INTERNAL}}]
        """) + "external: {}\n")
    b = parse_text(service("""
        routes:
          - match: {metadata: {x: '1', y: '2'}}
            to: {a: 10, b: 90}
        faults: [{abort: {code: INTERNAL, percent: 100}}]
        subsets: {a: {}, b: {version: v1, zone: x}}
        timeout: 2s
        """))
    assert a == b
    assert hash(a) == hash(b)
    assert a.canonical_json() == b.canonical_json()
    assert a.digest() == b.digest()
    c = parse_text(service("timeout: 3s"))
    assert c != a and c.digest() != a.digest()


def test_rule_order_is_content() -> None:
    one = parse_text(service("routes: [{timeout: 1s}, {timeout: 2s}]"))
    two = parse_text(service("routes: [{timeout: 2s}, {timeout: 1s}]"))
    assert one != two


def test_services_are_sorted_by_name() -> None:
    config = parse_text("services: {b: {}, a: {}}\n")
    assert [s.name for s in config.services] == ["a", "b"]
    assert config.service("b") is not None and config.service("c") is None


def test_from_data_validates() -> None:
    bad = {"services": {"orders": {"timeout": "soon", "retry": {"attempts": 0}}}}
    report = check_data(bad)
    assert [p.format("stored") for p in report.errors] == [
        ("stored: services.orders.timeout: timeout 'soon' is not a duration: expected a number "
        "and a unit: ms, s, m or h (e.g. 250ms, 1.5s, 2m)"),
        ("stored: services.orders.retry.attempts: attempts must be a whole number from 1 to 5 "
         "(total attempts, the first one included; gRFC A6 caps them at 5), got 0"),
    ]
    with pytest.raises(ConfigInvalid, match="timeout 'soon'"):
        from_data(bad)
    with pytest.raises(ConfigInvalid, match="unsupported value"):
        from_data({"services": {"orders": {"timeout": object()}}})


def test_matchers() -> None:
    every = MethodPattern("shop.v1.Orders")
    assert every.matches("/shop.v1.Orders/Get")
    assert not every.matches("/shop.v1.OrdersX/Get")
    assert not every.matches("/shop.v1.Orders/Get/x")
    one = MethodPattern("shop.v1.Orders", "Get")
    assert one.matches("/shop.v1.Orders/Get") and not one.matches("/shop.v1.Orders/Put")
    match = Match(one, (("x-canary", "1"),))
    assert match.matches("/shop.v1.Orders/Get", {"x-canary": "1", "other": "y"})
    assert not match.matches("/shop.v1.Orders/Get", {"x-canary": "2"})
    assert not match.matches("/shop.v1.Orders/Get", {})
    assert Match().matches("/any.Service/Method", {})


def test_typed_accessors() -> None:
    config = parse_text(EXAMPLE)
    orders = config.services[0]
    assert orders.timeout == Duration(2000)
    fault = orders.faults[0]
    assert fault.abort is not None and fault.abort.status == grpc.StatusCode.UNAVAILABLE
    canary = orders.subset("canary")
    assert canary is not None and canary.selects({"version": "v2", "zone": "a"})
    assert not canary.selects({"version": "v1"})
