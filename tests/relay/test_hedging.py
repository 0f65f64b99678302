"""services.NAME.hedge in the relay: after the delay with no response another attempt goes to
the other endpoint; the first response wins and the other attempt is cancelled. Fake
transports, two endpoints, no sockets (the hedge timer is the loop's, the clock a fake one)."""
from __future__ import annotations

import asyncio

import grpc
import hpack
import pytest

from grpcmesh.config import parse_text
from grpcmesh.registry.model import Idempotency, Method
from grpcmesh.relay import frames as f
from tests.relay.test_relay import OK, REQUEST, RESPONSE, client_status, message
from tests.relay.test_replay import TwoEndpoints, kinds
from tests.relay.test_retry_rule import UNAVAILABLE, answer, headers

HEDGE = "{delay: 5ms, methods: all}"


def mesh_with(hedge: str = HEDGE, idempotent: bool = False, extra: str = "") -> TwoEndpoints:
    mesh = TwoEndpoints()
    mesh.relay.set_config(parse_text(f"services:\n  svc:\n    hedge: {hedge}\n{extra}",
                                     "mesh.yaml"))
    level = Idempotency.NO_SIDE_EFFECTS if idempotent else Idempotency.UNKNOWN
    mesh.relay.methods = lambda path: Method(path, idempotency=level)
    return mesh


async def hedge_due(mesh: TwoEndpoints) -> None:
    """The delay passes (the fake clock, then the loop's timer)."""
    mesh.clock.advance(0.01)
    await asyncio.sleep(0.03)


def resets(frames: list[tuple[int, int, int, bytes]]) -> list[int]:
    return [int.from_bytes(p, "big") for k, _, _, p in frames if k == f.RST_STREAM]


def success(mesh: TwoEndpoints, up: object, enc: hpack.Encoder) -> None:
    answer(mesh, up, headers(enc, 1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"yo")),
           headers(enc, 1, OK, end=True))


@pytest.mark.asyncio
async def test_the_hedge_answers_first_and_the_first_attempt_is_cancelled() -> None:
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True,
                 headers=[*REQUEST, ("grpc-timeout", "5S")])
    _, first_t, second, second_t = mesh.first()
    assert kinds(first_t.frames()) == [f.HEADERS, f.DATA]
    assert second_t.frames() == []
    await hedge_due(mesh)
    sent = second_t.frames()
    assert kinds(sent) == [f.HEADERS, f.DATA]
    fields = dict(hpack.Decoder().decode(sent[0][3]))
    assert fields["grpc-previous-rpc-attempts"] == "1"
    assert f.parse_timeout(fields["grpc-timeout"]) == pytest.approx(4.99, abs=0.01)
    assert sent[1][3] == message(b"hi")
    success(mesh, second, hpack.Encoder())
    assert resets(first_t.frames()) == [f.CANCEL]  # its server sees the cancellation
    got = mesh.down_t.frames()
    assert kinds(got) == [f.HEADERS, f.DATA, f.HEADERS]
    assert client_status(got) == grpc.StatusCode.OK
    assert [(r.code, r.attempts, r.endpoint) for r in mesh.records] == [
        (grpc.StatusCode.OK, 2, second.address)]
    assert mesh.relay.hedges == {mesh.records[0].service: 1}  # (for /metrics)
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_the_first_attempt_answering_after_the_hedge_went_wins() -> None:
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True)
    first, first_t, _, second_t = mesh.first()
    first_t.frames()
    await hedge_due(mesh)
    assert kinds(second_t.frames()) == [f.HEADERS, f.DATA]
    success(mesh, first, hpack.Encoder())
    assert resets(second_t.frames()) == [f.CANCEL]
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    assert [r.endpoint for r in mesh.records] == [first.address]
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_an_answer_within_the_delay_sends_no_hedge() -> None:
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True)
    first, _, _, second_t = mesh.first()
    success(mesh, first, hpack.Encoder())
    await hedge_due(mesh)
    assert second_t.frames() == []
    assert [r.attempts for r in mesh.records] == [1]
    assert mesh.relay.hedges == {}
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_hedge_that_fails_unavailable_drops_out_and_the_other_still_wins() -> None:
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, second_t = mesh.first()
    await hedge_due(mesh)
    second_t.frames()
    answer(mesh, second, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    assert mesh.down_t.frames() == []  # the client saw nothing of it
    assert mesh.relay.in_flight == 1
    success(mesh, first, hpack.Encoder())
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    assert [(r.code, r.endpoint) for r in mesh.records] == [(grpc.StatusCode.OK, first.address)]
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_when_every_attempt_fails_the_client_gets_the_last_ones_status() -> None:
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, _ = mesh.first()
    await hedge_due(mesh)
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    assert mesh.down_t.frames() == []
    answer(mesh, second, headers(hpack.Encoder(), 1,
                                 [("grpc-status", "14"), ("grpc-message", "second too")],
                                 end=True))
    got = mesh.down_t.frames()
    assert client_status(got) == grpc.StatusCode.UNAVAILABLE
    assert dict(hpack.Decoder().decode(got[-1][3]))["grpc-message"] == "second too"
    assert [(r.code, r.attempts) for r in mesh.records] == [(grpc.StatusCode.UNAVAILABLE, 2)]
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_a_fatal_status_wins_the_race() -> None:
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True)
    _, first_t, second, _ = mesh.first()
    await hedge_due(mesh)
    first_t.frames()
    answer(mesh, second, headers(hpack.Encoder(), 1, [("grpc-status", "5")], end=True))
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.NOT_FOUND
    assert resets(first_t.frames()) == [f.CANCEL]
    mesh.assert_clean()


