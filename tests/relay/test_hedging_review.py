"""Review of the hedge rule in the relay (hedging.py): orderings that the first tests did not
cover. Fake transports, two or three endpoints, no sockets."""
from __future__ import annotations

import asyncio
import random

import grpc
import hpack
import pytest

from grpcmesh.interceptors.rules import Hedge
from grpcmesh.relay import frames as f
from grpcmesh.relay.peer import CONN_WINDOW
from grpcmesh.relay.upstreams import Upstream
from tests.relay.fakes import FakeTransport
from tests.relay.test_hedging import hedge_due, mesh_with, resets, success
from tests.relay.test_relay import OK, REQUEST, RESPONSE, client_status, message
from tests.relay.test_replay import THIRD, TwoEndpoints, kinds
from tests.relay.test_retry_rule import UNAVAILABLE, answer, headers

THREE = "{delay: 5ms, max_attempts: 3, methods: all}"


def three(hedge: str = THREE, extra: str = "") -> tuple[TwoEndpoints, dict[Upstream,
                                                                          FakeTransport]]:
    mesh = mesh_with(hedge, extra=extra)
    third, third_t = mesh.add_endpoint("e3", THIRD)
    return mesh, {mesh.up: mesh.up_t, mesh.other: mesh.other_t, third: third_t}


def busy(ups: dict[Upstream, FakeTransport], but: tuple[Upstream, ...] = ()) -> Upstream:
    """The one endpoint, not among but, that has a stream of the call."""
    found = [up for up in ups if up.streams and up not in but]
    assert len(found) == 1, found
    return found[0]


def clean(mesh: TwoEndpoints, ups: dict[Upstream, FakeTransport]) -> None:
    mesh.assert_clean()
    assert all(not up.streams for up in ups)
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())


def hedge_rule(mesh: TwoEndpoints) -> Hedge:
    chain = mesh.relay.chain_for(mesh.target)
    assert chain is not None
    return next(i for i in chain.interceptors if isinstance(i, Hedge))


# -- pushback ---------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_a_negative_pushback_from_a_hedged_attempt_ends_hedging() -> None:
    """gRFC A6 (and docs/resilience.md): a pushback that says "do not retry" on a hedged
    attempt means no further hedges for the call."""
    mesh, ups = three()
    mesh.request(body=message(b"hi"), end=True)
    a = busy(ups)
    await hedge_due(mesh)
    b = busy(ups, (a,))
    for t in ups.values():
        t.frames()
    answer(mesh, b, headers(hpack.Encoder(), 1,
                            [*UNAVAILABLE, ("grpc-retry-pushback-ms", "-1")], end=True))
    await hedge_due(mesh)  # the third attempt would be due now
    c = next(up for up in ups if up not in (a, b))
    assert ups[c].frames() == [], "a hedge went after the server asked for none"
    success(mesh, a, hpack.Encoder())
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    clean(mesh, ups)


@pytest.mark.asyncio
async def test_a_pushback_on_the_last_attempt_delays_the_next_hedge() -> None:
    """gRFC A6: "Pushback: retry in n ms -> hedging policy: send next hedged request in n ms".
    The last attempt failing with a pushback must not send the next hedge at once."""
    mesh, ups = three()
    mesh.request(body=message(b"hi"), end=True)
    a = busy(ups)
    await hedge_due(mesh)
    b = busy(ups, (a,))
    for t in ups.values():
        t.frames()
    answer(mesh, a, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))  # drops out
    answer(mesh, b, headers(hpack.Encoder(), 1,
                            [*UNAVAILABLE, ("grpc-retry-pushback-ms", "30")], end=True))
    c = next(up for up in ups if up not in (a, b))
    assert ups[c].frames() == [], "the next hedge went at once, despite the pushback"
    assert mesh.down_t.frames() == [] and mesh.relay.in_flight == 1
    mesh.clock.advance(0.03)
    await asyncio.sleep(0.06)
    assert kinds(ups[c].frames()) == [f.HEADERS, f.DATA]  # ... and in 30 ms it goes
    success(mesh, c, hpack.Encoder())
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    assert [(r.code, r.attempts) for r in mesh.records] == [(grpc.StatusCode.OK, 3)]
    clean(mesh, ups)


