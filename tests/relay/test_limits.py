"""The relay's limits as plain objects: frame guards, the rapid-reset rule and the request
checks (the header-block cache's bounds are in test_headers.py). No sockets, no event loop,
time passed in."""
from __future__ import annotations

import dataclasses

import grpc
import pytest

from grpcmesh.cli import RELAY_LIMIT_FLAGS
from grpcmesh.relay.limits import Abuse, FrameGuard, RelayLimits, ResetGuard, clip
from grpcmesh.relay.request import Refused, read_request

REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/pkg.S/M"),
           (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")]


def test_empty_frames_are_allowed_up_to_the_limit_in_a_row() -> None:
    guard = FrameGuard(RelayLimits(max_empty_frames=3), now=0.0)
    for _ in range(3):
        guard.payload(True)
    guard.payload(False)  # a frame with a payload starts the count again
    for _ in range(3):
        guard.payload(True)
    with pytest.raises(Abuse, match="more than 3 empty frames"):
        guard.payload(True)


def test_continuation_frames_are_counted_per_header_block() -> None:
    guard = FrameGuard(RelayLimits(max_continuation_frames=2), now=0.0)
    guard.headers()
    guard.continuation()
    guard.continuation()
    guard.headers()  # a new block
    guard.continuation()
    guard.continuation()
    with pytest.raises(Abuse, match="more than 2 CONTINUATION"):
        guard.continuation()


def test_control_frames_may_burst_then_are_refilled_at_their_rate() -> None:
    guard = FrameGuard(RelayLimits(control_frames_burst=5, control_frames_per_second=10),
                       now=0.0)
    for _ in range(5):
        guard.control(0.0)
    with pytest.raises(Abuse, match="control frames above 10/s"):
        guard.control(0.0)
    guard = FrameGuard(RelayLimits(control_frames_burst=5, control_frames_per_second=10),
                       now=0.0)
    for _ in range(5):
        guard.control(0.0)
    guard.control(0.1)  # 0.1 s at 10/s: one more
    with pytest.raises(Abuse):
        guard.control(0.1)
    for _ in range(5):
        guard.control(100.0)  # refilled, but never beyond the burst
    with pytest.raises(Abuse):
        guard.control(100.0)


def test_rapid_reset_closes_once_enough_streams_were_opened_and_half_reset_early() -> None:
    guard = ResetGuard(RelayLimits(reset_min_streams=20, reset_ratio=0.5,
                                   reset_min_lifetime=1.0))
    for _ in range(19):
        guard.open()
        guard.reset(0.001)  # every one reset early, but too few streams to judge
    guard.open()
    with pytest.raises(Abuse, match="rapid reset: 20 of 20 streams"):
        guard.reset(0.001)


def test_resets_of_streams_that_lived_long_or_of_a_few_streams_are_fine() -> None:
    guard = ResetGuard(RelayLimits(reset_min_streams=20))
    for n in range(100):
        guard.open()
        guard.reset(1.5)  # cancelled after living a while: a client changing its mind
        if n % 3 == 0:
            guard.open()  # and calls that finished normally
    assert guard.premature == 0
    guard = ResetGuard(RelayLimits(reset_min_streams=20))
    for n in range(100):
        guard.open()
        if n % 3 == 0:
            guard.reset(0.0)  # a third reset early: under half, never closed
    assert guard.premature == 34


def test_limits_out_of_range_are_named_by_their_flag() -> None:
    with pytest.raises(ValueError, match="--max-path-bytes 3 is out of range: expected 16-"):
        RelayLimits(max_path_bytes=3)
    with pytest.raises(ValueError, match="--idle-timeout 0.0 must be positive"):
        RelayLimits(idle_timeout=0.0)
    RelayLimits()
    assert [f.name for f in dataclasses.fields(RelayLimits)] == [
        name for name, _ in RELAY_LIMIT_FLAGS]  # each has a sidecar flag


def test_a_request_is_read_and_its_fields_returned() -> None:
    request = read_request([*REQUEST, ("grpc-timeout", "5S"), ("grpcmesh-service", "orders")],
                           16_384, 2048)
    assert (request.path, request.timeout, request.override) == ("/pkg.S/M", "5S", "orders")


def test_pseudo_headers_count_toward_the_metadata_limit() -> None:
    size = sum(len(k) + len(v) + 32 for k, v in REQUEST)
    read_request(REQUEST, size, 2048)
    with pytest.raises(Refused) as err:
        read_request(REQUEST, size - 1, 2048)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"is {size} bytes; the proxy's limit is {size - 1}" in err.value.message


def test_a_long_path_is_refused_and_the_message_repeats_only_its_start() -> None:
    path = "/" + "a" * 200_000
    headers = [(k, path if k == ":path" else v) for k, v in REQUEST]
    with pytest.raises(Refused) as err:
        read_request(headers, 1 << 20, 2048)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "request :path of 200001 bytes" in err.value.message
    assert len(err.value.message) < 300


@pytest.mark.parametrize("content_type", ["application/json", None, "text/grpc"])
def test_a_request_that_is_not_grpc_gets_http_415(content_type: str | None) -> None:
    headers = [(k, v) for k, v in REQUEST if k != "content-type"]
    if content_type is not None:
        headers.append(("content-type", content_type))
    with pytest.raises(Refused) as err:
        read_request(headers, 16_384, 2048)
    assert err.value.http == 415
    assert "relays gRPC only" in err.value.message


def test_grpc_content_types_with_a_suffix_are_grpc() -> None:
    for content_type in ("application/grpc", "application/grpc+proto", "application/grpc+json"):
        headers = [(k, content_type if k == "content-type" else v) for k, v in REQUEST]
        read_request(headers, 16_384, 2048)


def test_clip_marks_what_it_cut() -> None:
    assert clip("short") == "short"
    assert clip("x" * 500, 10) == "xxxxxxxxxx... (500 characters)"
