"""When a call commits to one attempt (gRFC A6, as issue 11 words it), as a state machine
the relay drives with the events it sees and whose answers say what to do.

An attempt commits, and the call can no longer be tried again, when:
- anything of its response reaches the client: a response message, trailers that are passed
  on, or response headers that are passed on; or
- the buffered request grows past `limit` bytes (64 KiB by default): it could not be sent
  again whole.

Response headers are held, when the request is complete (unary and server-streaming calls
once the client has sent everything), until the first response message or the trailers.
So an attempt that sends headers and then error trailers without a message can still be
retried (Envoy and Linkerd retry only on a status in headers). When the request stream is
still open, headers go on at once and commit the call: a client may wait for them before it
sends more.

Trailers on an uncommitted attempt answer DECIDE: the relay asks the RetryPolicy; for a retry
it drops the held headers and calls `retry()`, otherwise it calls `commit()` and forwards the
held headers (if any) and the trailers.

For hedging, give each attempt its own CommitRule fed the same request events: the first
attempt whose answer is COMMIT wins, and the others are cancelled.
"""
from __future__ import annotations

from enum import Enum

LIMIT = 64 * 1024  # bytes of request held for another attempt (Linkerd's limit)


class Action(Enum):
    NOTHING = "nothing"  # nothing to pass on yet
    HOLD = "hold"  # keep the response headers; do not pass them on yet
    COMMIT = "commit"  # commit now: pass on any held headers, then this event; no retry now
    FORWARD = "forward"  # already committed: pass this event on
    DECIDE = "decide"  # the attempt ended uncommitted: ask the RetryPolicy


class CommitRule:
    __slots__ = ("buffered", "committed", "held_headers", "limit", "request_complete")

    def __init__(self, limit: int = LIMIT) -> None:
        if limit < 0:
            raise ValueError(f"limit {limit} must not be negative")
        self.limit = limit
        self.request_complete = False
        self.buffered = 0  # request bytes held for another attempt
        self.committed = False
        self.held_headers = False

    # -- the request (the client's side) -------------------------------------------------------

    def on_buffered(self, size: int) -> Action:
        """size more request bytes were buffered. Past the limit the call commits (the relay
        stops buffering and frees what it held)."""
        self.buffered += size
        if not self.committed and self.buffered > self.limit:
            return self._commit()
        return Action.NOTHING

    def on_request_complete(self) -> Action:
        self.request_complete = True
        return Action.NOTHING

    # -- the response (the current attempt's) --------------------------------------------------

    def on_response_headers(self) -> Action:
        if self.committed:
            return Action.FORWARD
        if self.request_complete:
            self.held_headers = True
            return Action.HOLD
        return self._commit()

    def on_response_message(self) -> Action:
        return Action.FORWARD if self.committed else self._commit()

    def on_trailers(self) -> Action:
        """Trailers, or a Trailers-Only response."""
        return Action.FORWARD if self.committed else Action.DECIDE

    # -- the relay's answer to DECIDE ----------------------------------------------------------

    def retry(self) -> None:
        """Another attempt starts: the held headers are dropped."""
        if self.committed:
            raise RuntimeError("a committed call is not retried")
        self.held_headers = False

    def commit(self) -> Action:
        return self._commit()

    def _commit(self) -> Action:
        self.committed = True
        self.held_headers = False
        return Action.COMMIT
