"""The hedge rule in a call (services.NAME.hedge; the timing is grpcmesh/resilience/latency.py).

A call the rule covers gets a Race when it is routed. Its first attempt starts the race's timer;
if no response has come when it fires (the rule's delay, or the route's observed percentile),
another attempt goes to an endpoint the call has not tried, with grpc-previous-rpc-attempts and
what is left of the deadline, and so on up to max_attempts, each hedge drawing a token from the
service's retry budget. Hedges are sent only while the call's request is held and complete
(unary and server-streaming calls; a client still sending is not hedged) and nothing of any
response has reached the client.

Once a hedge is out, every attempt's stream delivers its events to a Racer, not to the call.
The first response wins: response headers, a message, or trailers with a status other than
UNAVAILABLE. The winner becomes the call's attempt (call.up, the last of call.attempts) and the
call goes on as if it had been the only one; the others are cancelled (RST_STREAM CANCEL, so
their servers see the cancellation) and their endpoints are not blamed. An attempt that fails
with UNAVAILABLE, a reset, a refusal or a lost connection while others still run drops out of
the race (its endpoint blamed as usual); if it was the last one, the next hedge goes at once if
one is left, else its failure is the call's answer.

Before the first hedge fires the call's one attempt talks to the call directly, and a call
answered within the delay pays only for its timer; if that attempt fails as above (but for a
refusal, which goes elsewhere unseen: call.py), it becomes the race's last attempt, and the
first hedge goes at once. A server's grpc-retry-pushback-ms on a failed attempt moves the next
hedge to n ms from then, or (negative) ends hedging (gRFC A6); when it was the last attempt the
call waits for it, with nothing in flight, and its failure is the call's if no hedge can go
then. A hedge due while a refused attempt is on its way elsewhere goes once that one is sent.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc

from grpcmesh.relay import frames as f
from grpcmesh.relay.peer import Headers
from grpcmesh.relay.record import RESET_STATUS, Attempt, status_of
from grpcmesh.relay.settings import PUSHBACK
from grpcmesh.resilience.backoff import parse_pushback

if TYPE_CHECKING:
    from grpcmesh.interceptors.chain import Chain
    from grpcmesh.relay.call import Call
    from grpcmesh.resilience.budget import RetryBudget
    from grpcmesh.resilience.latency import HedgeSchedule, HedgeTimer

_SC = grpc.StatusCode
# What makes an attempt drop out of the race rather than win it (gRFC A6's non-fatal codes).
NON_FATAL = frozenset({_SC.UNAVAILABLE})


class Race:
    """One call's hedged attempts."""

    __slots__ = ("budget", "call", "held", "racers", "schedule", "timer", "timing")

    def __init__(self, call: Call, timing: HedgeTimer, budget: RetryBudget) -> None:
        self.call = call
        self.timing = timing
        self.budget = budget
        self.schedule: HedgeSchedule | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.racers: list[Racer] = []  # empty until the first hedge is sent
        # The last attempt's trailers (block, headers, verbatim), while the pushback they
        # carry delays the next hedge (drop)
        self.held: tuple[Racer, bytes, Headers | None, bool] | None = None

    def start(self, now: float) -> None:
        """The call's first attempt was sent: the timer starts (no timer, and no race, while
        the route has too few calls for its percentile)."""
        schedule = self.schedule = self.timing.schedule(now)
        if schedule.next_at is None:
            self.call.race = None
            return
        self._arm(now)

    def _arm(self, now: float) -> None:
        """The timer, for the schedule's next hedge (none if there is none)."""
        if self.timer is not None:
            self.timer.cancel()
        assert self.schedule is not None
        next_at = self.schedule.next_at
        self.timer = None if next_at is None else self.call.relay.call_later(
            max(0.0, next_at - now), self.fire)

    def fire(self) -> None:
        """The delay passed with no response: a hedge goes out, if the call may still have one."""
        self.timer = None
        call = self.call
        if call.race is not self:
            return
        if call.up is None and not call.closed:
            # Between two attempts (one refused unseen, the next on its way): the next one's
            # start fires it again (Call.attempt).
            return
        if call.closed or call.sent is None or call.headers_out or call.waiting is not None \
                or not (call.req_end or call.end_headers):
            # Committed, answered, or its client still sending: no hedge.
            self.stop()
            return
        schedule = self.schedule
        assert schedule is not None
        now = call.relay.clock.now()
        if schedule.next_at is not None:
            if now < schedule.next_at:
                self._arm(now)  # (not yet: a pushback moved it)
                return
            call.relay.hedge(call, self)  # (its budget token is taken once an endpoint is found)
        held = self.held
        if held is not None:  # the wait the last attempt's pushback asked for is over
            self.held = None
            racer = held[0]
            if len(self.racers) == 1:  # and no hedge went: its failure is the call's
                self.won(racer)
                call.response_headers(held[1], held[2], held[3], True)
                return
            self._leave(racer)
        self._arm(now)

    def alone(self) -> Racer:
        """The call's one attempt, failed before any hedge went (Call: UNAVAILABLE, a reset, a
        lost connection), as the race's last racer: drop sends the next hedge at once."""
        current = self.call.attempts[-1]
        racer = Racer(self, current)
        self.racers.append(racer)
        current.leg.call = racer
        return racer

    def add(self, attempt: Attempt) -> None:
        """A hedge's attempt (its stream open, nothing sent yet) joins the race, and the
        call's current attempt too if this is the first hedge. The current one (call.up)
        stays the last of call.attempts."""
        call = self.call
        racers = self.racers
        if not racers:
            current = call.attempts[-1]
            racers.append(Racer(self, current))
            current.leg.call = racers[0]
        racer = Racer(self, attempt)
        racers.append(racer)
        attempt.leg.call = racer
        call.attempts.insert(len(call.attempts) - 1, attempt)

    def won(self, racer: Racer) -> None:
        """racer's response is first: it is the call's attempt from now on, and the others
        are cancelled."""
        now = self.call.relay.clock.now()
        for other in self.racers:
            if other is not racer:
                _cancel(other.attempt, now)
        self.racers = []
        self._current(racer.attempt)
        self.stop()

    def drop(self, racer: Racer, blame: grpc.StatusCode | None, pushback: int | None,
             seen: bool = True, trailers: tuple[bytes, Headers | None, bool] | None = None
             ) -> bool:
        """racer failed in a way another attempt may still make good (NON_FATAL, a reset, a
        refusal, a lost connection): it leaves the race, and if it was the last one the next
        hedge goes now, or (pushback: the server's grpc-retry-pushback-ms, with its trailers)
        when the server asked. False if it was the last and no hedge could go: its failure is
        the call's (the caller then makes it the winner). seen: it may have reached its app
        (all but refusals), so that a refusal later is not passed on as one no app saw
        (Retrying.seen, refuse)."""
        call = self.call
        if seen:
            call.reached += 1
        now = call.relay.clock.now()
        schedule = self.schedule
        assert schedule is not None
        if pushback is not None:
            schedule.pushback(pushback, now)  # (negative: no more hedges)
            if self.timer is not None:
                self._arm(now)
        racers = self.racers
        if len(racers) == 1:
            if schedule.next_at is None or call.closed:
                return False
            if pushback is not None and schedule.next_at > now and trailers is not None:
                # The call waits as the server asked, with nothing in flight (fire).
                self._end(racer, blame, pushback, now)
                self.held = (racer, *trailers)
                self._arm(now)
                return True
            schedule.next_at = now  # at once (gRFC A6: a non-fatal failure skips the delay)
            if self.timer is not None:
                self.timer.cancel()
            self.fire()
            if len(racers) == 1:
                return False
        self._end(racer, blame, pushback, now)
        self._leave(racer)
        return True

    def _end(self, racer: Racer, blame: grpc.StatusCode | None, pushback: int | None,
             now: float) -> None:
        """racer's attempt is over: its endpoint is told how it went, its stream reset."""
        attempt = racer.attempt
        attempt.handle.finish(now, blame, pushback if pushback is not None and pushback >= 0
                              else None)
        leg = attempt.leg
        if not (leg.ended_in and leg.ended_out):
            leg.peer.reset(leg, f.CANCEL)

    def _leave(self, racer: Racer) -> None:
        """racer, whose attempt is over, leaves the race (another stays)."""
        racers = self.racers
        racers.remove(racer)
        if self.call.up is racer.attempt.leg:
            self._current(racers[-1].attempt)
            racers[-1].attempt.leg.call = racers[-1]  # (still racing)

    def _current(self, attempt: Attempt) -> None:
        """attempt becomes the call's current one (call.up, the last of call.attempts), its
        events going to the call."""
        call = self.call
        attempts = call.attempts
        if attempts[-1] is not attempt:
            attempts.remove(attempt)
            attempts.append(attempt)
        call.up = attempt.leg
        attempt.leg.call = call

    def cancel(self) -> None:
        """The call is over upstream (answered, its client left): every attempt but the
        current one (the call cancels that) is cancelled."""
        now = self.call.relay.clock.now()
        up = self.call.up
        for racer in self.racers:
            if racer.attempt.leg is not up:
                _cancel(racer.attempt, now)
        self.racers = []
        self.stop()

    def stop(self) -> None:
        """No more hedges for this call."""
        call = self.call
        if call.race is self:
            call.race = None
        self.held = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.schedule is not None:
            self.schedule.stop()


