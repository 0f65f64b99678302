"""The retry rule at its edges (from a review of its first version): what an app saw is never
refused to the client, held headers never outlive their attempt, and counts and deadlines
carry over to the next attempt."""
from __future__ import annotations

import asyncio

import grpc
import hpack
import pytest

from grpcmesh.relay import frames as f
from tests.relay.test_relay import OK, REQUEST, RESPONSE, client_status, message
from tests.relay.test_replay import THIRD, kinds
from tests.relay.test_retry_rule import RETRY_ALL, UNAVAILABLE, answer, headers, mesh_with


def blocks(frames):  # every header block the client got, decoded in order
    dec = hpack.Decoder()
    return [(fl & f.END_STREAM, dict(dec.decode(p))) for k, fl, _, p in frames if k == f.HEADERS]


@pytest.mark.asyncio
async def test_a_retry_whose_new_endpoint_refuses_its_connection_is_not_refused_stream() -> None:
    # Attempt 1 reached an app (UNAVAILABLE). The untried endpoint's connection is down:
    # _connect_then_start(tried=[e1]) ends in call.refuse() -> RST_STREAM(REFUSED_STREAM),
    # which says "not processed" (clients retry it transparently) though an app saw it,
    # and the tried endpoint e1, still up, is never used.
    mesh = mesh_with(RETRY_ALL)
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, _ = mesh.first()
    pool = mesh.relay.upstreams
    pool._current.pop(second.address)
    pool._failed[second.address] = (mesh.clock.now() + 100, 1.0, "refused")
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    await asyncio.sleep(0.05)
    got = mesh.down_t.frames()
    assert f.RST_STREAM not in kinds(got), "client told REFUSED_STREAM after an app saw it"


@pytest.mark.parametrize("refusal", ["refused_stream", "goaway"])
@pytest.mark.asyncio
async def test_held_headers_of_a_refused_attempt_are_dropped(refusal: str) -> None:
    # Headers held (request complete), then the attempt is refused: try_elsewhere sends it
    # elsewhere but keeps `waiting`; the next attempt's trailers-only answer then passes
    # attempt 1's headers first: the client gets two blocks, the second with :status.
    mesh = mesh_with(RETRY_ALL)
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, _ = mesh.first()
    answer(mesh, first, headers(hpack.Encoder(), 1, [*RESPONSE, ("x-attempt", "1")]))
    answer(mesh, first, f.rst_stream(1, f.REFUSED_STREAM) if refusal == "refused_stream"
           else f.goaway(0, f.NO_ERROR))
    await asyncio.sleep(0.02)
    answer(mesh, second, headers(hpack.Encoder(), 1, [*RESPONSE, *OK], end=True))
    got = blocks(mesh.down_t.frames())
    assert len(got) == 1, got
    assert "x-attempt" not in got[0][1]


@pytest.mark.asyncio
async def test_a_transparent_retry_of_a_retry_keeps_previous_attempts() -> None:
    mesh = mesh_with(RETRY_ALL)
    third, third_t = mesh.add_endpoint("e3", THIRD)
    mesh.request(body=message(b"hi"), end=True)
    ups = {mesh.up: mesh.up_t, mesh.other: mesh.other_t, third: third_t}
    a = next(u for u in ups if u.streams)
    answer(mesh, a, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    await asyncio.sleep(0.02)
    b = next(u for u in ups if u is not a and u.streams)
    assert dict(hpack.Decoder().decode(ups[b].frames()[0][3]))[
        "grpc-previous-rpc-attempts"] == "1"
    answer(mesh, b, f.rst_stream(1, f.REFUSED_STREAM))  # attempt 2 never reached its app
    await asyncio.sleep(0.02)
    c = next(u for u in ups if u not in (a, b))
    sent = ups[c].frames()
    assert dict(hpack.Decoder().decode(sent[0][3])).get("grpc-previous-rpc-attempts") == "1"


@pytest.mark.asyncio
async def test_streaming_request_retried_replays_sent_early_then_new_data() -> None:
    mesh = mesh_with(RETRY_ALL)
    mesh.request(body=message(b"a" * 10))  # still sending
    first, _, second, second_t = mesh.first()
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))  # trailers-only
    mesh.down.data_received(f.frame(f.DATA, 0, 1, message(b"b" * 10)))  # during the backoff
    await asyncio.sleep(0.02)
    mesh.down.data_received(f.frame(f.DATA, f.END_STREAM, 1, message(b"c" * 10)))
    sent = second_t.frames()
    assert [(k, fl & f.END_STREAM, p) for k, fl, _, p in sent if k == f.DATA] == [
        (f.DATA, 0, message(b"a" * 10)), (f.DATA, 0, message(b"b" * 10)),
        (f.DATA, f.END_STREAM, message(b"c" * 10))]
    enc = hpack.Encoder()
    answer(mesh, second, headers(enc, 1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"y")),
           headers(enc, 1, OK, end=True))
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    mesh.assert_clean()
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())


