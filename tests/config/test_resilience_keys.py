"""services.NAME.retry, .hedge and .outlier (issue 11): defaults, canonical form, errors."""
from __future__ import annotations

import pytest

from grpcmesh.config import Duration, MethodPattern, check_data, parse_text
from grpcmesh.config.policies import (
    BudgetSettings,
    HedgeSettings,
    MethodSet,
    OutlierSettings,
    RetrySettings,
    SuccessRateSettings,
)

from .support import errors, service

ISSUE = """
retry:
  attempts: 3
  codes: [UNAVAILABLE]
  backoff: {base: 25ms, max: 250ms}
  per_try_timeout: 1s
  budget: {ratio: 0.2, min_per_second: 10}
  methods: idempotent
outlier:
  consecutive_failures: 5
  interval: 10s
  base_ejection: 30s
  max_ejection_percent: 50
  success_rate: {stdev_factor: 1.9, min_hosts: 5, min_requests: 100}
"""


def test_the_issue_contract_reads_as_written() -> None:
    orders = parse_text(service(ISSUE)).services[0]
    assert orders.retry == RetrySettings(3, ("UNAVAILABLE",), Duration(25), Duration(250),
                                         Duration(1000), BudgetSettings(0.2, 10), MethodSet())
    assert orders.outlier == OutlierSettings(5, Duration(10_000), Duration(30_000), 50,
                                             SuccessRateSettings(1.9, 5, 100))
    assert orders.hedge is None
    hedge = parse_text(service("hedge: {delay: p95, max_attempts: 2, methods: idempotent}")
                       ).services[0].hedge
    assert hedge == HedgeSettings(None, 95, 2, MethodSet())


def test_defaults_are_filled_in() -> None:
    orders = parse_text(service("retry: {}\noutlier: {}")).services[0]
    assert orders.retry == RetrySettings()
    assert orders.retry.budget == BudgetSettings(0.2, 10)
    assert orders.retry.backoff_base == Duration(25) and orders.retry.backoff_max == Duration(250)
    assert orders.outlier == OutlierSettings()
    assert orders.outlier.success_rate is None
    # backoff: max defaults to 10 x base; base to at most max
    retry = parse_text(service("retry: {backoff: {base: 100ms}}")).services[0].retry
    assert retry is not None and retry.backoff_max == Duration(1000)
    retry = parse_text(service("retry: {backoff: {max: 10ms}}")).services[0].retry
    assert retry is not None and retry.backoff_base == Duration(10)
    rate = parse_text(service("outlier: {success_rate: {}}")).services[0].outlier
    assert rate is not None and rate.success_rate == SuccessRateSettings(1.9, 5, 100)


def test_canonical_form_round_trips() -> None:
    text = ISSUE.replace("methods: idempotent", "methods: [/a.B/D]")
    config = parse_text(service(text + "hedge: {delay: 20ms, methods: [/a.B/C]}"))
    data = config.to_dict()["services"]["orders"]
    assert data["retry"] == {"attempts": 3, "codes": ["UNAVAILABLE"],
                             "backoff": {"base": "25ms", "max": "250ms"},
                             "per_try_timeout": "1s",
                             "budget": {"ratio": 0.2, "min_per_second": 10},
                             "methods": ["/a.B/D"]}
    assert data["hedge"] == {"delay": "20ms", "max_attempts": 2, "methods": ["/a.B/C"]}
    assert data["outlier"]["success_rate"] == {"stdev_factor": 1.9, "min_hosts": 5,
                                               "min_requests": 100}
    again = check_data(config.to_dict()).unwrap()
    assert again == config and again.digest() == config.digest()
    # the defaults written out or left out: the same content
    assert parse_text(service("retry: {}")).digest() == parse_text(service(
        "retry: {attempts: 2, codes: [UNAVAILABLE], backoff: {base: 25ms, max: 250ms}, "
        "budget: {ratio: 0.2, min_per_second: 10}, methods: idempotent}")).digest()
    assert parse_text(service("hedge: {delay: p99.9}")).to_dict()["services"]["orders"][
        "hedge"]["delay"] == "p99.9"


