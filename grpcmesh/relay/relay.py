"""The relay: grpcmesh's data path, forwarding each gRPC call as HTTP/2 frames.

A call passes, outermost first: a client stream's request headers (decoded, the one header block
per call that always is) -> checks (metadata size, grpc-timeout) -> route (:path or the
grpcmesh-service header to a Target) -> pick an endpoint whose connection is up (a refused
connection means the call never left, so the next endpoint is tried) -> a stream on that
endpoint's connection, to which request frames are relayed byte for byte, and from which the
response headers, DATA and trailers come back the same way. The balancer learns from the
first response DATA (latency) and the trailers' grpc-status (outcome). Messages are never
deserialized, and the kind of a method does not matter: every call is just a stream.

This module is the listener and a call's way in (Relay.open); the interceptor chain between
the route and the pick is in intercept.py, and the pick and the attempts in dispatch.py. A call,
once opened, owns its life (call.py).

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

from grpcmesh.clock import Clock, MonotonicClock
from grpcmesh.config.schema import MeshConfig
from grpcmesh.interceptors.api import CallView, Interceptor
from grpcmesh.interceptors.chain import Chain
from grpcmesh.interceptors.kept import Kept
from grpcmesh.interceptors.rules import Methods
from grpcmesh.relay import frames as f
from grpcmesh.relay.blocks import BlockCache
from grpcmesh.relay.call import Call
from grpcmesh.relay.deadlines import Deadlines
from grpcmesh.relay.dispatch import Dispatch
from grpcmesh.relay.downstream import Downstream
from grpcmesh.relay.headers import replaced
from grpcmesh.relay.intercept import Interception
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


class Relay(Interception, Dispatch):
    """A listener whose calls are relayed to the endpoints router picks."""

    def __init__(self, router: Router, *, local: tuple[tuple[str, ...], Target] | None = None,
                 settings: ForwardSettings = ForwardSettings(),
                 limits: RelayLimits = RelayLimits(),
                 cache: BlockCache | None = None,
                 interceptors: Sequence[Interceptor] = (),
                 direction: str = "outbound", own_service: str = "",
                 clock: Clock = MonotonicClock(),
                 methods: Methods = lambda path: None) -> None:
        self.router = router
        self.local = local
        self.settings = settings
        self.limits = limits
        self.cache = cache if cache is not None else BlockCache()
        self.clock = clock
        self.user_interceptors = tuple(interceptors)
        self.direction = direction
        self.own_service = own_service  # inbound: the service whose calls it takes
        self.methods = methods  # a method path -> its description (idempotency: retries)
        self.config = MeshConfig()
        self.rng = random.Random()
        self._chains: dict[str, Chain | None] = {}
        self._subsets: dict[tuple[str, str], Target] = {}
        self._timeouts: dict[float, tuple[str, bytes]] = {}
        self.kept = Kept(clock)  # the rules' retry budgets and latency windows
        self.flusher = Flusher()
        self.upstreams = Upstreams(self.flusher, clock, limits=limits, cache=self.cache)
        self.downstreams: set[Downstream] = set()
        self.in_flight = 0  # calls not yet ended
        self.held = 0  # bytes of request held by calls until they commit (call.py)
        self.observers: list[Observer] = []  # each reads every call's CallRecord
        # Attempts sent again, by (service, why: the failed attempt's status name,
        # "per_try_timeout", or "refused" for one no app saw), and hedges sent, by service
        # (read by grpcmesh/telemetry; counted where they are sent, off the common path)
        self.retries: collections.Counter[tuple[str, str]] = collections.Counter()
        self.hedges: collections.Counter[str] = collections.Counter()
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
        """A client's new stream. The call is made now, and read, routed and sent on at the end
        of the read that brought it (begin, from Downstream.after_read): a stream its client
        resets in the same read costs no more than this, and no app or interceptor sees it
        (rapid reset, CVE-2023-44487). What it sends meanwhile waits in call.early."""
        leg = Leg(down, sid, None)
        call = leg.call = Call(self, leg)
        down.streams[sid] = leg
        self.in_flight += 1
        if end:
            leg.ended_in = True
            call.end_headers = True
        call.early = bytearray()
        down.deferred.append((call, headers, block, block is not None and down.fresh))
        down.fresh = False

    def begin(self, call: Call, headers: Headers, block: bytes | None, fresh: bool) -> None:
        """The call's request headers are read, checked and routed; its chain runs; it goes
        to an endpoint. (fresh: block was decoded, not found in the cache: it is kept once the
        request is accepted.)"""
        down = call.down.peer
        assert isinstance(down, Downstream)
        settings = self.settings
        try:
            request = read_request(headers, settings.max_metadata_bytes,
                                   self.limits.max_path_bytes)
        except Refused as refused:
            call.method = clip(headers_path(headers))
            call.reply_error(refused.code, refused.message, refused.reason, refused.http)
            return
        path = call.method = request.path
        call.request = headers  # (for the end record; route_to sets what goes upstream)
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
        if fresh:
            assert block is not None
            down.keep(block, headers)
        call.limit = limit = settings.max_message_bytes
        call.req_framing = framing = f.MessageFraming(limit)
        call.resp_framing = f.MessageFraming(limit)
        early = call.early
        if early:  # request DATA of the same read: its messages are checked now
            size = framing.feed(bytes(early))
            if size is not None:
                call.too_big(True, size)
                return
        if override is not None:
            headers = replaced(headers, SERVICE_HEADER, None)
            block = None
        chain = self.chain_for(target)
        if chain is None:
            self.route_to(call, target, block, headers)
            return
        call.chain = chain
        call.view = CallView(path, headers, seconds, down.caller, service, self.direction)
        self._intercept(call, 0, target, block, headers, seconds)

    def _set_deadline(self, call: Call, seconds: float) -> None:
        call.deadline = deadline = self.clock.now() + seconds
        self.deadlines.add(call, deadline)