def _cancel(attempt: Attempt, now: float) -> None:
    leg = attempt.leg
    if not (leg.ended_in and leg.ended_out):
        leg.peer.reset(leg, f.CANCEL)
    attempt.handle.abandon(now)


class Racer:
    """Where a hedged attempt's stream delivers its events while the race is on (Upstream
    calls these as it would the call's)."""

    __slots__ = ("attempt", "race")

    def __init__(self, race: Race, attempt: Attempt) -> None:
        self.race = race
        self.attempt = attempt

    @property
    def chain(self) -> Chain | None:
        return self.race.call.chain

    def response_headers(self, block: bytes, headers: Headers | None, verbatim: bool,
                         end: bool) -> None:
        race = self.race
        if end:
            assert headers is not None
            code, _ = status_of(headers)
            # (status_of reads a negative pushback as none: here it ends hedging)
            if code in NON_FATAL and race.drop(self, code, _pushback(headers),
                                               trailers=(block, headers, verbatim)):
                return
        race.won(self)
        race.call.response_headers(block, headers, verbatim, end)

    def response_data(self, payload: bytes, end: bool, length: int) -> None:
        self.race.won(self)
        self.race.call.response_data(payload, end, length)

    def upstream_reset(self, code: int, finished: bool) -> None:
        race = self.race
        refused = code == f.REFUSED_STREAM
        if not finished and race.drop(self, _SC.UNAVAILABLE if refused
                                      else RESET_STATUS.get(code, _SC.INTERNAL), None,
                                      seen=not refused):
            return
        race.won(self)
        race.call.upstream_reset(code, finished)

    def upstream_refused(self) -> None:
        race = self.race
        if race.drop(self, None, None, seen=False):
            return
        race.won(self)
        race.call.upstream_refused()

    def upstream_lost(self, finished: bool, address: str) -> None:
        race = self.race
        if not finished and race.drop(self, _SC.UNAVAILABLE, None):
            return
        race.won(self)
        race.call.upstream_lost(finished, address)


def _pushback(headers: Headers) -> int | None:
    """A trailer block's grpc-retry-pushback-ms as backoff.parse_pushback reads it (STOP, -1:
    no more hedges)."""
    for key, value in headers:
        if key == PUSHBACK:
            return parse_pushback(value)
    return None


def hedge_leg(call: Call, race: Race, attempt: Attempt, block: bytes) -> None:
    """Send a hedge: the request headers (block), then the request the call holds."""
    race.add(attempt)
    leg = attempt.leg
    leg.peer.send_headers(leg, block, call.end_headers)
    call.send_request(leg)