@pytest.mark.asyncio
async def test_a_pushback_on_the_last_attempt_with_no_hedge_left_answers_the_client() -> None:
    """(The pushback's wait with nothing in flight must still end: no hedge can go to a
    fourth endpoint, so the client gets the last failure once the wait is over.)"""
    mesh, ups = three("{delay: 5ms, max_attempts: 3, methods: all}")
    mesh.request(body=message(b"hi"), end=True)
    a = busy(ups)
    await hedge_due(mesh)
    b = busy(ups, (a,))
    c = next(up for up in ups if up not in (a, b))
    mesh.relay.upstreams._current.pop(c.address)  # c's connection is not up
    mesh.relay.upstreams._failed[c.address] = (mesh.clock.now() + 10, 2.0, "refused")
    answer(mesh, a, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    answer(mesh, b, headers(hpack.Encoder(), 1,
                            [*UNAVAILABLE, ("grpc-retry-pushback-ms", "20")], end=True))
    mesh.clock.advance(0.02)
    await asyncio.sleep(0.05)
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.UNAVAILABLE
    assert [r.code for r in mesh.records] == [grpc.StatusCode.UNAVAILABLE]
    mesh.assert_clean()
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())
    c.close()
    await asyncio.sleep(0)


# -- the budget ------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_a_hedge_that_finds_no_endpoint_takes_no_token_from_the_budget() -> None:
    """Two endpoints, max_attempts 3: the third attempt has nowhere to go. It must not draw
    from the retry budget that the service's retries share (nor count as a hedge sent)."""
    mesh = mesh_with(THREE)
    budget = hedge_rule(mesh).budget
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, _ = mesh.first()
    await hedge_due(mesh)
    assert second.streams  # the first hedge went: one token
    await hedge_due(mesh)  # the second is due, and no endpoint is left
    await hedge_due(mesh)
    assert budget.totals()[1] == 1, "a hedge that was never sent took a budget token"
    success(mesh, first, hpack.Encoder())
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_hedges_that_find_no_endpoint_do_not_starve_the_services_retries() -> None:
    """The consequence: a call that has tried every endpoint drains the budget its service's
    retries share, and the retry rule's methods are then refused their retries."""
    mesh = mesh_with("{delay: 5ms, max_attempts: 3, methods: [/pkg.S/M]}",
                     extra="    retry: {attempts: 2, methods: [/pkg.S/Other], "
                           "backoff: {base: 1ms, max: 1ms}, "
                           "budget: {ratio: 0.01, min_per_second: 0.2}}\n")  # 2 in 10 s
    mesh.request(sid=1, body=message(b"a"), end=True)
    first, _, _, _ = mesh.first()
    await hedge_due(mesh)  # the hedge: one token
    await hedge_due(mesh)  # a third attempt, due but with nowhere to go
    success(mesh, first, hpack.Encoder())
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    mesh.up_t.frames()
    mesh.other_t.frames()
    other = [(k, "/pkg.S/Other" if k == ":path" else v) for k, v in REQUEST]
    mesh.request(sid=3, body=message(b"b"), end=True, headers=other)
    up = mesh.up if mesh.up.streams else mesh.other
    sid = max(up.streams)
    up.data_received(headers(hpack.Encoder(), sid, UNAVAILABLE, end=True))
    await asyncio.sleep(0.02)
    assert mesh.down_t.frames() == [], "the retry was refused: its budget went to a hedge " \
        "that was never sent"


# -- what the client is told ----------------------------------------------------------------

