"""What DNS said about each configured HOST:PORT of the external services. Pure: the resolver
(resolver.py) asks getaddrinfo and reports here; time is passed in.

As Envoy's STRICT_DNS clusters: every configured address is resolved, and re-resolved every
REFRESH seconds; all of its answers become endpoints. A failed resolution keeps the last good
answer (DNS being down must not take a working service away) and is retried sooner, after
RETRY_FIRST seconds doubling up to REFRESH. At most MAX_ANSWERS addresses are kept per configured
address, so a hostile or broken DNS cannot make the sidecar's endpoints (and their memory) grow;
the lowest ones in sort order, so that a server rotating its answers does not churn them. IPv4
answers are preferred when there are any (Envoy's V4_PREFERRED): a host that also has an IPv6
address the sidecar cannot route to does not cost failed connects. An IP literal needs no DNS.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

REFRESH = 30.0  # seconds between resolutions of an address that answered
RETRY_FIRST = 1.0  # seconds before a failed resolution is tried again, doubling up to REFRESH
MAX_ANSWERS = 16  # resolved addresses kept per configured address


def split(address: str) -> tuple[str, int]:
    """'api.example:443' -> ('api.example', 443); '[::1]:80' -> ('::1', 80)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def join(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def literal(address: str) -> str | None:
    """The address itself if its host is an IP (nothing to resolve), else None."""
    host, port = split(address)
    try:
        return join(str(ipaddress.ip_address(host)), port)
    except ValueError:
        return None


def answers_of(infos: Iterable[tuple[Any, ...]], port: int) -> tuple[str, ...]:
    """getaddrinfo's results as IP:PORT endpoints: IPv4 if any, else IPv6; at most
    MAX_ANSWERS, the lowest in sort order."""
    v4: set[str] = set()
    v6: set[str] = set()
    for family, _, _, _, sockaddr in infos:
        if family == socket.AF_INET:
            v4.add(str(sockaddr[0]))
        elif family == socket.AF_INET6 and not sockaddr[3]:  # link-local (scoped): skip
            v6.add(str(sockaddr[0]))
    ips = sorted(v4 or v6, key=lambda ip: ipaddress.ip_address(ip))[:MAX_ANSWERS]
    return tuple(join(ip, port) for ip in ips)


@dataclass
class Resolution:
    """One configured address: its last good answer and the last failure since."""

    address: str
    answers: tuple[str, ...] = ()  # the last good answer; () until one came
    error: str | None = None  # why the last resolution failed (None: it did not)
    due: float = 0.0  # when to resolve it next
    retry: float = 0.0  # the wait after the last failure (0: the last one answered)
    busy: bool = False  # a resolution is under way
    fixed: bool = False  # an IP literal: never resolved


class Resolutions:
    """Every configured address of the external services in force."""

    def __init__(self) -> None:
        self.known: dict[str, Resolution] = {}

    def want(self, addresses: Iterable[str], now: float) -> None:
        """The configured addresses are now these: new ones are due at once (IP literals are
        resolved here), ones no longer configured are forgotten, the others keep their state."""
        wanted = dict.fromkeys(addresses)
        for address in [a for a in self.known if a not in wanted]:
            del self.known[address]
        for address in wanted:
            if address not in self.known:
                ip = literal(address)
                self.known[address] = (Resolution(address, (ip,), fixed=True) if ip is not None
                                       else Resolution(address, due=now))

    def due(self, now: float) -> list[str]:
        """The addresses to resolve now, marked as under way."""
        out = []
        for res in self.known.values():
            if not res.fixed and not res.busy and res.due <= now:
                res.busy = True
                out.append(res.address)
        return out

    def next_due(self) -> float | None:
        """When an address is next due (None: none is waiting)."""
        return min((r.due for r in self.known.values() if not r.fixed and not r.busy),
                   default=None)

    def answered(self, address: str, answers: Sequence[str], now: float) -> bool:
        """A resolution answered (answers as answers_of gives them); whether they changed."""
        res = self.known.get(address)
        if res is None:  # no longer configured
            return False
        if not answers:  # an empty answer is a failure: keep what worked
            return self.failed(address, "no address in the answer", now)
        res.busy, res.error, res.retry, res.due = False, None, 0.0, now + REFRESH
        changed = tuple(answers) != res.answers
        res.answers = tuple(answers)
        return changed

    def failed(self, address: str, reason: str, now: float) -> bool:
        """A resolution failed: the last good answer stays; retried sooner. Returns False (the
        answers did not change), for symmetry with answered."""
        res = self.known.get(address)
        if res is None:
            return False
        res.busy, res.error = False, reason
        res.retry = min(REFRESH, res.retry * 2 if res.retry else RETRY_FIRST)
        res.due = now + res.retry
        return False

    def answers(self, address: str) -> tuple[str, ...]:
        res = self.known.get(address)
        return res.answers if res is not None else ()

    def why_none(self, address: str, service: str) -> str:
        """Why address (of external service `service`) has no endpoint: no answer yet."""
        res = self.known.get(address)
        if res is None or res.error is None:
            return f"resolving {address} for external service {service}: no answer yet"
        return f"cannot resolve {address} for external service {service}: {res.error}"