def test_summary_names_policies_only_when_present() -> None:
    assert parse_text(service(ISSUE)).summary().endswith(
        "0 rate limits, 1 retry policy, 1 outlier detector")
    assert parse_text(service("timeout: 1s")).summary().endswith("0 rate limits")


def test_method_sets() -> None:
    idem, every = MethodSet(), MethodSet("all")
    listed = MethodSet("list", (MethodPattern("a.B", "C"), MethodPattern("a.D")))
    assert idem.covers("/a.B/C", True) and not idem.covers("/a.B/C", False)
    assert every.covers("/x.Y/Z", False)
    assert listed.covers("/a.B/C", False) and listed.covers("/a.D/Any", False)
    assert not listed.covers("/a.B/E", True)  # a list replaces what the protos say


P = "f:4: services.orders"


@pytest.mark.parametrize(("body", "expected"), [
    ("retry: {on: [UNAVAILABLE]}",
     (f"{P}.retry.on: a bare 'on' key is read by YAML 1.1 as the boolean true; the retried "
     "status codes are given as codes: [UNAVAILABLE]")),
    ("retry: {attempts: 6}", f"{P}.retry.attempts: attempts must be a whole number from 1 to 5"),
    ("retry: {attempts: 2.5}", f"{P}.retry.attempts: attempts must be a whole number from 1 "),
    ("retry: {codes: []}", f"{P}.retry.codes: is empty: give at least one status name"),
    ("retry: {codes: UNAVAILABLE}", f"{P}.retry.codes: expected a list of gRPC status names"),
    ("retry: {codes: [unavailable]}",
     f"{P}.retry.codes[0]: 'unavailable' is not a gRPC status name (write UNAVAILABLE)"),
    ("retry: {codes: [14]}", (f"{P}.retry.codes[0]: '14' is not a gRPC status name (write "
                             "UNAVAILABLE for 14)")),
    ("retry: {codes: [UNAVAILABLE, UNAVAILABLE]}", (f"{P}.retry.codes[1]: UNAVAILABLE is listed "
                                                   "twice")),
    ("retry: {backoff: {base: 1s, max: 100ms}}",
     f"{P}.retry.backoff.max: max 100ms is shorter than base 1s: expected base <= max"),
    ("retry: {backoff: {base: 25}}", f"{P}.retry.backoff.base: base '25' is not a duration"),
    ("retry: {backoff: {min: 1s}}", f"{P}.retry.backoff: unknown key 'min'"),
    ("retry: {per_try_timeout: 0ms}", (f"{P}.retry.per_try_timeout: per_try_timeout '0ms' is "
                                      "out of range")),
    ("retry: {budget: {ratio: 0}}", (f"{P}.retry.budget.ratio: ratio must be above 0 and at "
                                    "most 1 (retries per call), got 0")),
    ("retry: {budget: {ratio: 1.5}}", f"{P}.retry.budget.ratio: ratio must be above 0"),
    ("retry: {budget: {min_per_second: -1}}", (f"{P}.retry.budget.min_per_second: "
                                              "min_per_second must be at least 0, got -1")),
    ("retry: {methods: some}", (f"{P}.retry.methods: methods 'some' is unknown: expected "
                               "idempotent, all, or a list of method paths")),
    ("retry: {methods: []}", f"{P}.retry.methods: is empty: expected idempotent, all"),
    ("retry: {methods: [a.B/C]}", f"{P}.retry.methods[0]: method 'a.B/C' is not a method path"),
    ("retry: {methods: [/a.B/C, /a.B/C]}", f"{P}.retry.methods[1]: /a.B/C is listed twice"),
    ("hedge: {max_attempts: 2}", f"{P}.hedge: missing key 'delay'"),
    ("hedge: {delay: p49}", (f"{P}.hedge.delay: delay 'p49' is not a percentile from p50 to "
                            "p99.9 (such as p95 or p99.9) nor a duration such as 20ms")),
    ("hedge: {delay: p99.99}", f"{P}.hedge.delay: delay 'p99.99' is not a percentile"),
    ("hedge: {delay: 20}", f"{P}.hedge.delay: delay '20' is not a duration"),
    ("hedge: {delay: 5ms, max_attempts: 1}", (f"{P}.hedge.max_attempts: max_attempts must be a "
                                             "whole number from 2 to 5")),
    ("hedge: {delay: 5ms, max_attempts: 6}", f"{P}.hedge.max_attempts: max_attempts must be"),
    ("outlier: {consecutive_failures: 0}", (f"{P}.outlier.consecutive_failures: "
                                           "consecutive_failures must be a whole number of at "
                                           "least 1")),
    ("outlier: {interval: 0s}", f"{P}.outlier.interval: interval '0s' is out of range"),
    ("outlier: {base_ejection: soon}", (f"{P}.outlier.base_ejection: base_ejection 'soon' is "
                                       "not a duration")),
    ("outlier: {max_ejection_percent: 101}", (f"{P}.outlier.max_ejection_percent: "
                                             "max_ejection_percent must be from 0 to 100, got "
                                             "101")),
    ("outlier: {success_rate: {stdev_factor: 0}}", (f"{P}.outlier.success_rate.stdev_factor: "
                                                   "stdev_factor must be positive, got 0")),
    ("outlier: {success_rate: {min_hosts: 0}}", (f"{P}.outlier.success_rate.min_hosts: "
                                                "min_hosts must be a whole number of at least 1")),
    ("outlier: {success_rate: {min_requests: 0}}", (f"{P}.outlier.success_rate.min_requests: "
                                                   "min_requests must be a whole number")),
    ("outlier: {success_rate: 1.9}", f"{P}.outlier.success_rate: expected a map such as"),
    ("retry: 3", (f"{P}.retry: expected a map such as {{attempts: 3, codes: [UNAVAILABLE]}}, "
                 "got 3")),
])
def test_errors(body: str, expected: str) -> None:
    found = errors(service("timeout: 1s\n" + body))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


