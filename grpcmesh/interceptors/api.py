"""What an interceptor sees of a call, and what it may do. Pure: no sockets, no asyncio.

An interceptor sees the call's method, request metadata, deadline, caller and target service
(CallView); in `request` it may answer the call itself (return Answer), make it wait (return
Delay), or let it go on (return None), after adding, changing or removing request metadata or
changing the deadline. It may observe the response headers, the trailers and the call's end
record. It never sees message bytes: the relay forwards those untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from grpcmesh.config.schema import Route, Subset
from grpcmesh.relay.headers import replaced
from grpcmesh.relay.record import CallRecord

if TYPE_CHECKING:
    from grpcmesh.resilience.budget import RetryBudget
    from grpcmesh.resilience.latency import HedgeTimer
    from grpcmesh.resilience.retry import CallRetries, RetryPolicy

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Answer:
    """The interceptor answers the call: the client gets this status, the app nothing."""

    code: grpc.StatusCode
    message: str


@dataclass(frozen=True, slots=True)
class Delay:
    """The call waits this many seconds, then goes on to the next interceptor."""

    seconds: float


class CallView:
    """One call as interceptors see it, before it goes upstream."""

    __slots__ = ("_metadata", "caller", "changed", "direction", "hedge", "method", "retry",
                 "route", "service", "subset", "timeout")

    def __init__(self, method: str, metadata: Headers, timeout: float | None, caller: str,
                 service: str, direction: str) -> None:
        self.method = method  # "/pkg.Service/Method"
        self.caller = caller  # the client's address, "host:port"
        self.service = service  # the target it is routed to (a mesh or proto service)
        self.direction = direction  # "outbound" (the app's calls) or "inbound" (calls to it)
        self.timeout = timeout  # seconds left until its deadline, None for none; may be set
        # Request headers, pseudo-headers (":path", ...) included. Not copied: they may be a
        # cached block's; the first change copies them (copy on write).
        self._metadata = metadata
        self.changed = False  # metadata was changed: the header block is encoded again
        # The mesh config's route that matched it and the subset it goes to (route/split)
        self.route: Route | None = None
        self.subset: Subset | None = None
        # The retry rule's (policy, the call's count, whether the method is idempotent)
        self.retry: tuple[RetryPolicy, CallRetries, bool] | None = None
        # The hedge rule's (timing, budget), for a method it covers
        self.hedge: tuple[HedgeTimer, RetryBudget] | None = None

    def header(self, name: str) -> str | None:
        """The value of request metadata name (lowercase), or None."""
        for key, value in self._metadata:
            if key == name:
                return value
        return None

    def get(self, name: str, default: str | None = None) -> str | None:
        """As header(): so that a rule's Match reads metadata without building a dict."""
        value = self.header(name)
        return default if value is None else value

    def headers(self) -> list[tuple[str, str]]:
        """All request headers as the relay will send them (for the relay)."""
        return self._metadata

    def metadata(self) -> list[tuple[str, str]]:
        """Request metadata, without pseudo-headers (a copy)."""
        return [(k, v) for k, v in self._metadata if k[0] != ":"]

    def set_header(self, name: str, value: str) -> None:
        """Add request metadata name, or replace its values."""
        self._check(name)
        self._metadata = replaced(self._metadata, name, value)
        self.changed = True

    def remove_header(self, name: str) -> None:
        self._check(name)
        kept = replaced(self._metadata, name, None)
        if len(kept) != len(self._metadata):
            self._metadata = kept
            self.changed = True

    @staticmethod
    def _check(name: str) -> None:
        if not name or name != name.lower() or name[0] == ":" or name in _RESERVED:
            raise ValueError(f"interceptors may not set {name!r}: metadata names are "
                             "lowercase, and pseudo-headers and "
                             f"{', '.join(sorted(_RESERVED))} belong to the relay")


# Headers whose meaning the relay keeps (set the deadline through CallView.timeout).
_RESERVED = frozenset({"content-type", "te", "grpc-timeout"})


class Interceptor:
    """Base class: every hook does nothing. Override the ones you need; say in
    `wants_responses` whether response_headers and trailers should be called (they cost a
    header decode per call, so the relay skips them for chains that do not want them)."""

    name = ""  # shown in answers and logs; defaults to the class name
    wants_responses = False

    def request(self, call: CallView) -> Answer | Delay | None:
        return None

    def response_headers(self, call: CallView, headers: Headers) -> None:
        pass

    def trailers(self, call: CallView, trailers: Headers) -> None:
        pass

    def end(self, call: CallView, record: CallRecord) -> None:
        pass
