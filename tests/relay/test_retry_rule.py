"""services.NAME.retry in the relay: an attempt that fails before it commits is sent again
(gRFC A6's commit point). Fake transports, two endpoints, no sockets."""
from __future__ import annotations

import asyncio

import grpc
import hpack
import pytest

from grpcmesh.config import parse_text
from grpcmesh.registry.model import Idempotency, Method
from grpcmesh.relay import frames as f
from tests.relay.test_relay import OK, RESPONSE, client_status, message
from tests.relay.test_replay import TwoEndpoints, kinds

UNAVAILABLE = [("grpc-status", "14"), ("grpc-message", "try another")]


def mesh_with(retry: str, idempotent: bool = False) -> TwoEndpoints:
    mesh = TwoEndpoints()
    mesh.relay.set_config(parse_text(f"services:\n  svc:\n    retry: {retry}\n", "mesh.yaml"))
    level = Idempotency.NO_SIDE_EFFECTS if idempotent else Idempotency.UNKNOWN
    mesh.relay.methods = lambda path: Method(path, idempotency=level)
    return mesh


RETRY_ALL = "{attempts: 3, methods: all, backoff: {base: 1ms, max: 1ms}}"


def answer(mesh: TwoEndpoints, up: object, *frames: bytes) -> None:
    up.data_received(b"".join(frames))  # type: ignore[attr-defined]


def headers(encoder: hpack.Encoder, sid: int, fields: list[tuple[str, str]],
            end: bool = False) -> bytes:
    flags = f.END_HEADERS | (f.END_STREAM if end else 0)
    return f.frame(f.HEADERS, flags, sid, encoder.encode(fields))


@pytest.mark.asyncio
async def test_headers_then_an_error_with_no_message_is_sent_to_the_other_endpoint() -> None:
    mesh = mesh_with(RETRY_ALL)
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, second_t = mesh.first()
    enc = hpack.Encoder()
    answer(mesh, first, headers(enc, 1, RESPONSE), headers(enc, 1, UNAVAILABLE, end=True))
    assert mesh.down_t.frames() == []  # the client saw nothing of the failed attempt
    await asyncio.sleep(0.02)
    sent = second_t.frames()
    assert kinds(sent) == [f.HEADERS, f.DATA]
    assert dict(hpack.Decoder().decode(sent[0][3]))["grpc-previous-rpc-attempts"] == "1"
    assert sent[1][3] == message(b"hi")
    enc2 = hpack.Encoder()
    answer(mesh, second, headers(enc2, 1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"yo")),
           headers(enc2, 1, OK, end=True))
    got = mesh.down_t.frames()
    assert kinds(got) == [f.HEADERS, f.DATA, f.HEADERS]
    assert client_status(got) == grpc.StatusCode.OK
    assert [(r.code, r.attempts) for r in mesh.records] == [(grpc.StatusCode.OK, 2)]
    assert mesh.relay.retries == {(mesh.records[0].service, "UNAVAILABLE"): 1}  # (/metrics)
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_response_message_commits_the_call() -> None:
    mesh = mesh_with(RETRY_ALL)
    mesh.request(body=message(b"hi"), end=True)
    first, _, _, second_t = mesh.first()
    enc = hpack.Encoder()
    answer(mesh, first, headers(enc, 1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"half")),
           headers(enc, 1, UNAVAILABLE, end=True))
    await asyncio.sleep(0.02)
    assert second_t.frames() == []
    got = mesh.down_t.frames()
    assert kinds(got) == [f.HEADERS, f.DATA, f.HEADERS]
    assert client_status(got) == grpc.StatusCode.UNAVAILABLE
    mesh.assert_clean()