@pytest.mark.parametrize(("retry", "hedge"), [
    ("{}", "{delay: p95}"),
    ("{methods: all}", "{delay: 5ms, methods: [/a.B/C]}"),
    ("{methods: [/a.B/*]}", "{delay: 5ms, methods: [/a.B/C]}"),
    ("{methods: [/a.B/C]}", "{delay: 5ms, methods: [/a.B/C]}"),
])
def test_retry_and_hedge_may_not_cover_one_method(retry: str, hedge: str) -> None:
    found = errors(service(f"retry: {retry}\nhedge: {hedge}"))
    assert len(found) == 1 and found[0].startswith("f:4: services.orders.hedge: retry and "
                                                   "hedge: "), found
    assert "not both (gRFC A6)" in found[0]


def test_retry_and_hedge_on_different_methods() -> None:
    orders = parse_text(service("retry: {methods: [/a.B/C, /a.D/*]}\n"
                                "hedge: {delay: 5ms, methods: [/a.B/E, /x.Y/*]}")).services[0]
    assert orders.retry is not None and orders.hedge is not None


def test_method_lists_follow_external_services() -> None:
    text = (service("retry: {methods: [/w.W/Get]}") +
            "external:\n  w:\n    addresses: [a:1]\n    proto_services: [w.W]\n")
    assert errors(text) == [("f:3: services.orders.retry.methods[0]: calls to w.W go to external "
                            "service w, so this never applies to them")]


def test_every_resilience_key_is_applied_so_none_warns() -> None:
    from .support import warnings
    found = warnings(service(ISSUE + "hedge: {delay: p95, methods: [/shop.v1.Orders/Get]}\n").replace(
        "methods: idempotent", "methods: [/shop.v1.Orders/Create]"))
    assert found == []
