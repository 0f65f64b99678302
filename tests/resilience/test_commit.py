"""The commit rule (gRFC A6): when response headers wait, and when a held request commits."""
from __future__ import annotations

from grpcmesh.resilience.commit import holds_headers, past_limit


def test_headers_wait_only_with_a_retry_rule_and_a_complete_request() -> None:
    assert holds_headers(retrying=True, request_complete=True)  # unary, server streaming
    assert not holds_headers(retrying=True, request_complete=False)  # a client still sending
    assert not holds_headers(retrying=False, request_complete=True)  # nothing to retry


def test_a_request_commits_past_either_limit_and_not_at_it() -> None:
    kib64, mib64 = 64 * 1024, 64 * 1024 * 1024
    assert not past_limit(kib64, kib64, kib64, mib64)
    assert past_limit(kib64 + 1, kib64 + 1, kib64, mib64)
    assert past_limit(10, mib64 + 1, kib64, mib64)  # all calls together
