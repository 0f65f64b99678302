"""Each kind of error, with its exact line and key path, and the warnings."""
from __future__ import annotations

from textwrap import dedent

import pytest

from grpcmesh.config import check_text, parse_text

from .support import EXAMPLE, errors, service, warnings


def test_the_issue_example_is_valid() -> None:
    report = check_text(EXAMPLE, "mesh.yaml")
    assert report.lines() == []
    assert report.config is not None
    assert report.config.summary() == ("1 service, 1 external service, 2 subsets, 2 routes, "
                                       "1 fault, 1 rate limit")


def test_the_format_from_the_issue() -> None:
    assert errors(service("""
        subsets: {stable: {version: v1}, canary: {version: v2}}
        routes:
          - to: {canary: 100}
          - match: {method: /shop.v1.Orders/*}
            to: {stable: -5}
        """)) == [("f:7: services.orders.routes[1].to: weights must be positive numbers, "
                  "got -5 for 'stable'")]


@pytest.mark.parametrize(("body", "expected"), [
    # unknown keys, with a suggestion
    ("balancr: random", ("f:3: services.orders: unknown key 'balancr' (did you mean balancer?): "
                        "expected balancer, timeout, max_timeout, subsets, routes, faults, "
                        "rate_limit, retry, hedge or outlier")),
    ("routes: [{match: {methd: /a.B/C}}]",
     ("f:3: services.orders.routes[0].match: unknown key 'methd' (did you mean method?): "
     "expected method or metadata")),
    # wrong types
    ("routes: {match: {}}", ("f:3: services.orders.routes: expected a list of routes (first "
                            "match wins), got a map")),
    ("subsets: [a, b]", ("f:3: services.orders.subsets: expected a map of subset names to "
                        "labels, e.g. {canary: {version: v2}}, got a list")),
    ("timeout:", ("f:3: services.orders.timeout: expected a duration such as 250ms, 2s or 1m, "
                 "got an empty value")),
    ("rate_limit: {per_second: '10'}", ("f:3: services.orders.rate_limit.per_second: expected "
                                       "a positive number, got '10'")),
    ("rate_limit: {per_second: true}", ("f:3: services.orders.rate_limit.per_second: expected "
                                       "a positive number, got True")),
    ("rate_limit: {per_second: .inf}", ("f:3: services.orders.rate_limit.per_second: expected "
                                       "a positive number, got inf")),
    # the balancer
    ("balancer: fastest", ("f:3: services.orders.balancer: balancer 'fastest' is unknown: "
                          "expected peak_ewma, least_request, round_robin or random")),
    # durations
    ("timeout: 2", ("f:3: services.orders.timeout: timeout '2' is not a duration: expected a "
                   "number and a unit: ms, s, m or h (e.g. 250ms, 1.5s, 2m); a bare number "
                   "has no unit: write 2s or 2ms")),
    ("max_timeout: 1h30m", ("f:3: services.orders.max_timeout: max_timeout '1h30m' is not a "
                           "duration: expected a number and a unit: ms, s, m or h (e.g. "
                           "250ms, 1.5s, 2m)")),
    ("timeout: 2s\nmax_timeout: 1s", ("f:4: services.orders.max_timeout: max_timeout 1s is "
                                     "shorter than timeout 2s: a deadline given by the mesh "
                                     "would be cut at once")),
    ("max_timeout: 1s\nroutes: [{timeout: 5s}]",
     ("f:4: services.orders.routes[0]: max_timeout 1s (the service's) is shorter than timeout "
     "5s: a deadline given by the mesh would be cut at once")),
    # method patterns and metadata
    ("routes: [{match: {method: shop.v1.Orders/Get}}]",
     ("f:3: services.orders.routes[0].match.method: method 'shop.v1.Orders/Get' is not a method "
     "path: expected /package.Service/Method or /package.Service/* (every method of the "
     "service)")),
    ("routes: [{match: {method: /shop..Orders/Get}}]",
     ("f:3: services.orders.routes[0].match.method: method '/shop..Orders/Get' has an invalid "
     "service 'shop..Orders': expected dot-separated identifiers such as 'shop.v1.Orders'")),
    ("routes: [{match: {method: /shop.Orders/Get*}}]",
     ("f:3: services.orders.routes[0].match.method: method '/shop.Orders/Get*' has an invalid "
     "method name 'Get*': expected an identifier such as 'Get', or * for every method")),
    ("routes: [{match: {metadata: {X-Canary: '1'}}}]",
     ("f:3: services.orders.routes[0].match.metadata: metadata name 'X-Canary' is not a valid "
     "metadata name: write 'x-canary' (header names are lowercase in HTTP/2)")),
    ("routes: [{match: {metadata: {trace-bin: x}}}]",
     ("f:3: services.orders.routes[0].match.metadata: metadata name 'trace-bin' is binary "
     "metadata (-bin), whose values cannot be matched as text")),
    ("routes: [{match: {metadata: {x-a: \"caf\\xe9\"}}}]",
     ("f:3: services.orders.routes[0].match.metadata.x-a: metadata value 'café' must be "
     "printable ASCII (what gRPC allows in text metadata)")),
    # subsets and weights
    ("subsets: {Canary: {version: v2}}",
     ("f:3: services.orders.subsets: subset name 'Canary' is invalid: expected 1-63 lowercase "
     "letters, digits, '-' or '.', starting and ending with a letter or digit")),
    ("subsets: {canary: {'bad key': v2}}",
     ("f:3: services.orders.subsets.canary: label key 'bad key' is invalid: expected 1-63 "
     "letters, digits or '._/-', starting and ending with a letter or digit")),
    ("subsets: {canary: {version: v2}}\nroutes: [{to: {canry: 1}}]",
     ("f:4: services.orders.routes[0].to: unknown subset 'canry': the service's subsets are "
     "canary")),
    ("routes: [{to: {canary: 1}}]", ("f:3: services.orders.routes[0].to: unknown subset "
                                    "'canary': the service's subsets are none")),
    ("subsets: {a: {}}\nroutes: [{to: {a: 0}}]", ("f:4: services.orders.routes[0].to: weights "
                                                 "must be positive numbers, got 0 for 'a'")),
    ("subsets: {a: {}}\nroutes: [{to: {a: ten}}]", ("f:4: services.orders.routes[0].to: "
                                                   "weights must be positive numbers, got "
                                                   "'ten' for 'a'")),
    ("routes: [{to: {}}]", ("f:3: services.orders.routes[0].to: names no subset: give at least "
                           "one subset and its weight, or leave 'to' out to send the calls to "
                           "every healthy instance")),
    # faults: codes, percentages
    ("faults: [{abort: {code: unavailable}}]",
     ("f:3: services.orders.faults[0].abort.code: 'unavailable' is not a gRPC status name "
     "(write UNAVAILABLE): expected one of CANCELLED, UNKNOWN, INVALID_ARGUMENT, "
     "DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, "
     "FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, "
     "DATA_LOSS, UNAUTHENTICATED")),
    ("faults: [{abort: {code: 14}}]", ("f:3: services.orders.faults[0].abort.code: '14' is not "
                                      "a gRPC status name (write UNAVAILABLE for 14): expected "
                                      "one of CANCELLED,")),
    ("faults: [{abort: {code: OK}}]", ("f:3: services.orders.faults[0].abort.code: 'OK' is not "
                                      "a gRPC status name: expected one of CANCELLED,")),
    ("faults: [{abort: {percent: 5}}]", ("f:3: services.orders.faults[0].abort: missing key "
                                        "'code'")),
    ("faults:\n  - abort: {code: INTERNAL, percent: 100.5}",
     "f:4: services.orders.faults[0].abort.percent: percent must be from 0 to 100, got 100.5"),
    ("faults: [{delay: {duration: 1s, percent: -1}}]",
     "f:3: services.orders.faults[0].delay.percent: percent must be from 0 to 100, got -1"),
    ("faults: [{delay: {percent: 5}}]", ("f:3: services.orders.faults[0].delay: missing key "
                                        "'duration'")),
    ("faults: [{match: {method: /a.B/C}}]", ("f:3: services.orders.faults[0]: a fault needs "
                                            "abort, delay or both")),
    # the rate limit
    ("rate_limit: {burst: 5}", "f:3: services.orders.rate_limit: missing key 'per_second'"),
    ("rate_limit: {per_second: 0}", ("f:3: services.orders.rate_limit.per_second: per_second "
                                    "must be positive, got 0")),
    ("rate_limit: {per_second: 10, burst: 0}", ("f:3: services.orders.rate_limit.burst: burst "
                                               "must be a whole number of at least 1, got 0")),
    ("rate_limit: {per_second: 10, burst: 2.5}", ("f:3: services.orders.rate_limit.burst: "
                                                 "burst must be a whole number of at least 1, "
                                                 "got 2.5")),
])
def test_service_errors(body: str, expected: str) -> None:
    found = errors(service(body))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("servces: {}", ("f:1: unknown key 'servces' (did you mean services?): expected services "
                    "or external")),
    ("- a\n- b", "f:1: expected a map with the keys services and/or external, got a list"),
    ("services:", ("f:1: services: expected a map of mesh service names to their rules, got an "
                  "empty value")),
    ("services:\n  Orders: {}", ("f:2: services.Orders: service name 'Orders' is not a valid "
                                "mesh service name")),
    ("services:\n  orders: 5", ("f:2: services.orders: expected a map of the service's rules "
                               "(balancer, timeout, routes, ...), got 5")),
    ("services:\n  orders: {}\n  orders: {}", ("f:3: services: duplicate key 'orders' (first "
                                              "at line 2)")),
    (("services:\n  weather: {subsets: {a: {}}}\nexternal:\n  weather:\n    addresses: [a:1]\n"
     "    proto_services: [w.W]"),
     ("f:2: services.weather.subsets: 'weather' is an external service (external, line 4): its "
     "endpoints are the addresses DNS gives, which have no labels to select")),
    (("services:\n  weather:\n    rate_limit: {per_second: 1}\nexternal:\n  weather:\n"
      "    addresses: [a:1]\n    proto_services: [w.W]"),
     ("f:3: services.weather.rate_limit: 'weather' is an external service (external, line 5): "
      "rate limits are applied by each instance's inbound sidecar, and an external service has "
      "none")),
    ("external:\n  w:\n    addresses: [a.example]\n    proto_services: [w.W]",
     "f:3: external.w.addresses[0]: address 'a.example' is not HOST:PORT"),
    ("external:\n  w:\n    addresses: []\n    proto_services: [w.W]",
     "f:3: external.w.addresses: is empty: give at least one (HOST:PORT)"),
    ("external:\n  w:\n    proto_services: [w.W]", "f:3: external.w: missing key 'addresses'"),
    ("external:\n  w:\n    addresses: [a:1, b:2, a:1]\n    proto_services: [w.W]",
     "f:3: external.w.addresses[2]: 'a:1' is listed twice (first at line 3)"),
    ("external:\n  w:\n    addresses: [a:1]\n    proto_services: [w/W]",
     ("f:4: external.w.proto_services[0]: proto service 'w/W' is not a fully-qualified proto "
     "service name")),
    (("external:\n  w:\n    addresses: [a:1]\n    proto_services: [w.W]\n"
     "  v:\n    addresses: [b:1]\n    proto_services:\n      - w.W"),
     "f:8: external.v.proto_services: w.W is already routed to external service w"),
    (("external:\n  w:\n    addresses: [a:1]\n    proto_services: [w.W]\n"
     "    tls: {server_name: 'a b'}"),
     "f:5: external.w.tls.server_name: server_name 'a b' is not a hostname"),
    (("external:\n  w:\n    addresses: [a:1]\n    proto_services: [w.W]\n"
     "    tls: {ca_file: ca.pem}"),
     ("f:5: external.w.tls.ca_file: 'ca.pem' is not an absolute path: the sidecars read it, "
     "each from its own working directory")),
    (("external:\n  w:\n    addresses: [a:1]\n    proto_services: [w.W]\n"
     "    tls: {sni: x}"),
     "f:5: external.w.tls: unknown key 'sni': expected server_name or ca_file"),
    (("services:\n  orders:\n    routes: [{match: {method: /w.W/Get}}]\n"
     "external:\n  w:\n    addresses: [a:1]\n    proto_services: [w.W]"),
     ("f:3: services.orders.routes[0].match.method: calls to w.W go to external service w, so "
     "this rule never applies to them")),
    ("services:\n  orders:\n    timeout: 1s\n\tmax_timeout: 2s",
     "f:4: YAML syntax error: "),
])
def test_file_errors(text: str, expected: str) -> None:
    found = errors(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


def test_every_error_is_reported_in_line_order() -> None:
    found = errors(service("""
        balancer: fastest
        timeout: soon
        retry: {attempts: 0}
        subsets: {a: {}}
        routes:
          - to: {a: -1, b: 1}
        faults:
          - abort: {code: NOPE, percent: 200}
        rate_limit: {per_second: -1}
        """))
    assert [line.split(": ")[0:2] for line in found] == [
        ["f:3", "services.orders.balancer"],
        ["f:4", "services.orders.timeout"],
        ["f:5", "services.orders.retry.attempts"],
        ["f:8", "services.orders.routes[0].to"],
        ["f:8", "services.orders.routes[0].to"],
        ["f:10", "services.orders.faults[0].abort.code"],
        ["f:10", "services.orders.faults[0].abort.percent"],
        ["f:11", "services.orders.rate_limit.per_second"],
    ]


def test_defaults_and_silent_choices() -> None:
    config = parse_text(service("""
        subsets: {all: {}}
        routes:
          - timeout: 1s
          - to: {all: 1}
        faults:
          - abort: {code: UNAVAILABLE}
        rate_limit: {per_second: 2.5}
        """))
    orders = config.services[0]
    assert orders.balancer is None and orders.timeout is None and orders.max_timeout is None
    assert orders.routes[0].to == () and orders.routes[0].match.method is None
    assert orders.faults[0].abort is not None and orders.faults[0].abort.percent == 100
    assert orders.rate_limit is not None and orders.rate_limit.burst == 3
    assert orders.subsets[0].labels == ()


def test_strings_are_taken_as_written() -> None:
    config = parse_text(service("""
        subsets: {new: {version: 1.10, beta: yes}}
        routes: [{match: {metadata: {x-canary: 1}}}]
        """))
    assert config.services[0].subsets[0].labels == (("beta", "yes"), ("version", "1.10"))
    assert config.services[0].routes[0].match.metadata == (("x-canary", "1"),)


def test_empty_file_is_an_empty_config() -> None:
    assert parse_text("# nothing yet\n").to_dict() == {}


def test_shadowed_rules_are_warnings() -> None:
    assert warnings(service("""
        routes:
          - match: {method: /shop.v1.Orders/*}
          - match: {method: /shop.v1.Orders/Get, metadata: {x-a: b}}
          - match: {method: /shop.v1.Carts/Get}
          - match: {metadata: {x-a: b}}
          - {}
          - match: {method: /shop.v1.Carts/Get}
        faults:
          - {match: {method: /a.B/C}, abort: {code: INTERNAL}}
          - {match: {method: /a.B/C}, delay: {duration: 1s}}
        """)) == [
        ("f:5: warning: services.orders.routes[1]: never applies: routes[0] matches every call "
        "it matches, and the first match wins"),
        ("f:9: warning: services.orders.routes[5]: never applies: routes[4] matches every call "
        "it matches, and the first match wins"),
        ("f:12: warning: services.orders.faults[1]: never applies: faults[0] matches every call "
        "it matches, and the first match wins"),
    ]


def test_subsets_that_select_nothing_are_warnings_given_the_instances() -> None:
    text = service("subsets: {stable: {version: v1}, canary: {version: v2}}")
    assert warnings(text) == []  # offline: nothing known, nothing said
    assert warnings(text, {"orders": [{"version": "v1", "zone": "a"}]}) == [
        ("f:3: warning: services.orders.subsets.canary: selects no instance of orders today "
        "(labels version=v2)")]
    assert len(warnings(text, {})) == 2


def test_an_external_service_has_rules_of_its_own_and_overlaps_are_warnings() -> None:
    text = """\
        services:
          weather:
            balancer: round_robin
            timeout: 2s
            routes: [{match: {method: /w.W/Get}, timeout: 1s}]
            faults: [{match: {method: /w.W/*}, abort: {code: UNAVAILABLE, percent: 1}}]
        external:
          weather:
            addresses: [a:1]
            proto_services: [w.W]
        """
    report = check_text(dedent(text), "f")
    assert report.config is not None and report.config.service("weather") is not None
    assert warnings(text) == []  # offline: who serves w.W is not known
    assert warnings(text, {"weather": [{}]}, {"w.W": ["forecast", "weather-v1"]}) == [
        ("f:8: warning: external.weather: a mesh service named 'weather' has 1 registered "
         "instance(s): calls that name it in the grpcmesh-service header go to this external "
         "service"),
        ("f:10: warning: external.weather.proto_services: w.W is also served by mesh service "
         "forecast, weather-v1: its calls go to external service weather, which the config "
         "names explicitly (the grpcmesh-service header still reaches a mesh service)")]