@pytest.mark.parametrize("refusal", ["refused_stream", "goaway"])
@pytest.mark.asyncio
async def test_a_refusal_after_an_app_saw_the_call_is_not_refused_to_the_client(
        refusal: str) -> None:
    """The first attempt reached its app (it answered UNAVAILABLE) and dropped out; the hedge
    is then refused. REFUSED_STREAM to the client says no app processed the call (RFC 9113
    8.7), which its gRPC library takes as leave to send it again: the call must end with
    UNAVAILABLE instead, as Retrying.refuse does when an earlier attempt reached an app."""
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, _ = mesh.first()
    await hedge_due(mesh)
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    assert mesh.down_t.frames() == []
    second.data_received(f.rst_stream(1, f.REFUSED_STREAM) if refusal == "refused_stream"
                         else f.goaway(0, f.NO_ERROR))
    await asyncio.sleep(0)
    got = mesh.down_t.frames()
    assert resets(got) == [], "the client was told no app saw a call that one did"
    assert client_status(got) == grpc.StatusCode.UNAVAILABLE
    assert [r.code for r in mesh.records] == [grpc.StatusCode.UNAVAILABLE]
    assert mesh.relay.in_flight == 0 and mesh.relay.held == 0
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())


@pytest.mark.asyncio
async def test_a_refused_last_hedge_sent_elsewhere_counts_the_attempts_apps_saw() -> None:
    """The refused attempt goes to a third endpoint (a transparent retry): its
    grpc-previous-rpc-attempts counts the attempt that reached its app."""
    mesh, ups = three("{delay: 5ms, max_attempts: 2, methods: all}")
    mesh.request(body=message(b"hi"), end=True)
    a = busy(ups)
    await hedge_due(mesh)
    b = busy(ups, (a,))
    answer(mesh, a, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    b.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    await asyncio.sleep(0)
    c = busy(ups)
    sent = ups[c].frames()
    assert kinds(sent) == [f.HEADERS, f.DATA]
    assert dict(hpack.Decoder().decode(sent[0][3])).get("grpc-previous-rpc-attempts") == "1"
    success(mesh, c, hpack.Encoder())
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    clean(mesh, ups)


# -- the one attempt before the first hedge ------------------------------------------------

@pytest.mark.parametrize("how", ["unavailable", "reset", "lost"])
@pytest.mark.asyncio
async def test_the_first_attempt_failing_before_the_delay_sends_the_hedge_at_once(
        how: str) -> None:
    """gRFC A6: a non-fatal failure sends the next hedge at once, "shortcutting its hedging
    delay"; the docstring's "the last one failing sends the next hedge at once if one is
    left". The first attempt is the last one running: a fast UNAVAILABLE (a reset, a lost
    connection) must not reach the client when the same failure after the delay would not."""
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True)
    first, first_t, second, second_t = mesh.first()
    if how == "unavailable":
        answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    elif how == "reset":
        first.data_received(f.rst_stream(1, f.INTERNAL_ERROR))
    else:
        first_t.close()
        await asyncio.sleep(0)
    assert mesh.down_t.frames() == [], "the first attempt's failure went to the client"
    sent = second_t.frames()
    assert kinds(sent) == [f.HEADERS, f.DATA]
    assert dict(hpack.Decoder().decode(sent[0][3]))["grpc-previous-rpc-attempts"] == "1"
    success(mesh, second, hpack.Encoder())
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    assert [(r.code, r.attempts, r.endpoint) for r in mesh.records] == [
        (grpc.StatusCode.OK, 2, second.address)]
    assert mesh.relay.in_flight == 0 and mesh.relay.held == 0
    assert not second.streams
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())


@pytest.mark.asyncio
async def test_a_first_attempt_failing_while_its_client_still_sends_is_not_hedged() -> None:
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=False)
    first, _, _, second_t = mesh.first()
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.UNAVAILABLE
    assert second_t.frames() == []
    assert [(r.code, r.attempts) for r in mesh.records] == [(grpc.StatusCode.UNAVAILABLE, 1)]


