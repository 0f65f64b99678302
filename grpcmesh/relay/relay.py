"""The relay: grpcmesh's data path, forwarding each gRPC call as HTTP/2 frames.

A call passes, outermost first: a client stream's request headers (decoded, the one header block
per call that always is) -> checks (metadata size, grpc-timeout) -> route (:path or the
grpcmesh-service header to a Target) -> pick an endpoint whose connection is up (a refused
connection means the call never left, so the next endpoint is tried) -> a stream on that
endpoint's connection, to which request frames are relayed byte for byte, and from which the
response headers, DATA and trailers come back the same way. The balancer learns from the
first response DATA (latency) and the trailers' grpc-status (outcome). Messages are never
deserialized, and the kind of a method does not matter: every call is just a stream.

The proxy's own answers (no route, no healthy instance, oversized metadata or message, an
upstream connection lost) are trailers-only responses with a status that names what failed; a
request that is not gRPC gets HTTP 415 (request.py). What one client may hold or make the relay
do is bounded by RelayLimits (limits.py): streams, windows, buffered output, frame floods,
rapid resets, connections and their timeouts.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import socket
from collections.abc import Callable, Sequence

import grpc

from grpcmesh.balance.endpoint import Endpoint
from grpcmesh.clock import Clock, MonotonicClock
from grpcmesh.config.schema import MeshConfig
from grpcmesh.interceptors.api import Answer, CallView, Delay, Interceptor
from grpcmesh.interceptors.chain import Chain
from grpcmesh.interceptors.rules import inbound_rules, outbound_rules
from grpcmesh.relay import frames as f
from grpcmesh.relay.blocks import BlockCache
from grpcmesh.relay.call import Call
from grpcmesh.relay.deadlines import Deadlines
from grpcmesh.relay.downstream import Downstream
from grpcmesh.relay.limits import RelayLimits, clip
from grpcmesh.relay.peer import Flusher, Headers, Leg, call_soon_flushed
from grpcmesh.relay.record import Observer
from grpcmesh.relay.request import Refused, read_request
from grpcmesh.relay.settings import ForwardSettings
from grpcmesh.relay.upstreams import Upstreams
from grpcmesh.routing import SERVICE_HEADER, RouteError, Target
from grpcmesh.server_util import check_bindable

log = logging.getLogger(__name__)

Router = Callable[[str, str | None], Target]
_SC = grpc.StatusCode
SWEEP_INTERVAL = 1.0  # how often timeouts are checked (Relay.sweep)


def headers_path(headers: Headers) -> str:
    return next((v for k, v in headers if k == ":path"), "")


class Relay:
    """A listener whose calls are relayed to the endpoints router picks."""

    def __init__(self, router: Router, *, local: tuple[tuple[str, ...], Target] | None = None,
                 settings: ForwardSettings = ForwardSettings(),
                 limits: RelayLimits = RelayLimits(),
                 cache: BlockCache | None = None,
                 interceptors: Sequence[Interceptor] = (),
                 direction: str = "outbound", own_service: str = "",
                 clock: Clock = MonotonicClock()) -> None:
        self.router = router
        self.local = local
        self.settings = settings
        self.limits = limits
        self.cache = cache if cache is not None else BlockCache()
        self.clock = clock
        self.user_interceptors = tuple(interceptors)
        self.direction = direction
        self.own_service = own_service  # inbound: the service whose calls it takes
        self.config = MeshConfig()
        self.rng = random.Random()
        self._chains: dict[str, Chain | None] = {}
        self._subsets: dict[tuple[str, str], Target] = {}
        self._timeouts: dict[float, tuple[str, bytes]] = {}
        self.flusher = Flusher()
        self.upstreams = Upstreams(self.flusher, clock, limits=limits, cache=self.cache)
        self.downstreams: set[Downstream] = set()
        self.in_flight = 0  # calls not yet ended
        self.held = 0  # bytes of request held by calls until they commit (call.py)
        self.observers: list[Observer] = []  # each reads every call's CallRecord
        self.draining = False
        self.all_gone: asyncio.Event | None = None  # set when draining and every client is gone
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # One timer for every call's deadline (deadlines.py)
        self.deadlines = Deadlines(self.call_later, clock.now)
        self._refused_connections = 0
        # Why client connections were closed since the last sweep: one log line a second
        # however many an attacker makes the relay close.
        self.closed_why: collections.Counter[str] = collections.Counter()

    # -- listening ----------------------------------------------------------------------------

    def bind(self, address: str, what: str, reuse_port: bool = False, join: bool = False
             ) -> int:
        """Listen on address (see server_util.bind for reuse_port and join); the port."""
        check_bindable(address, what, reuse_port and join)
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, int(port)))
            sock.listen(self.limits.listen_backlog)
        except OSError as err:
            sock.close()
            raise OSError(f"cannot listen on {address} for {what}: "
                          f"{err.strerror or err}") from None
        sock.setblocking(False)
        self._sock = sock
        return int(sock.getsockname()[1])

    async def start(self) -> None:
        assert self._sock is not None, "bind() first"
        loop = asyncio.get_running_loop()
        # create_server listens again, with its own backlog (100) unless told
        self._server = await loop.create_server(lambda: Downstream(self), sock=self._sock,
                                                backlog=self.limits.listen_backlog)
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)
        self.sweep(self.clock.now())

    def sweep(self, now: float) -> None:
        """Once a second: close connections that wait too long for a preface or sit idle, and
        those whose output has not drained for stall_timeout."""
        call_soon_flushed(self.flusher, lambda: self._sweep_at(now))

    def _sweep_at(self, now: float) -> None:
        limits = self.limits
        if self._refused_connections:
            log.warning("refused %d connections over --max-connections=%d",
                        self._refused_connections, limits.max_connections)
            self._refused_connections = 0
        if self.closed_why:
            log.info("closed client connections: %s", ", ".join(
                f"{why} ({n})" for why, n in self.closed_why.most_common()))
            self.closed_why.clear()
        for down in list(self.downstreams):
            if not down.got_settings:
                if now - down.born > limits.handshake_timeout:
                    # No GOAWAY: it does not speak HTTP/2 (yet), and aborting is cheap when
                    # thousands time out at once.
                    self.closed_why["no preface and SETTINGS in time"] += 1
                    down.closing = True
                    assert down.transport is not None
                    down.transport.abort()
                continue
            if down.resets.opened != down.seen_opened or down.streams:
                down.seen_opened = down.resets.opened
                down.idle_since = None
            elif down.idle_since is None:
                down.idle_since = now
            elif now - down.idle_since > limits.idle_timeout and down.refuse_above is None:
                down.drain()  # graceful: GOAWAY, then the connection closes
                down.idle_since = None  # (drained once: the final GOAWAY comes within 1 s)
        for peer in [*self.downstreams, *self.upstreams.connections()]:
            if peer.paused and now - peer.paused_at > limits.stall_timeout:
                peer.close(f.ENHANCE_YOUR_CALM, f"output not read for {limits.stall_timeout:g}s")

    def over_capacity(self) -> None:
        """A connection beyond max_connections was refused (logged once per sweep)."""
        self._refused_connections += 1

    async def stop(self, grace: float | None) -> None:
        """Take no new calls; let calls in flight finish within grace seconds (None: none)."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.draining = True
        if grace:
            # Each client connection closes itself once its client has seen the final GOAWAY
            # (so it sends nothing more) and its streams are over: that is when no call can
            # be lost, which in_flight reaching 0 alone does not show.
            self.all_gone = asyncio.Event()
            for down in list(self.downstreams):
                down.drain()
            self.flusher.flush()
            if self.downstreams:
                try:
                    await asyncio.wait_for(self.all_gone.wait(), grace)
                except TimeoutError:
                    log.warning("%d calls still in flight after the %.1fs grace period; "
                                "cancelling them", self.in_flight, grace)
        for down in list(self.downstreams):
            if not grace and down.transport is not None:
                down.transport.abort()
            else:
                down.close()
        self.upstreams.close()
        self.deadlines.close()
        self.flusher.flush()

    def discard(self, address: str) -> None:
        """No endpoint uses address any more."""
        self.upstreams.discard(address)

    def call_later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        """fn in delay seconds, its writes flushed (the deadlines' timer)."""
        return asyncio.get_running_loop().call_later(delay, call_soon_flushed, self.flusher, fn)

    # -- calls --------------------------------------------------------------------------------

    def open(self, down: Downstream, sid: int, headers: Headers, block: bytes | None,
             end: bool) -> None:
        leg = Leg(down, sid, None)
        call = leg.call = Call(self, leg)
        down.streams[sid] = leg
        self.in_flight += 1
        if end:
            leg.ended_in = True
            call.end_headers = True
        settings = self.settings
        try:
            request = read_request(headers, settings.max_metadata_bytes,
                                   self.limits.max_path_bytes)
        except Refused as refused:
            call.method = clip(headers_path(headers))
            call.reply_error(refused.code, refused.message, refused.reason, refused.http)
            return
        path = call.method = request.path
        override = request.override
        seconds = None
        if request.timeout is not None:
            try:
                seconds = f.parse_timeout(request.timeout)
            except ValueError:
                seconds = None  # the upstream judges it
            if seconds is not None:
                if seconds <= 0:
                    call.reply_error(_SC.DEADLINE_EXCEEDED,
                                     f"deadline expired before {path} was forwarded", "deadline")
                    return
                self._set_deadline(call, seconds)
        local = self.local
        if local is not None and override is None and path.startswith(local[0]):
            target = local[1]  # the sidecar's own health service: no rules
        else:
            try:
                target = self.router(path, override)
            except RouteError as err:
                call.reply_error(err.code, err.message, "no_route")
                return
        service = target.service
        call.service = service or target.name  # the mesh service, for records
        if block is not None and down.fresh:
            down.keep(block, headers)
        call.limit = settings.max_message_bytes
        call.req_framing = f.MessageFraming(call.limit)
        call.resp_framing = f.MessageFraming(call.limit)
        call.early = []
        if override is not None:
            headers = [h for h in headers if h[0] != SERVICE_HEADER]
            block = None
        chain = self.chain_for(target)
        if chain is None:
            # The call goes upstream at the end of the read that brought it (after_read, just
            # before the flush that would send it anyway): a reset in the same read ends it in
            # the relay, and no app sees it (rapid reset, CVE-2023-44487).
            down.deferred.append((call, target, block, headers))
            return
        call.chain = chain
        call.view = CallView(path, headers, seconds, down.caller, service, self.direction)
        self._intercept(call, 0, target, block, headers, seconds, deferred=True)

    def set_config(self, config: MeshConfig) -> None:
        """A new mesh config is in force: calls from now on get chains built from it; calls in
        flight keep the rules they started with."""
        self.config = config
        self._chains.clear()
        self._subsets.clear()

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
                             else outbound_rules(service, self.rng))
        chain = self._chains[key] = Chain(interceptors) if interceptors else None
        return chain

    def _intercept(self, call: Call, start: int, target: Target, block: bytes | None,
                   headers: Headers, seconds: float | None, deferred: bool) -> None:
        """Run the call's chain from interceptor start; the call then goes on as the chain left
        it, is answered by an interceptor, or waits (Delay) and the chain goes on after it."""
        view = call.view
        assert call.chain is not None and view is not None
        if call.closed:  # its client left while it waited
            return
        outcome, index = call.chain.request(view, start)
        if outcome is None:
            if view.changed or view.timeout != seconds:
                block, headers = self._changed(call, block, headers, seconds)
            subset = view.subset
            if subset is not None:  # the route/split rule chose one of its subsets
                key = (target.name, subset.name)
                restricted = self._subsets.get(key)
                if restricted is None:
                    restricted = self._subsets[key] = target.subset(subset.name, subset.labels)
                target = restricted
            if deferred:
                down = call.down.peer
                assert isinstance(down, Downstream)
                down.deferred.append((call, target, block, headers))
            else:
                self.route_to(call, target, block, headers)
        elif isinstance(outcome, Answer):
            call.reply_error(outcome.code, outcome.message,
                             f"interceptor {call.chain.names[index]}")
        else:
            assert isinstance(outcome, Delay), \
                f"interceptor {call.chain.names[index]} returned {outcome!r}"
            call.pause = self.call_later(
                max(0.0, outcome.seconds),
                lambda: self._intercept(call, index + 1, target, block, headers, seconds, False))

    def _changed(self, call: Call, block: bytes | None, headers: Headers,
                 seconds: float | None) -> tuple[bytes | None, Headers]:
        """The request as the interceptors left it: their metadata, their deadline."""
        view = call.view
        assert view is not None
        if view.changed:
            headers, block = view.headers(), None
        if view.timeout != seconds:
            if call.tick is not None:
                self.deadlines.remove(call)
            if view.timeout is None:
                call.deadline = None
                headers = [h for h in headers if h[0] != "grpc-timeout"]
                block = None
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
                    headers = [h for h in headers if h[0] != "grpc-timeout"]
                    headers = [*headers, ("grpc-timeout", timeout)]
                    block = None
        return block, headers

    def _set_deadline(self, call: Call, seconds: float) -> None:
        call.deadline = deadline = self.clock.now() + seconds
        self.deadlines.add(call, deadline)

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

    def retry(self, call: Call) -> bool:
        """Send call again, to an endpoint it has not tried (Call.try_elsewhere); False if
        there is none, or its deadline has passed."""
        target = call.target
        assert target is not None
        tried = [attempt.endpoint for attempt in call.attempts]
        endpoint = target.pick(tried)
        if endpoint is None or (call.deadline is not None
                                and self.clock.now() >= call.deadline):
            return False
        call.task = asyncio.get_running_loop().create_task(
            self._connect_then_start(call, target, endpoint, None, call.request, tried))
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
                    if call.deadline is not None:  # what is left of it goes upstream
                        left = f.format_timeout(max(call.deadline - self.clock.now(), 1e-6))
                        headers = [*(h for h in headers if h[0] != "grpc-timeout"),
                                   ("grpc-timeout", left)]
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
                names = ", ".join(e.address for e in refused)
                what = "took" if tried else "accepted a connection for"
                call.reply_error(_SC.UNAVAILABLE, f"no instance of {target.name} {what} "
                                 f"{call.method} (tried {names})"
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