@pytest.mark.parametrize("how", ["client_reset", "deadline"])
@pytest.mark.asyncio
async def test_a_call_over_while_racing_cancels_every_attempt(how: str) -> None:
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True, headers=[*REQUEST, ("grpc-timeout", "50m")])
    _, first_t, _, second_t = mesh.first()
    await hedge_due(mesh)
    first_t.frames()
    second_t.frames()
    if how == "client_reset":
        mesh.down.data_received(f.rst_stream(1, f.CANCEL))
    else:
        mesh.clock.advance(0.05)
        await asyncio.sleep(0.06)
        assert client_status(mesh.down_t.frames()) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert resets(first_t.frames()) == [f.CANCEL]
    assert resets(second_t.frames()) == [f.CANCEL]
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())
    mesh.assert_clean()


@pytest.mark.parametrize(("hedge", "idempotent", "body_ends", "hedged"), [
    ("{delay: 5ms}", False, True, False),  # methods: idempotent, and it is not
    ("{delay: 5ms}", True, True, True),
    ("{delay: 5ms, methods: [/pkg.S/Other]}", True, True, False),
    (HEDGE, True, False, False),  # the client is still sending: not hedged
])
@pytest.mark.asyncio
async def test_only_what_the_rule_covers_is_hedged(hedge: str, idempotent: bool,
                                                   body_ends: bool, hedged: bool) -> None:
    mesh = mesh_with(hedge, idempotent)
    mesh.request(body=message(b"hi"), end=body_ends)
    _, _, _, second_t = mesh.first()
    await hedge_due(mesh)
    assert bool(second_t.frames()) is hedged


@pytest.mark.asyncio
async def test_hedges_draw_from_the_retry_budget() -> None:
    # min_per_second 0.1 over 10 s allows one hedge; ratio 0.01 adds nothing for 2 calls
    mesh = mesh_with("{delay: 5ms, methods: [/pkg.S/M]}",
                     extra="    retry: {methods: [/pkg.S/Other], "
                           "budget: {ratio: 0.01, min_per_second: 0.1}}\n")
    mesh.request(sid=1, body=message(b"a"), end=True)
    mesh.request(sid=3, body=message(b"b"), end=True)
    await hedge_due(mesh)
    sent = mesh.up_t.frames() + mesh.other_t.frames()
    hedges = [frame for frame in sent if frame[0] == f.HEADERS and
              "grpc-previous-rpc-attempts" in dict(hpack.Decoder().decode(frame[3]))]
    assert len(hedges) == 1


@pytest.mark.asyncio
async def test_the_percentile_delay_waits_for_enough_calls() -> None:
    mesh = mesh_with("{delay: p50, methods: all}")
    for sid in range(1, 200, 2):  # 100 calls, each 2 ms
        mesh.request(sid=sid, body=message(b"hi"), end=True)
        up = mesh.up if mesh.up.streams else mesh.other
        upstream_sid = next(iter(up.streams))
        mesh.clock.advance(0.002)
        enc = hpack.Encoder()
        up.data_received(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, upstream_sid,
                                 enc.encode([(":status", "200"),
                                             ("content-type", "application/grpc"),
                                             ("grpc-status", "0")])))
        assert not mesh.relay.in_flight
    mesh.up_t.frames()
    mesh.other_t.frames()
    window = mesh.relay.kept.windows["svc"]
    assert window.percentile(50, mesh.clock.now()) == pytest.approx(0.002)
    mesh.request(sid=201, body=message(b"hi"), end=True)
    await hedge_due(mesh)  # the delay is refreshed once a second: none yet
    assert [k for k, *_ in mesh.up_t.frames() + mesh.other_t.frames()].count(f.HEADERS) == 1
    mesh.down.data_received(f.rst_stream(201, f.CANCEL))
    mesh.up_t.frames()
    mesh.other_t.frames()
    mesh.clock.advance(1.0)
    mesh.request(sid=203, body=message(b"hi"), end=True)
    await hedge_due(mesh)  # 10 ms > p50: a hedge went
    sent = [k for k, *_ in mesh.up_t.frames() + mesh.other_t.frames()]
    assert sent.count(f.HEADERS) == 2
