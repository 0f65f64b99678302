"""What a call through the relay came to: its attempts, the status its client saw, and the one
CallRecord that observers of calls (the balancer, interceptors, telemetry) read. Pure."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from grpcmesh.balance.endpoint import CallHandle, Endpoint
from grpcmesh.relay import frames as f
from grpcmesh.relay.peer import Headers, Leg
from grpcmesh.relay.settings import PUSHBACK

_SC = grpc.StatusCode
CODES = {code.value[0]: code for code in grpc.StatusCode}
# gRPC's mapping for a response without grpc-status (PROTOCOL-HTTP2.md, "HTTP to gRPC Status").
HTTP_STATUS = {"400": _SC.INTERNAL, "401": _SC.UNAUTHENTICATED, "403": _SC.PERMISSION_DENIED,
                "404": _SC.UNIMPLEMENTED, "429": _SC.UNAVAILABLE, "502": _SC.UNAVAILABLE,
                "503": _SC.UNAVAILABLE, "504": _SC.UNAVAILABLE}
# What a gRPC client reads from an RST_STREAM code.
RESET_STATUS = {f.REFUSED_STREAM: _SC.UNAVAILABLE, f.CANCEL: _SC.CANCELLED}
APP, PROXY, CLIENT = "app", "proxy", "client"  # who ended a call


def status_of(headers: Headers) -> tuple[grpc.StatusCode, int | None]:
    """The status a trailer block carries, and its grpc-retry-pushback-ms if any."""
    code: grpc.StatusCode | None = None
    http = "200"
    pushback = None
    for key, value in headers:
        if key == "grpc-status":
            code = CODES.get(int(value) if value.isdigit() else -1, _SC.UNKNOWN)
        elif key == ":status":
            http = value
        elif key == PUSHBACK:
            pushback = int(value) if value.isdigit() else None
    if code is None:
        code = HTTP_STATUS.get(http, _SC.UNKNOWN) if http != "200" else _SC.UNKNOWN
    return code, pushback


class Attempt:
    """One try of a call on one endpoint: its stream there and its balancer handle."""

    __slots__ = ("endpoint", "first_byte", "handle", "leg", "started")

    def __init__(self, endpoint: Endpoint, leg: Leg, handle: CallHandle, started: float) -> None:
        self.endpoint = endpoint
        self.leg = leg
        self.handle = handle
        self.started = started
        self.first_byte: float | None = None  # when its first response DATA arrived


@dataclass(slots=True)
class CallRecord:
    """How a call ended: what every observer of calls (the balancer, interceptors) reads.
    Observers must not change it (it is not frozen: a frozen dataclass costs a setattr call
    per field, and one is made per call)."""

    method: str
    caller: str  # the client's address
    service: str  # the mesh service it was routed to; "" if none
    endpoint: str  # the address of the last attempt's endpoint; "" if it reached none
    code: grpc.StatusCode  # what the client saw
    by: str  # APP (its trailers or reset), PROXY (the relay answered) or CLIENT (it left)
    reason: str  # the proxy's reason (no_route, deadline, too_large, ...); "" otherwise
    started: float
    duration: float
    first_byte: float | None  # seconds from start to the first response DATA
    request_bytes: int
    response_bytes: int
    attempts: int
    # Why the retry rule did not send it again after its last failed attempt (a Reason of
    # resilience/retry.py: budget_exhausted, attempts_exhausted, ...); "" if it was not asked.
    retry_stop: str = ""
    # The request headers as the call was sent upstream (pseudo-headers included; [] if it
    # was answered before it was routed). Not a copy: observers must not change them.
    request_headers: Headers = field(default_factory=list)



Observer = Callable[[CallRecord], None]