@pytest.mark.asyncio
async def test_a_hedge_due_while_a_refused_attempt_is_sent_elsewhere_goes_once_it_lands(
        ) -> None:
    """The timer fires between two attempts (the first refused unseen, the transparent retry
    on its way): the hedge waits for the retry, rather than hedging ending for the call."""
    mesh, ups = three()
    mesh.request(body=message(b"hi"), end=True)
    a = busy(ups)
    call = mesh.down.streams[1].call
    a.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    assert call.up is None  # the retry is on its way (a task) ...
    mesh.clock.advance(0.006)
    assert call.race is not None
    call.race.fire()  # ... when the hedge's timer fires
    await asyncio.sleep(0)  # it lands on b, and the hedge, due, goes to c
    b, c = (up for up in ups if up is not a)
    assert b.streams and c.streams, "hedging ended for the call"
    success(mesh, c, hpack.Encoder())
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    assert resets(ups[b].frames()) == [f.CANCEL]
    assert [r.attempts for r in mesh.records] == [3]
    clean(mesh, ups)


# -- orderings that hold (kept as regression tests) -----------------------------------------

@pytest.mark.asyncio
async def test_a_refusal_before_the_hedge_fires_then_the_hedge_goes_to_a_third_endpoint(
        ) -> None:
    mesh, ups = three()
    mesh.request(body=message(b"hi"), end=True)
    a = busy(ups)
    a.data_received(f.rst_stream(1, f.REFUSED_STREAM))
    await asyncio.sleep(0)  # the transparent retry lands on b
    b = busy(ups)
    await hedge_due(mesh)
    c = busy(ups, (b,))
    sent = ups[c].frames()
    assert kinds(sent) == [f.HEADERS, f.DATA]
    success(mesh, c, hpack.Encoder())
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    assert resets(ups[b].frames()) == [f.CANCEL]
    assert [(r.code, r.attempts, r.endpoint) for r in mesh.records] == [
        (grpc.StatusCode.OK, 3, c.address)]
    clean(mesh, ups)


@pytest.mark.asyncio
async def test_the_connection_of_the_current_attempt_lost_while_racing() -> None:
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True)
    _, first_t, second, _ = mesh.first()
    await hedge_due(mesh)
    first_t.close()  # (connection_lost, soon)
    await asyncio.sleep(0)
    assert mesh.down_t.frames() == []
    assert mesh.relay.in_flight == 1
    success(mesh, second, hpack.Encoder())
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    assert not second.streams and mesh.relay.in_flight == 0 and mesh.relay.held == 0
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())


@pytest.mark.asyncio
async def test_every_attempt_lost_answers_the_client_once() -> None:
    mesh = mesh_with()
    mesh.request(body=message(b"hi"), end=True)
    _, first_t, _, second_t = mesh.first()
    await hedge_due(mesh)
    first_t.close()
    second_t.close()
    await asyncio.sleep(0)
    got = mesh.down_t.frames()
    assert client_status(got) == grpc.StatusCode.UNAVAILABLE
    assert len(mesh.records) == 1
    assert mesh.relay.in_flight == 0 and mesh.relay.held == 0
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())


@pytest.mark.asyncio
async def test_a_hedge_whose_window_is_exhausted_loses_and_credits_nothing_twice() -> None:
    mesh = mesh_with()
    mesh.other.data_received(f.settings_frame([(f.INITIAL_WINDOW_SIZE, 3)]))
    mesh.up.data_received(f.settings_frame([(f.INITIAL_WINDOW_SIZE, 3)]))
    mesh.up_t.frames()
    mesh.other_t.frames()
    body = message(b"x" * 40)
    mesh.request(body=body, end=True)
    first, first_t, second, second_t = mesh.first()
    await hedge_due(mesh)
    assert kinds(second_t.frames()) == [f.HEADERS, f.DATA]  # 3 bytes; the rest waits
    assert second.blocked
    success(mesh, first, hpack.Encoder())  # (a server may answer before it read it all)
    assert resets(second_t.frames()) == [f.CANCEL]
    assert not second.blocked and not second.streams
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    first.data_received(f.window_update(0, 1000) + f.window_update(1, 1000))
    assert b"".join(p for k, _, _, p in first_t.frames() if k == f.DATA) == body
    mesh.assert_clean()


