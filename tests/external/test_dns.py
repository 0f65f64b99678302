"""What DNS said about external addresses (dns.py): the cap, keeping the last good answer,
when to ask again. Pure: a fake clock's numbers, no sockets, no sleeps."""
from __future__ import annotations

import socket

from grpcmesh.external.dns import (
    MAX_ANSWERS,
    REFRESH,
    RETRY_FIRST,
    Resolutions,
    answers_of,
    literal,
)

T0 = 1000.0


def v4(*ips: str) -> list[tuple[object, ...]]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 443)) for ip in ips]


def v6(*ips: str) -> list[tuple[object, ...]]:
    return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, 443, 0, 0)) for ip in ips]


def test_answers_are_capped_sorted_deduplicated_and_prefer_ipv4() -> None:
    hostile = v4(*(f"10.0.{n // 256}.{n % 256}" for n in range(5000, 0, -1)))
    answers = answers_of(hostile + v4("10.0.0.1"), 443)
    assert len(answers) == MAX_ANSWERS == 16
    assert answers[:3] == ("10.0.0.1:443", "10.0.0.2:443", "10.0.0.3:443")
    assert answers_of(v6("::1") + v4("127.0.0.1"), 443) == ("127.0.0.1:443",)
    assert answers_of(v6("2001:db8::2", "2001:db8::1"), 443) == ("[2001:db8::1]:443",
                                                                 "[2001:db8::2]:443")
    assert answers_of(v4("10.0.0.9", "10.0.0.10"), 443) == ("10.0.0.9:443", "10.0.0.10:443")


def test_ip_literals_need_no_dns() -> None:
    assert literal("10.0.0.7:9000") == "10.0.0.7:9000"
    assert literal("[::1]:80") == "[::1]:80"
    assert literal("api.example:443") is None
    res = Resolutions()
    res.want(["10.0.0.7:9000", "api.example:443"], T0)
    assert res.answers("10.0.0.7:9000") == ("10.0.0.7:9000",)
    assert res.due(T0) == ["api.example:443"]  # the literal is never due
    assert res.due(T0) == []  # under way: not asked twice
    assert res.next_due() is None


def test_refresh_after_an_answer_and_changes() -> None:
    res = Resolutions()
    res.want(["api.example:443"], T0)
    assert res.due(T0) == ["api.example:443"]
    assert res.answered("api.example:443", ["10.0.0.1:443"], T0) is True
    assert res.next_due() == T0 + REFRESH
    assert res.due(T0 + REFRESH - 1) == []
    assert res.due(T0 + REFRESH) == ["api.example:443"]
    assert res.answered("api.example:443", ["10.0.0.1:443"], T0 + REFRESH) is False  # same
    res.due(T0 + 2 * REFRESH)
    assert res.answered("api.example:443", ["10.0.0.2:443"], T0 + 2 * REFRESH) is True


def test_a_failure_keeps_the_last_good_answer_and_retries_sooner() -> None:
    res = Resolutions()
    res.want(["api.example:443"], T0)
    res.due(T0)
    assert res.why_none("api.example:443", "weather") == (
        "resolving api.example:443 for external service weather: no answer yet")
    res.failed("api.example:443", "[Errno -2] Name or service not known", T0)
    assert res.why_none("api.example:443", "weather") == (
        "cannot resolve api.example:443 for external service weather: [Errno -2] Name or "
        "service not known")
    retries = [res.known["api.example:443"].retry]
    for _ in range(6):
        now = res.next_due() or 0.0
        assert res.due(now) == ["api.example:443"]
        res.failed("api.example:443", "down", now)
        retries.append(res.known["api.example:443"].retry)
    assert retries == [RETRY_FIRST, 2, 4, 8, 16, REFRESH, REFRESH]
    res.due(res.next_due() or 0.0)
    res.answered("api.example:443", ["10.0.0.1:443"], now)
    res.due(now + REFRESH)
    res.failed("api.example:443", "down", now + REFRESH)
    assert res.answers("api.example:443") == ("10.0.0.1:443",)  # kept
    assert res.known["api.example:443"].retry == RETRY_FIRST  # the backoff started again
    res.due(now + REFRESH + RETRY_FIRST)
    assert res.answered("api.example:443", [], now) is False  # an empty answer: a failure
    assert res.answers("api.example:443") == ("10.0.0.1:443",)


def test_addresses_no_longer_configured_are_forgotten() -> None:
    res = Resolutions()
    res.want(["a.example:1", "b.example:1"], T0)
    for address in res.due(T0):
        res.answered(address, ["10.0.0.1:1"], T0)
    res.want(["b.example:1", "c.example:1"], T0 + 1)
    assert sorted(res.known) == ["b.example:1", "c.example:1"]
    assert res.answers("b.example:1") == ("10.0.0.1:1",)  # kept its answer
    assert res.due(T0 + 1) == ["c.example:1"]
    assert res.answered("a.example:1", ["10.0.0.9:1"], T0 + 1) is False  # late: ignored