@pytest.mark.asyncio
async def test_client_reset_during_backoff_cancels_it() -> None:
    mesh = mesh_with("{attempts: 3, methods: all, backoff: {base: 50ms, max: 50ms}}")
    mesh.request(body=message(b"hi"), end=True)
    first, _, _second, second_t = mesh.first()
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    mesh.up_t.frames(), second_t.frames()
    mesh.down.data_received(f.rst_stream(1, f.CANCEL))
    await asyncio.sleep(0.1)
    assert second_t.frames() == [] and mesh.up_t.frames() == []
    assert [r.code for r in mesh.records] == [grpc.StatusCode.CANCELLED]
    mesh.assert_clean()
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())


@pytest.mark.asyncio
async def test_a_refused_last_attempt_after_an_app_saw_one_is_not_refused_to_the_client() -> None:
    # attempts: 2. Attempt 1 -> UNAVAILABLE from an app; attempt 2 -> REFUSED_STREAM: no
    # untried endpoint, try_again says attempts_exhausted, and the client's stream is reset
    # with REFUSED_STREAM ("not processed"): a gRPC client re-sends it transparently.
    mesh = mesh_with("{attempts: 2, methods: all, backoff: {base: 1ms, max: 1ms}}")
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, _ = mesh.first()
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    await asyncio.sleep(0.02)
    answer(mesh, second, f.rst_stream(1, f.REFUSED_STREAM))
    await asyncio.sleep(0.02)
    got = mesh.down_t.frames()
    assert f.RST_STREAM not in kinds(got), "client told REFUSED_STREAM after an app saw it"


@pytest.mark.asyncio
async def test_the_retry_is_sent_what_is_left_of_the_deadline() -> None:
    mesh = mesh_with(RETRY_ALL)
    mesh.request(body=message(b"hi"), end=True, headers=[*REQUEST, ("grpc-timeout", "5S")])
    first, _, _, second_t = mesh.first()
    mesh.clock.advance(1.0)
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    await asyncio.sleep(0.02)
    sent = dict(hpack.Decoder().decode(second_t.frames()[0][3]))
    assert f.parse_timeout(sent["grpc-timeout"]) == pytest.approx(4.0, abs=0.01)


@pytest.mark.asyncio
async def test_a_request_with_no_body_holds_headers_too() -> None:
    # HEADERS with END_STREAM: end_headers, but req_end stays False, so the headers are not
    # held: headers then an error is not retried (docs: held "once the client sent everything").
    mesh = mesh_with(RETRY_ALL)
    mesh.down.data_received(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1,
                                    mesh.client.encode(REQUEST)))
    first, _, _, _second_t = mesh.first()
    enc = hpack.Encoder()
    answer(mesh, first, headers(enc, 1, RESPONSE), headers(enc, 1, UNAVAILABLE, end=True))
    await asyncio.sleep(0.02)
    assert mesh.down_t.frames() == []
