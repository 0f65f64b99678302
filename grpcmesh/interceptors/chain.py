"""The interceptor chain: every per-call rule of the data path, in the one order they run.

A call meets them top-down, outermost first; the first to answer ends it, and the rest never
see it:

    1. the user's interceptors (--interceptor), in the order given
    2. rate limit        (inbound; the mesh config's services.NAME.rate_limit)
    3. fault injection   (services.NAME.faults: a delay part, then an abort part)
    4. route / split     (services.NAME.routes and subsets)
    5. timeout           (services.NAME.timeout, max_timeout)
    6. retry             (services.NAME.retry: gives the call its policy, which the relay
                          asks when an attempt fails before it commits: relay/retrying.py)
    7. hedge             (services.NAME.hedge: gives the call its hedge timing; the relay
                          sends the hedges: relay/hedging.py)
    -> balance (the service's picker), then a stream on the endpoint's connection

The rules (2-7) are made from the mesh config by rules.py.

The relay builds a chain once per target and config version, not per call (Relay.chain_for),
and a target whose chain is empty takes the relay's fast path with no interceptor cost at all.
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

import grpc

from grpcmesh.interceptors.api import Answer, CallView, Delay, Headers, Interceptor
from grpcmesh.relay.record import CallRecord

log = logging.getLogger(__name__)


class Chain:
    __slots__ = ("_through", "interceptors", "names", "wants_end", "wants_responses")

    def __init__(self, interceptors: Sequence[Interceptor]) -> None:
        self.interceptors = tuple(interceptors)
        self.names = tuple(i.name or type(i).__name__ for i in self.interceptors)
        self._through: tuple[None, int] = (None, len(self.interceptors))  # all let it go on
        self.wants_responses = any(i.wants_responses for i in self.interceptors)
        # A record per call only for chains with an interceptor that reads it
        self.wants_end = any(type(i).end is not Interceptor.end for i in self.interceptors)

    def __bool__(self) -> bool:
        return bool(self.interceptors)

    def request(self, call: CallView, start: int = 0) -> tuple[Answer | Delay | None, int]:
        """Run the request hooks from interceptor `start` on: (what stopped the call, and the
        index of the interceptor that said it), or (None, len) once all let it go on. An
        interceptor that raises answers its call with INTERNAL; the relay goes on."""
        interceptors = self.interceptors
        index = start
        try:  # (one try and no range(): this runs per call)
            for interceptor in interceptors if start == 0 else interceptors[start:]:
                outcome = interceptor.request(call)
                if outcome is not None:
                    break
                index += 1
            else:
                return self._through
        except Exception as err:
            log.exception("interceptor %s failed on %s", self.names[index], call.method)
            return Answer(grpc.StatusCode.INTERNAL, f"interceptor {self.names[index]} failed "
                          f"on {call.method}: {type(err).__name__}"), index
        if not isinstance(outcome, Answer | Delay):
            log.error("interceptor %s returned %r", self.names[index], outcome)
            outcome = Answer(grpc.StatusCode.INTERNAL, f"interceptor {self.names[index]} "
                             "returned neither Answer nor Delay")
        return outcome, index

    def response_headers(self, call: CallView, headers: Headers) -> None:
        self._observe("response_headers", call, headers)

    def trailers(self, call: CallView, trailers: Headers) -> None:
        self._observe("trailers", call, trailers)

    def end(self, call: CallView, record: CallRecord) -> None:
        self._observe("end", call, record)

    def _observe(self, hook: str, call: CallView, what: Headers | CallRecord) -> None:
        """Call hook on every interceptor; one that raises is logged, and the rest go on."""
        for name, interceptor in zip(self.names, self.interceptors, strict=True):
            try:
                getattr(interceptor, hook)(call, what)
            except Exception:
                log.exception("interceptor %s failed in %s on %s", name, hook, call.method)


def load(spec: str) -> Interceptor:
    """An interceptor from `module:factory` (factory() returns it); ValueError saying what is
    wrong with spec."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--interceptor {spec!r}: expected MODULE:FACTORY, such as "
                         "grpcmesh.example.apikey:factory")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 (anything the user's module raises on import)
        raise ValueError(f"--interceptor {spec}: cannot import {module_name}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(  # noqa: TRY004 (a usage error, reported as one)
            f"--interceptor {spec}: {module_name} has no callable {attr}")
    try:
        interceptor = factory()
    except Exception as err:  # noqa: BLE001 (anything the user's factory raises)
        raise ValueError(f"--interceptor {spec}: {attr}() failed: {err!r}") from None
    if not isinstance(interceptor, Interceptor):
        raise ValueError(  # noqa: TRY004
            f"--interceptor {spec}: {attr}() returned {type(interceptor).__name__}, not a "
            "grpcmesh.interceptors.Interceptor")
    return interceptor
