"""When an attempt commits (gRFC A6, as issue 11 words it): the relay's rule, as the pure
functions it calls (relay/call.py, relay/request_side.py). Once a call has committed to an
attempt it is never sent again.

An attempt commits when:
- anything of its response reaches the client: a response message, trailers that are passed
  on, or response headers that are passed on; or
- the request held for another attempt grows past its limit (64 KiB per call, 64 MiB for all
  calls of a listener, RelayLimits): it could not be sent again whole.

Response headers are held (`holds_headers`) when the call has a retry rule for its method and
its request is complete (unary and server-streaming calls, once the client has sent
everything), until the first response message (which commits) or the trailers (which the rule
may retry). So an attempt that sends headers and then error trailers without a message can
still be retried (Envoy and Linkerd retry only on a status in headers). When the request
stream is still open, headers go on at once and commit the call: a client may wait for them
before it sends more.
"""
from __future__ import annotations


def holds_headers(retrying: bool, request_complete: bool) -> bool:
    """Whether response headers of an attempt that has not committed wait for its first
    message or its trailers (else they are passed on, and commit it)."""
    return retrying and request_complete


def past_limit(held: int, held_by_all: int, limit: int, limit_for_all: int) -> bool:
    """Whether a call holding `held` request bytes (all calls: `held_by_all`) commits."""
    return held > limit or held_by_all > limit_for_all