@pytest.mark.asyncio
async def test_headers_from_the_hedge_win_and_an_interceptor_sees_one_response() -> None:
    from grpcmesh.interceptors import CallView, Interceptor

    seen: list[str] = []

    class Watch(Interceptor):
        wants_responses = True

        def response_headers(self, call: CallView, headers: list[tuple[str, str]]) -> None:
            seen.append("headers")

        def trailers(self, call: CallView, trailers: list[tuple[str, str]]) -> None:
            seen.append(dict(trailers)["grpc-status"])

    mesh = mesh_with()
    mesh.relay.user_interceptors = (Watch(),)
    mesh.relay._chains.clear()
    mesh.request(body=message(b"hi"), end=True)
    first, _, second, _ = mesh.first()
    await hedge_due(mesh)
    answer(mesh, first, headers(hpack.Encoder(), 1, UNAVAILABLE, end=True))  # drops out
    enc = hpack.Encoder()
    answer(mesh, second, headers(enc, 1, RESPONSE), f.frame(f.DATA, 0, 1, message(b"yo")),
           headers(enc, 1, OK, end=True))
    assert seen == ["headers", "0"]
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
    mesh.assert_clean()


# -- the deadline ---------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_no_hedge_goes_once_the_deadline_has_passed() -> None:
    """Deadlines are enforced up to a tick (10 ms) late (deadlines.py): a hedge timer that
    fires in that gap must not send an attempt with no time left (grpc-timeout 1u), which
    takes a budget token and gets its endpoint blamed with DEADLINE_EXCEEDED."""
    mesh = mesh_with()
    budget = hedge_rule(mesh).budget
    mesh.request(body=message(b"hi"), end=True, headers=[*REQUEST, ("grpc-timeout", "3m")])
    _, _, _, second_t = mesh.first()
    call = mesh.down.streams[1].call
    mesh.clock.advance(0.006)  # past the deadline (3 ms) and the hedge's delay (5 ms) ...
    assert call.race is not None and not call.ended
    call.race.fire()  # ... and the hedge's timer fires before the deadlines' one
    mesh.relay.flusher.flush()
    assert second_t.frames() == [], "a hedge went after the call's deadline"
    assert budget.totals()[1] == 0
    await asyncio.sleep(0.03)  # the deadlines' timer
    assert client_status(mesh.down_t.frames()) == grpc.StatusCode.DEADLINE_EXCEEDED
    mesh.assert_clean()
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())


@pytest.mark.parametrize("how", ["goaway", "lost"])
@pytest.mark.asyncio
async def test_two_racers_on_one_connection_both_go_when_it_goes(how: str) -> None:
    """Endpoints are told apart by identity, not address: two instances at one address (two
    mesh services in one process, behind one proto's target) put both racers on one
    connection. Its GOAWAY (below both) or loss ends both, and the call ends once."""
    from grpcmesh.registry.model import Health, Instance
    from tests.relay.test_relay import ADDRESS

    mesh = mesh_with()
    mesh.pool.remove("e2")
    mesh.pool.upsert(Instance("svc", "e3", ADDRESS, health=Health.SERVING))
    mesh.request(body=message(b"hi"), end=True)
    await hedge_due(mesh)
    assert len(mesh.up.streams) == 2  # the first attempt and the hedge, on one connection
    if how == "goaway":
        mesh.up.data_received(f.goaway(0, f.NO_ERROR))
    else:
        mesh.up_t.close()
    await asyncio.sleep(0)
    got = mesh.down_t.frames()
    if how == "goaway":  # no app saw it: refused, so that its client may send it again
        assert resets(got) == [f.REFUSED_STREAM]
    else:
        assert client_status(got) == grpc.StatusCode.UNAVAILABLE
    assert len(mesh.records) == 1
    assert mesh.relay.in_flight == 0 and mesh.relay.held == 0
    assert not mesh.up.streams
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())


# -- random orderings -----------------------------------------------------------------------

EVENTS = ["window", "timer", "headers", "data", "ok", "unavailable", "pushback", "no_more",
          "fatal", "refused", "cancel", "internal", "goaway", "lost", "client_reset",
          "deadline"]


