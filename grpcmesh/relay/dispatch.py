"""How the relay gets a call to an endpoint: pick one whose connection is up (the fast path),
or connect first (a refused connection means the call never left: the next endpoint is tried);
for an attempt that no app saw (Call.try_elsewhere), another endpoint it has not tried; and a
hedge (hedging.py), to an endpoint not tried whose connection is up.
"""
from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence

import grpc

from grpcmesh.balance.endpoint import Endpoint
from grpcmesh.clock import Clock
from grpcmesh.relay import frames as f
from grpcmesh.relay.call import Call
from grpcmesh.relay.headers import replaced
from grpcmesh.relay.hedging import Race, hedge_leg
from grpcmesh.relay.peer import Flusher, Headers
from grpcmesh.relay.record import Attempt
from grpcmesh.relay.settings import ForwardSettings
from grpcmesh.relay.upstreams import Upstreams
from grpcmesh.routing import Target

_SC = grpc.StatusCode
PREVIOUS_ATTEMPTS = "grpc-previous-rpc-attempts"  # on a retry: how many attempts went before


class Dispatch:
    """Relay's methods that start attempts (a mixin: Relay holds the state below)."""

    upstreams: Upstreams
    settings: ForwardSettings
    clock: Clock
    flusher: Flusher
    hedges: collections.Counter[str]

    def route_to(self, call: Call, target: Target, block: bytes | None, headers: Headers
                 ) -> None:
        if call.closed:  # its client reset it in the same read
            return
        call.target = target
        call.request = headers
        endpoint = target.pick()
        up = self.upstreams.ready(endpoint.address) if endpoint is not None else None
        if up is not None and endpoint is not None:
            if target.external is not None:  # its :authority (grpcmesh/external/)
                block, headers = None, target.external.headers(endpoint, headers)
            call.attempt(endpoint, up.open_stream(call), block or up.encode(headers))
            return
        call.task = asyncio.get_running_loop().create_task(
            self._connect_then_start(call, target, endpoint, block, headers))

    def retry(self, call: Call, previous: int, fallback: bool) -> bool:
        """Send call again, preferably to an endpoint it has not tried; False if there is
        none, or its deadline has passed. previous: attempts an app saw (sent as
        grpc-previous-rpc-attempts). fallback (the retry rule's retries, Call.try_again): an
        endpoint tried already may take it when no other does. Without it (an attempt no app
        saw, Call.try_elsewhere) only untried endpoints are offered it, and the call is
        refused (Call.refuse) when none takes it."""
        target = call.target
        assert target is not None
        tried = [attempt.endpoint for attempt in call.attempts]
        endpoint = target.pick(tried)
        headers = call.request
        if fallback:
            if endpoint is None:
                endpoint = target.pick()
            tried = []  # (any endpoint that connects may take it)
        if previous:
            headers = replaced(headers, PREVIOUS_ATTEMPTS, str(previous))
        if endpoint is None or (call.deadline is not None
                                and self.clock.now() >= call.deadline):
            return False
        call.task = asyncio.get_running_loop().create_task(
            self._connect_then_start(call, target, endpoint, None, headers, tried))
        return True

    def hedge(self, call: Call, race: Race) -> bool:
        """Send call's next hedge (hedging.py) to an endpoint it has not tried whose connection
        is up, with grpc-previous-rpc-attempts and what is left of its deadline; False if there
        is none. A picked endpoint without a connection is not waited for: it is connected for
        the calls that come later, and the next pick is tried. The hedge takes its token from
        the retry budget only once an endpoint takes it (a hedge with nowhere to go counts
        towards max_attempts, not against the budget); none goes once the deadline has passed
        (the relay's timer, up to a tick late, answers the call)."""
        target = call.target
        assert target is not None
        schedule = race.schedule
        assert schedule is not None
        now = self.clock.now()
        if call.deadline is not None and now >= call.deadline:
            schedule.stop()
            return False
        tried = [attempt.endpoint for attempt in call.attempts]
        up = None
        for _ in range(2):
            endpoint = target.pick(tried)
            if endpoint is None:
                break
            up = self.upstreams.ready(endpoint.address)
            if up is not None:
                break
            self.upstreams.warm(endpoint.address)
            tried.append(endpoint)
        if up is None or endpoint is None:
            schedule.skip(now)
            return False
        if not schedule.fire(now, race.budget):
            return False
        self.hedges[call.service] += 1
        headers = replaced(call.request, PREVIOUS_ATTEMPTS, str(len(call.attempts)))
        if call.deadline is not None:
            headers = time_left(headers, call.deadline, now)
        if target.external is not None:
            headers = target.external.headers(endpoint, headers)
        attempt = Attempt(endpoint, up.open_stream(None), endpoint.start(now), now)
        hedge_leg(call, race, attempt, up.encode(headers))
        return True

    async def _connect_then_start(self, call: Call, target: Target, endpoint: Endpoint | None,
                                  block: bytes | None, headers: Headers,
                                  tried: Sequence[Endpoint] = ()) -> None:
        """The slow path: the picked endpoint has no connection yet (or refuses one), or the
        call is tried again (tried: the endpoints it was refused by)."""
        try:
            refused: list[Endpoint] = [*tried]
            while endpoint is not None:
                wait = self.settings.connect_timeout
                if call.deadline is not None:
                    wait = min(wait, max(0.0, call.deadline - self.clock.now()))
                up = await self.upstreams.connect(endpoint.address, wait)
                if call.closed:
                    return
                if up is not None:
                    if call.deadline is not None:
                        headers = time_left(headers, call.deadline, self.clock.now())
                        block = None
                    if target.external is not None:
                        block = None
                        headers = target.external.headers(endpoint, headers)
                    call.attempt(endpoint, up.open_stream(call), block or up.encode(headers))
                    return
                refused.append(endpoint)
                endpoint = target.pick(refused)
            if refused:
                if call.deadline is not None and self.clock.now() >= call.deadline:
                    call.reply_error(_SC.DEADLINE_EXCEEDED,
                                     f"deadline expired while connecting to {target.name}",
                                     "deadline")
                    return
                if tried:  # sent again, and no other endpoint took it: no app saw it
                    call.refuse()
                    return
                names = ", ".join(e.address for e in refused)
                call.reply_error(_SC.UNAVAILABLE, f"no instance of {target.name} accepted a "
                                 f"connection for {call.method} (tried {names})"
                                 if target.external is None else target.external.unreachable(
                                     refused, self.upstreams.failure, call.method),
                                 "connect_refused")
            else:
                call.reply_error(_SC.UNAVAILABLE, f"no healthy instance of {target.name} "
                                 f"({target.describe()}) for {call.method}"
                                 if target.external is None
                                 else target.external.unavailable(call.method),
                                 "no_healthy_instance")
        finally:
            self.flusher.flush()


def time_left(headers: Headers, deadline: float, now: float) -> Headers:
    """headers with what is left of the call's deadline as grpc-timeout (a retry's, a
    hedge's: the deadline spans every attempt)."""
    return replaced(headers, "grpc-timeout", f.format_timeout(max(deadline - now, 1e-6)))
