"""The interceptors' part of the relay: which chain a call gets, running it, and the call as
the chain leaves it (its metadata, its deadline, the subset its route chose).

Chains are built once per target and config version (chain_for), never per call; a new config
makes new chains for the calls that come after it, while calls in flight keep theirs. A chain
may answer a call (Answer), hold it (Delay, after which the rest of the chain runs), or let it
go on, changed or not, to Dispatch.route_to (dispatch.py).
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

from grpcmesh.clock import Clock
from grpcmesh.config.schema import MeshConfig
from grpcmesh.interceptors.api import Answer, Delay, Interceptor
from grpcmesh.interceptors.chain import Chain
from grpcmesh.interceptors.kept import Kept
from grpcmesh.interceptors.rules import Methods, inbound_rules, outbound_rules
from grpcmesh.relay import frames as f
from grpcmesh.relay.call import Call
from grpcmesh.relay.deadlines import Deadlines
from grpcmesh.relay.headers import replaced
from grpcmesh.relay.hedging import Race
from grpcmesh.relay.peer import Headers
from grpcmesh.routing import Target

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable


class Interception:
    """Relay's interceptor methods (a mixin: Relay holds the state below)."""

    config: MeshConfig
    user_interceptors: tuple[Interceptor, ...]
    local: tuple[tuple[str, ...], Target] | None
    own_service: str
    direction: str
    clock: Clock
    rng: random.Random
    deadlines: Deadlines
    _chains: dict[str, Chain | None]
    _subsets: dict[tuple[str, str], Target]
    _timeouts: dict[float, tuple[str, bytes]]
    kept: Kept
    methods: Methods

    # (Relay's and Dispatch's methods: annotations only, so nothing here shadows them)
    call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle]
    route_to: Callable[[Call, Target, bytes | None, Headers], None]

    def set_config(self, config: MeshConfig) -> None:
        """A new mesh config is in force: calls from now on get chains built from it; calls in
        flight keep the rules they started with."""
        self.config = config
        self._chains.clear()
        self._subsets.clear()
        self.kept.prune(config)

    def chain_for(self, target: Target) -> Chain | None:
        """The interceptors of calls to target: the user's, then the mesh config's rules for
        its service (chain.py gives the order). Built once per target and config version."""
        key = target.name
        if key in self._chains:
            return self._chains[key]
        interceptors = list(self.user_interceptors)
        own = self.local is not None and target is self.local[1]  # the sidecar's own health
        service = None if own else self.config.service(self.own_service or target.service)
        if service is not None:
            interceptors += (inbound_rules(service, self.clock) if self.direction == "inbound"
                             else outbound_rules(service, self.rng, self.clock, self.methods,
                                                 self.kept))
        chain = self._chains[key] = Chain(interceptors) if interceptors else None
        return chain

    def _intercept(self, call: Call, start: int, target: Target, block: bytes | None,
                   headers: Headers, seconds: float | None) -> None:
        """Run the call's chain from interceptor start; the call then goes on as the chain left
        it, is answered by an interceptor, or waits (Delay) and the chain goes on after it."""
        view = call.view
        assert call.chain is not None and view is not None
        if call.closed:  # its client left while it waited
            return
        outcome, index = call.chain.request(view, start)
        if outcome is None:
            call.retry = view.retry
            if view.hedge is not None:
                call.race = Race(call, *view.hedge)
            # The request as the interceptors left it: their metadata, their deadline.
            if view.changed:
                headers, block = view.headers(), None
            if view.timeout != seconds:
                if call.tick is not None:
                    self.deadlines.remove(call)
                if view.timeout is None:
                    call.deadline = None
                    headers, block = replaced(headers, "grpc-timeout", None), None
                else:
                    call.deadline = deadline = self.clock.now() + view.timeout
                    self.deadlines.add(call, deadline)
                    # grpc-timeout, and as an HPACK literal: made once per value (a rule's
                    # timeout is the same for every call), for at most 64 values
                    made = self._timeouts.get(view.timeout)
                    if made is None:
                        if len(self._timeouts) >= 64:
                            self._timeouts.clear()
                        text = f.format_timeout(view.timeout)
                        made = self._timeouts[view.timeout] = (
                            text, f.literal_header("grpc-timeout", text))
                    timeout, literal = made
                    if seconds is None and block is not None:
                        # The usual case, a deadline given to a call that had none: appended to
                        # the block as it is (an HPACK literal), not encoded again.
                        block += literal
                    else:
                        headers, block = replaced(headers, "grpc-timeout", timeout), None
            subset = view.subset
            if subset is not None:  # the route/split rule chose one of its subsets
                key = (target.name, subset.name)
                restricted = self._subsets.get(key)
                if restricted is None:
                    restricted = self._subsets[key] = target.subset(subset.name, subset.labels)
                target = restricted
            self.route_to(call, target, block, headers)
        elif isinstance(outcome, Answer):
            call.reply_error(outcome.code, outcome.message,
                             f"interceptor {call.chain.names[index]}")
        else:
            assert isinstance(outcome, Delay), \
                f"interceptor {call.chain.names[index]} returned {outcome!r}"
            call.pause = self.call_later(
                max(0.0, outcome.seconds),
                lambda: self._intercept(call, index + 1, target, block, headers, seconds))