@pytest.mark.parametrize(("retry", "idempotent", "retried"), [
    ("{attempts: 3, backoff: {base: 1ms, max: 1ms}}", False, False),  # methods: idempotent
    ("{attempts: 3, backoff: {base: 1ms, max: 1ms}}", True, True),
    ("{attempts: 3, methods: [/pkg.S/Other], backoff: {base: 1ms, max: 1ms}}", True, False),
    ("{attempts: 3, methods: all, codes: [INTERNAL], backoff: {base: 1ms, max: 1ms}}", True,
     False),
])
@pytest.mark.asyncio
async def test_only_what_the_rule_covers_is_sent_again(retry: str, idempotent: bool,
                                                       retried: bool) -> None:
    mesh = mesh_with(retry, idempotent)
    mesh.request(body=message(b"hi"), end=True)
    first, _, _, second_t = mesh.first()
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))  # trailers-only
    await asyncio.sleep(0.02)
    assert (kinds(second_t.frames()) == [f.HEADERS, f.DATA]) is retried
    if not retried:
        got = mesh.down_t.frames()
        assert client_status(got) == grpc.StatusCode.UNAVAILABLE
        assert dict(hpack.Decoder().decode(got[-1][3]))["grpc-message"] == "try another"
        mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_negative_pushback_is_not_retried_and_attempts_are_capped() -> None:
    mesh = mesh_with(RETRY_ALL)
    mesh.request(body=message(b"hi"), end=True)
    first, _, _, second_t = mesh.first()
    answer(mesh, first, headers(hpack.Encoder(), 1,
                                [*UNAVAILABLE, ("grpc-retry-pushback-ms", "-1")], end=True))
    await asyncio.sleep(0.02)
    assert second_t.frames() == []
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.UNAVAILABLE

    mesh = mesh_with("{attempts: 2, methods: all, backoff: {base: 1ms, max: 1ms}}")
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, _ = mesh.first()
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    await asyncio.sleep(0.02)
    answer(mesh, second, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    await asyncio.sleep(0.02)
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.UNAVAILABLE
    assert [(r.code, r.attempts) for r in mesh.records] == [(grpc.StatusCode.UNAVAILABLE, 2)]
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_call_whose_request_is_still_open_commits_at_its_response_headers() -> None:
    mesh = mesh_with(RETRY_ALL)
    mesh.request(body=message(b"hi"))  # the client has not half-closed
    first, _, _, second_t = mesh.first()
    enc = hpack.Encoder()
    answer(mesh, first, headers(enc, 1, RESPONSE))
    assert kinds(mesh.down_t.frames()) == [f.HEADERS]  # passed at once: committed
    answer(mesh, first, headers(enc, 1, UNAVAILABLE, end=True))
    await asyncio.sleep(0.02)
    assert second_t.frames() == []
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.UNAVAILABLE


PER_TRY = "{attempts: 3, methods: all, per_try_timeout: 5ms, backoff: {base: 1ms, max: 1ms}}"


def rst_codes(frames: list[tuple[int, int, int, bytes]]) -> list[int]:
    return [int.from_bytes(p, "big") for k, _, _, p in frames if k == f.RST_STREAM]


@pytest.mark.asyncio
async def test_an_attempt_with_no_response_within_per_try_timeout_is_sent_again() -> None:
    mesh = mesh_with(PER_TRY.replace("attempts: 3", "attempts: 2"))
    mesh.request(body=message(b"hi"), end=True)
    _, first_t, _, second_t = mesh.first()
    first_t.frames()
    await asyncio.sleep(0.05)  # (codes: [UNAVAILABLE]; a per-try timeout is retried anyway)
    assert rst_codes(first_t.frames()) == [f.CANCEL]  # its server sees the cancellation
    sent = second_t.frames()
    assert kinds(sent) == [f.HEADERS, f.DATA, f.RST_STREAM]  # sent again, and cut again
    assert dict(hpack.Decoder().decode(sent[0][3]))["grpc-previous-rpc-attempts"] == "1"
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [(r.code, r.attempts, r.reason, r.retry_stop) for r in mesh.records] == [
        (grpc.StatusCode.DEADLINE_EXCEEDED, 2, "per_try_timeout", "attempts_exhausted")]
    assert mesh.relay.retries == {(mesh.records[0].service, "per_try_timeout"): 1}
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_committed_attempt_is_not_cut_by_per_try_timeout() -> None:
    mesh = mesh_with(PER_TRY)
    mesh.request(body=message(b"hi"), end=True)
    first, first_t, _, second_t = mesh.first()
    enc = hpack.Encoder()
    answer(mesh, first, headers(enc, 1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"yo")))
    await asyncio.sleep(0.03)
    assert rst_codes(first_t.frames()) == []
    assert second_t.frames() == []
    answer(mesh, first, headers(enc, 1, OK, end=True))
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_per_try_timeout_not_retried_ends_the_call_with_deadline_exceeded() -> None:
    mesh = mesh_with(PER_TRY.replace("attempts: 3", "attempts: 1"))
    mesh.request(body=message(b"hi"), end=True)
    _, first_t, _, second_t = mesh.first()
    first_t.frames()
    await asyncio.sleep(0.03)
    assert second_t.frames() == []
    got = mesh.down_t.frames()
    assert client_status(got) == grpc.StatusCode.DEADLINE_EXCEEDED
    message_ = dict(hpack.Decoder().decode(got[-1][3]))["grpc-message"]
    assert "retry.per_try_timeout (0.005s)" in message_ and "attempts_exhausted" in message_
    assert [(r.reason, r.retry_stop) for r in mesh.records] == [
        ("per_try_timeout", "attempts_exhausted")]
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_the_end_record_says_the_budget_stopped_a_retry() -> None:
    mesh = mesh_with("{attempts: 3, methods: all, backoff: {base: 1ms, max: 1ms}, "
                     "budget: {ratio: 0.01, min_per_second: 0.01}}")  # 0.1 retries: none
    mesh.request(body=message(b"hi"), end=True)
    first, _, _, second_t = mesh.first()
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    await asyncio.sleep(0.02)
    assert second_t.frames() == []
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.UNAVAILABLE
    assert [(r.code, r.by, r.retry_stop) for r in mesh.records] == [
        (grpc.StatusCode.UNAVAILABLE, "app", "budget_exhausted")]
    assert mesh.relay.kept.describe("svc")["retry_budget"]["exhausted"] == 1