def _frames(event: str, enc: hpack.Encoder, sid: int) -> bytes:
    """What an endpoint sends on stream sid for event."""
    pushback = {"pushback": [("grpc-retry-pushback-ms", "3")],
                "no_more": [("grpc-retry-pushback-ms", "-1")]}
    if event == "window":
        return f.window_update(0, 100000) + f.window_update(sid, 100000)
    if event in ("headers", "data", "ok"):
        out = headers(enc, sid, RESPONSE)
        if event == "data":
            out += f.frame(f.DATA, 0, sid, message(b"yo"))
        return out + (headers(enc, sid, OK, end=True) if event == "ok" else b"")
    if event in ("unavailable", "pushback", "no_more"):
        return headers(enc, sid, [*UNAVAILABLE, *pushback.get(event, [])], end=True)
    if event == "fatal":
        return headers(enc, sid, [("grpc-status", "5")], end=True)
    codes = {"refused": f.REFUSED_STREAM, "cancel": f.CANCEL, "internal": f.INTERNAL_ERROR}
    if event in codes:
        return f.rst_stream(sid, codes[event])
    return f.goaway(0, f.NO_ERROR) if event == "goaway" else b""  # ("lost": closed below)


async def _ordering(rng: random.Random, log: list[str]) -> None:
    mesh, ups = three(f"{{delay: 5ms, max_attempts: {rng.choice([2, 3, 4])}, methods: all}}")
    encoders = {up: hpack.Encoder() for up in ups}
    if rng.random() < 0.5:  # tiny windows: request DATA waits in the legs
        for up, transport in ups.items():
            up.data_received(f.settings_frame([(f.INITIAL_WINDOW_SIZE, 3)]))
            transport.frames()
    mesh.request(body=message(b"x" * rng.choice([2, 40, 12000])), end=True,
                 headers=[*REQUEST, ("grpc-timeout", "1S")])
    for _ in range(rng.randint(1, 8)):
        event = rng.choice(EVENTS)
        if event == "timer":
            mesh.clock.advance(0.006)
            await asyncio.sleep(0.012)
        elif event == "deadline":
            mesh.clock.advance(1.1)
            await asyncio.sleep(0.03)
        elif event == "client_reset":
            if 1 not in mesh.down.streams:
                continue
            mesh.down.data_received(f.rst_stream(1, f.CANCEL))
        else:
            live = [(up, sid) for up in ups for sid in up.streams]
            if not live:
                continue
            up, sid = rng.choice(live)
            up.data_received(_frames(event, encoders[up], sid))
            if event == "lost":
                ups[up].close()
            event += f"@{up.address}/{sid}"
        log.append(event)
        await asyncio.sleep(0)
    for _ in range(3):  # whatever is still open is answered, then the deadline passes
        for up in ups:
            for sid, leg in list(up.streams.items()):
                if not leg.ended_in:
                    up.data_received(headers(encoders[up], sid, OK, end=True))
                if sid in up.streams:
                    up.data_received(f.rst_stream(sid, f.NO_ERROR))
        await asyncio.sleep(0.01)
    mesh.clock.advance(2.0)
    await asyncio.sleep(0.03)
    got = mesh.down_t.frames()
    assert len(mesh.records) == 1
    assert mesh.relay.in_flight == 0 and mesh.relay.held == 0
    assert all(e.in_flight == 0 for e in mesh.pool.endpoints.values())
    assert all(not up.streams and not up.blocked for up in ups)
    assert not mesh.down.streams
    ends = [k for k, flags, *_ in got if k == f.HEADERS and flags & f.END_STREAM]
    assert len(ends) <= 1
    assert ends or resets(got) or "client_reset" in log
    assert mesh.down.recv_window + mesh.down.conn_unacked == CONN_WINDOW


@pytest.mark.asyncio
async def test_random_orderings_end_the_call_once_and_leave_nothing_behind() -> None:
    """Invariants over random orderings of a hedged call's events (three endpoints): one end
    and one record, the client answered (or gone), nothing in flight, held or left open."""
    for seed in range(40):
        log: list[str] = []
        try:
            await _ordering(random.Random(seed), log)
        except AssertionError as err:
            raise AssertionError(f"seed {seed}: {log}") from err
