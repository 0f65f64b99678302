"""CommitRule: when a call commits to its attempt, driven by events."""
from __future__ import annotations

import pytest

from grpcmesh.resilience import Action, CommitRule


def test_unary_headers_are_held_until_a_message() -> None:
    rule = CommitRule()
    assert rule.on_buffered(100) is Action.NOTHING
    assert rule.on_request_complete() is Action.NOTHING
    assert rule.on_response_headers() is Action.HOLD and rule.held_headers
    assert rule.on_response_message() is Action.COMMIT  # held headers, then the message
    assert rule.committed and not rule.held_headers
    assert rule.on_response_message() is Action.FORWARD
    assert rule.on_trailers() is Action.FORWARD


def test_headers_then_error_trailers_can_still_be_retried() -> None:
    rule = CommitRule()
    rule.on_request_complete()
    assert rule.on_response_headers() is Action.HOLD
    assert rule.on_trailers() is Action.DECIDE  # no message reached the client
    rule.retry()  # the held headers are dropped; a new attempt starts
    assert not rule.held_headers and not rule.committed
    assert rule.on_trailers() is Action.DECIDE  # a Trailers-Only answer this time
    assert rule.commit() is Action.COMMIT  # the policy said no: pass it on
    with pytest.raises(RuntimeError):
        rule.retry()


def test_an_open_request_passes_headers_at_once() -> None:
    rule = CommitRule()
    rule.on_buffered(10)
    assert rule.on_response_headers() is Action.COMMIT  # the client may wait for them
    assert rule.on_trailers() is Action.FORWARD


def test_a_server_stream_retries_before_its_first_message_only() -> None:
    rule = CommitRule()
    rule.on_request_complete()
    rule.on_response_headers()
    assert rule.on_trailers() is Action.DECIDE
    rule.retry()
    rule.on_response_headers()
    assert rule.on_response_message() is Action.COMMIT
    assert rule.on_trailers() is Action.FORWARD  # after a message: never retried


def test_a_request_past_the_limit_commits() -> None:
    rule = CommitRule(limit=1000)
    assert rule.on_buffered(1000) is Action.NOTHING  # at the limit: still held
    assert rule.on_buffered(1) is Action.COMMIT
    assert rule.on_buffered(5000) is Action.NOTHING  # no longer buffered, no second commit
    rule.on_request_complete()
    assert rule.on_response_headers() is Action.FORWARD
