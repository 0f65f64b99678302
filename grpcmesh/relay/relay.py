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
import socket
from collections.abc import Callable
from typing import Any

import grpc

from grpcmesh.balance.endpoint import CallHandle, Endpoint
from grpcmesh.clock import Clock, MonotonicClock
from grpcmesh.relay import frames as f
from grpcmesh.relay.blocks import BlockCache
from grpcmesh.relay.limits import Abuse, RelayLimits, ResetGuard, clip
from grpcmesh.relay.peer import Flusher, Headers, Leg, Peer, call_soon_flushed
from grpcmesh.relay.request import Refused, read_request
from grpcmesh.relay.settings import PUSHBACK, ForwardSettings
from grpcmesh.routing import SERVICE_HEADER, RouteError, Target
from grpcmesh.server_util import check_bindable

log = logging.getLogger(__name__)

Router = Callable[[str, str | None], Target]
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_SC = grpc.StatusCode
# gRPC's mapping for a response without grpc-status (PROTOCOL-HTTP2.md, "HTTP to gRPC Status").
_HTTP_STATUS = {"400": _SC.INTERNAL, "401": _SC.UNAUTHENTICATED, "403": _SC.PERMISSION_DENIED,
                "404": _SC.UNIMPLEMENTED, "429": _SC.UNAVAILABLE, "502": _SC.UNAVAILABLE,
                "503": _SC.UNAVAILABLE, "504": _SC.UNAVAILABLE}
_DRAIN_PING = b"grpcmesh"
# A client that has not answered the drain's PING by then (a vanished peer, a half-open TCP
# connection) gets the final GOAWAY anyway, so it cannot hold a shutdown for the whole grace.
DRAIN_PING_TIMEOUT = 1.0
SWEEP_INTERVAL = 1.0  # how often timeouts are checked (Relay.sweep)
_MAX_MESSAGE = 1024  # characters of grpc-message in the proxy's own answers


def headers_path(headers: Headers) -> str:
    return next((v for k, v in headers if k == ":path"), "")


def status_of(headers: Headers) -> tuple[grpc.StatusCode, int | None]:
    """The status a trailer block carries, and its grpc-retry-pushback-ms if any."""
    code: grpc.StatusCode | None = None
    http = "200"
    pushback = None
    for key, value in headers:
        if key == "grpc-status":
            code = _CODES.get(int(value) if value.isdigit() else -1, _SC.UNKNOWN)
        elif key == ":status":
            http = value
        elif key == PUSHBACK:
            pushback = int(value) if value.isdigit() else None
    if code is None:
        code = _HTTP_STATUS.get(http, _SC.UNKNOWN) if http != "200" else _SC.UNKNOWN
    return code, pushback


class Call:
    """One gRPC call: the client's stream and, once an endpoint is picked, the upstream one."""

    __slots__ = ("born", "closed", "deadline", "down", "early", "end_headers", "handle",
                 "headers_out", "limit", "method", "relay", "req_framing", "resp_framing", "task",
                 "up")

    def __init__(self, relay: Relay, down: Downstream, sid: int) -> None:
        self.relay = relay
        self.born = relay.clock.now()
        self.down = Leg(down, sid, self)
        self.up: Leg | None = None
        self.method = ""
        self.handle: CallHandle | None = None
        self.deadline: float | None = None
        self.early: list[tuple[bytes | Headers, bool, int]] | None = None  # before `up` exists
        self.end_headers = False  # the request had no body
        self.headers_out = False  # response headers were sent to the client
        self.closed = False  # the client's side is over: nothing more to do upstream
        self.req_framing: f.MessageFraming | None = None
        self.resp_framing: f.MessageFraming | None = None
        self.task: asyncio.Task[None] | None = None
        self.limit = 0

    def finish(self, code: grpc.StatusCode | None, pushback: int | None = None) -> None:
        if self.handle is not None and not self.handle.finished:
            self.handle.finish(self.relay.clock.now(), code, pushback)

    def reply_error(self, code: grpc.StatusCode, message: str, http: int = 200) -> None:
        """The proxy's own answer; the upstream stream, if any, is cancelled."""
        self.cancel_upstream()
        down = self.down
        peer = down.peer
        if down.ended_out:
            return
        status = [("grpc-status", str(code.value[0])),
                  ("grpc-message", f.encode_message(message[:_MAX_MESSAGE]))]
        if not self.headers_out:
            status = [(":status", str(http)), ("content-type", "application/grpc"), *status]
        peer.reset_pending(down)
        peer.send_headers(down, peer.encode(status), True)
        if not down.ended_in:  # tell the client to stop sending
            peer.reset(down, f.NO_ERROR)
        self.closed = True

    def cancel_upstream(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        early, self.early = self.early, None
        if early:  # request DATA that waited for an upstream: dropped, so credited back
            down = self.down
            for _, _, length in early:
                down.peer.credit(down, length)
        up = self.up
        if up is not None and not (up.ended_in and up.ended_out):
            up.peer.reset(up, f.CANCEL)

    def client_gone(self) -> None:
        """The client reset the stream or closed its connection."""
        self.closed = True
        self.cancel_upstream()
        expired = self.deadline is not None and self.relay.clock.now() >= self.deadline
        self.finish(_SC.DEADLINE_EXCEEDED if expired else None)

    def too_big(self, request: bool, size: int) -> None:
        what = "request message to" if request else "response message of"
        self.finish(None if request else _SC.RESOURCE_EXHAUSTED)
        self.reply_error(_SC.RESOURCE_EXHAUSTED, f"{what} {self.method} is {size} bytes; the "
                                                 f"proxy's limit is {self.limit}")


class Downstream(Peer):
    """A client's connection to the relay's listener."""

    expect_preface = True

    def __init__(self, relay: Relay) -> None:
        super().__init__(relay.flusher, relay.limits, relay.cache, relay.clock)
        self.relay = relay
        self.last_sid = 0
        self.refuse_above: int | None = None  # after our final GOAWAY
        self.resets = ResetGuard(relay.limits)
        self.refused = 0  # streams refused over max_concurrent_streams after our SETTINGS
        self.born = relay.clock.now()
        self.idle_since: float | None = None  # see Relay.sweep
        self.seen_opened = 0
        # Calls opened by this read, routed at its end: (call, target, block, headers)
        self.deferred: list[tuple[Call, Target, bytes | None, Headers]] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        relay = self.relay
        if len(relay.downstreams) >= self.limits.max_connections:
            relay.over_capacity()
            self.closing = True
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        relay.downstreams.add(self)
        self.queue(self.hello([*self.settings(),
                               (f.MAX_CONCURRENT_STREAMS, self.limits.max_concurrent_streams)]))
        if self.relay.draining:
            self.drain()
        self.flusher.flush()

    def last_stream(self) -> int:
        return self.last_sid

    def idle(self, sid: int) -> bool:
        return sid % 2 == 0 or sid > self.last_sid

    def on_headers(self, sid: int, block: bytes, end: bool) -> None:
        leg = self.streams.get(sid)
        if leg is not None:  # trailers from the client: HTTP/2 allows them, gRPC sends none
            # Decoded, though rare, so that a block that breaks HPACK ends this connection
            # rather than being forwarded to an upstream connection that other clients share.
            headers, verbatim = self.read_block(block)
            assert headers is not None
            if leg.ended_in:
                raise f.ProtocolError(f"HEADERS on stream {sid} after its END_STREAM",
                                      f.STREAM_CLOSED)
            call = leg.call
            up = call.up
            if end:
                leg.ended_in = True
            if up is not None:
                if not verbatim:
                    block = up.peer.encode(headers)
                up.peer.send_headers(up, block, end)
            elif call.early is not None:
                call.early.append((headers, end, 0))
            if end and leg.ended_out:
                self.forget(leg)
            return
        if sid % 2 == 0:
            raise f.ProtocolError(f"a client opened stream {sid}, an even number")
        if sid <= self.last_sid:  # a stream that is over: its frames are ignored (RFC 9113 5.1)
            self.read_block(block, need=False)
            return
        self.last_sid = sid
        headers, verbatim = self.read_block(block)
        assert headers is not None
        if self.refuse_above is not None and sid > self.refuse_above:
            self.queue_control(f.rst_stream(sid, f.REFUSED_STREAM))
            return
        limit = self.limits.max_concurrent_streams
        if len(self.streams) >= limit:
            self.queue_control(f.rst_stream(sid, f.REFUSED_STREAM))
            if self.acked:  # it knew the limit: a client that ignores it is not let go on
                self.refused += 1
                if self.refused > limit:
                    raise Abuse(f"over {limit} streams refused: the client ignores "
                                f"SETTINGS_MAX_CONCURRENT_STREAMS={limit}")
            return
        self.resets.open()
        self.relay.open(self, sid, headers, block if verbatim else None, end)

    def on_data(self, leg: Leg, payload: bytes, end: bool, length: int) -> None:
        call: Call = leg.call
        framing = call.req_framing
        if framing is not None:
            size = framing.feed(payload)
            if size is not None:
                self.credit(leg, length)
                call.too_big(True, size)
                return
        up = call.up
        if up is not None:
            up.peer.send_data(up, payload, end, leg, length)
        elif call.early is not None:
            call.early.append((payload, end, length))
        else:
            self.credit(leg, length)

    def on_reset(self, leg: Leg, code: int, finished: bool, answered: bool) -> None:
        call: Call = leg.call
        call.client_gone()
        if not answered:
            self.resets.reset(self.relay.clock.now() - call.born)  # Abuse: rapid reset

    def stream_closed(self, leg: Leg) -> None:
        self.relay.call_done()
        if self.refuse_above is not None and not self.streams:
            self.close()

    def note_close(self, why: str) -> None:
        self.relay.closed_why[why.partition(":")[0]] += 1  # logged once a second (sweep)

    def after_read(self) -> None:
        deferred, self.deferred = self.deferred, []
        route_to = self.relay.route_to
        for call, target, block, headers in deferred:
            route_to(call, target, block, headers)

    def lost(self, legs: list[Leg]) -> None:
        relay = self.relay
        self.deferred.clear()
        relay.downstreams.discard(self)
        for leg in legs:
            leg.call.client_gone()
            relay.call_done()
        if relay.all_gone is not None and not relay.downstreams:
            relay.all_gone.set()

    def drain(self) -> None:
        """Graceful close: GOAWAY announcing that no new streams are taken, a PING, and on its
        answer (or after DRAIN_PING_TIMEOUT without one) a final GOAWAY with the last stream
        taken (RFC 9113 6.8). The connection closes once its streams are over."""
        self.queue(f.goaway(f.MAX_WINDOW))
        self.queue(f.frame(f.PING, 0, 0, _DRAIN_PING))
        asyncio.get_running_loop().call_later(DRAIN_PING_TIMEOUT, call_soon_flushed,
                                              self.flusher, self.final_goaway)

    def on_ping_ack(self, payload: bytes) -> None:
        if payload == _DRAIN_PING:
            self.final_goaway()

    def final_goaway(self) -> None:
        if self.refuse_above is None and not self.gone:
            self.refuse_above = self.last_sid
            self.queue(f.goaway(self.last_sid))
            if not self.streams:
                self.close()


class Upstream(Peer):
    """The relay's connection to one endpoint address."""

    def __init__(self, address: str, pool: Upstreams) -> None:
        super().__init__(pool.flusher, pool.limits, pool.cache, pool.clock)
        self.address = address
        self.pool = pool
        self.next_id = 1
        self.draining = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.queue(f.PREFACE + self.hello([*self.settings(), (f.ENABLE_PUSH, 0)]))
        self.flusher.flush()

    def idle(self, sid: int) -> bool:
        return sid % 2 == 0 or sid >= self.next_id

    def usable(self) -> bool:
        return (not self.draining and not self.gone and self.next_id < f.MAX_WINDOW
                and (self.peer_max_streams is None or len(self.streams) < self.peer_max_streams))

    def full(self) -> bool:
        """Up, but at the upstream's SETTINGS_MAX_CONCURRENT_STREAMS (a limit of 0 is not
        "full": such an endpoint takes no calls at all)."""
        limit = self.peer_max_streams
        return (not self.draining and not self.gone and limit is not None and limit > 0
                and len(self.streams) >= limit)

    def open_stream(self, call: Call) -> Leg:
        leg = Leg(self, self.next_id, call)
        self.next_id += 2
        self.streams[leg.sid] = leg
        return leg

    def on_headers(self, sid: int, block: bytes, end: bool) -> None:
        headers, verbatim = self.read_block(block, need=end)
        leg = self.streams.get(sid)
        if leg is None:
            return
        call: Call = leg.call
        down = call.down
        if leg.ended_in:
            raise f.ProtocolError(f"HEADERS on stream {sid} after its END_STREAM",
                                  f.STREAM_CLOSED)
        if end:
            leg.ended_in = True
            assert headers is not None
            self.keep(block, headers)
            code, pushback = status_of(headers)
            call.finish(code, pushback)
        else:
            call.headers_out = True
        peer = down.peer
        if not verbatim:
            assert headers is not None  # a block that is not forwarded as it is was decoded
            block = peer.encode(headers)
        peer.send_headers(down, block, end)
        if end and leg.ended_out:
            self.forget(leg)

    def on_data(self, leg: Leg, payload: bytes, end: bool, length: int) -> None:
        call: Call = leg.call
        handle = call.handle
        if handle is not None and handle.first_response_at is None:
            handle.first_response(call.relay.clock.now())
        framing = call.resp_framing
        if framing is not None:
            size = framing.feed(payload)
            if size is not None:
                self.credit(leg, length)
                call.too_big(False, size)
                return
        if end:  # a response without trailers: gRPC reads it as UNKNOWN, and so does the pick
            call.finish(_SC.UNKNOWN)
        down = call.down
        down.peer.send_data(down, payload, end, leg, length)

    def on_reset(self, leg: Leg, code: int, finished: bool, answered: bool) -> None:
        if finished:
            # The response is complete (trailers received): this only says "stop sending the
            # request" (RFC 9113 8.1), which gRPC servers do when a client has not half-closed.
            # What waits for the client's window is still delivered, then the client is told.
            down = leg.call.down
            down.peer.end_then_reset(down)
            return
        call: Call = leg.call
        call.finish(_SC.UNAVAILABLE if code == f.REFUSED_STREAM
                    else _SC.CANCELLED if code == f.CANCEL else _SC.INTERNAL)
        down = call.down
        if not (down.ended_in and down.ended_out):
            down.peer.reset(down, code)

    def on_goaway(self, last: int, code: int, debug: bytes) -> None:
        """The endpoint is going away: no new streams here, and the ones it never saw are
        refused, which a gRPC client retries transparently."""
        if code != f.NO_ERROR:
            log.info("upstream %s sent GOAWAY %d: %s", self.address, code,
                     debug.decode(errors="replace"))
        self.draining = True
        self.pool.retire(self)
        for leg in [leg for sid, leg in self.streams.items() if sid > last]:
            call: Call = leg.call
            self.reset(leg, f.CANCEL)
            call.finish(None)
            down = call.down
            if not (down.ended_in and down.ended_out):
                down.peer.reset(down, f.REFUSED_STREAM)
        if not self.streams:
            self.close()

    def stream_closed(self, leg: Leg) -> None:
        if self.draining and not self.streams:
            self.close()

    def lost(self, legs: list[Leg]) -> None:
        self.pool.retire(self)
        for leg in legs:
            if leg.ended_in:  # its response is complete, and may still be on its way out
                down = leg.call.down
                down.peer.end_then_reset(down)
                continue
            call: Call = leg.call
            call.finish(_SC.UNAVAILABLE)
            if not call.closed:
                call.up = None
                call.reply_error(_SC.UNAVAILABLE, f"the connection to {self.address} was lost "
                                                  f"while {call.method} was in flight")


class Upstreams:
    """One HTTP/2 connection per endpoint address, opened on demand; a failed connect makes
    the address wait (200 ms, doubling up to 2 s) before it is tried again, as grpc channels
    back off, so that every call does not pay for a dead endpoint."""

    def __init__(self, flusher: Flusher, clock: Clock, handshake_timeout: float = 10.0,
                 limits: RelayLimits = RelayLimits(), cache: BlockCache | None = None) -> None:
        self.flusher = flusher
        self.clock = clock
        self.limits = limits
        self.cache = cache if cache is not None else BlockCache()
        self.handshake_timeout = handshake_timeout
        self._current: dict[str, Upstream] = {}
        self._all: set[Upstream] = set()
        self._connecting: dict[str, asyncio.Task[Upstream | None]] = {}
        self._failed: dict[str, tuple[float, float]] = {}  # address -> (retry at, backoff)
        self._dropped: set[str] = set()  # discarded while a connect to it was under way

    def ready(self, address: str) -> Upstream | None:
        conn = self._current.get(address)
        return conn if conn is not None and conn.usable() else None

    async def connect(self, address: str, timeout: float) -> Upstream | None:
        """A connection to address that can take a stream now, or None: refused, timed out,
        or address was discarded meanwhile."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while True:
            conn = self.ready(address)
            if conn is not None:
                return conn
            failed = self._failed.get(address)
            if failed is not None and self.clock.now() < failed[0]:
                return None
            task = self._connecting.get(address)
            if task is None:
                task = self._connecting[address] = loop.create_task(self._open(address))
            try:
                conn = await asyncio.wait_for(asyncio.shield(task), give_up - loop.time())
            except TimeoutError:
                return None
            if conn is None:
                return None
            # Every waiter gets the new connection; it may have filled up (its
            # SETTINGS_MAX_CONCURRENT_STREAMS), gone away or closed before this one's turn.
            if conn.usable():
                return conn
            if not conn.full() or loop.time() >= give_up:
                return None  # gone or going away: this endpoint refuses, for now

    async def _open(self, address: str) -> Upstream | None:
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        conn: Upstream | None = None
        try:
            _, opened = await asyncio.wait_for(loop.create_connection(
                lambda: Upstream(address, self), host.strip("[]"), int(port)),
                self.handshake_timeout)
            conn = opened
            self._all.add(conn)
            if not await asyncio.wait_for(conn.handshake(), self.handshake_timeout):
                raise ConnectionError("closed before its HTTP/2 SETTINGS")
        except (OSError, TimeoutError, ValueError) as err:
            if conn is not None:
                conn.close()
            backoff = min(2.0, self._failed.get(address, (0.0, 0.1))[1] * 2)
            self._failed[address] = (self.clock.now() + backoff, backoff)
            log.debug("cannot connect to %s: %r (retry in %.1fs)", address, err, backoff)
            return None
        finally:
            self._connecting.pop(address, None)
            dropped = address in self._dropped
            self._dropped.discard(address)
        self._failed.pop(address, None)
        if dropped:  # discarded while connecting: nothing may use it
            opened.close()
            return None
        previous = self._current.get(address)
        if previous is not None:  # full (SETTINGS_MAX_CONCURRENT_STREAMS): it drains
            previous.draining = True
            if not previous.streams:
                previous.close()
        self._current[address] = opened
        return opened

    def connections(self) -> list[Upstream]:
        return list(self._all)

    def retire(self, conn: Upstream) -> None:
        """conn takes no new streams (GOAWAY, lost, or replaced)."""
        if self._current.get(conn.address) is conn:
            del self._current[conn.address]
        if conn.gone:
            self._all.discard(conn)

    def discard(self, address: str, grace: float = 10.0) -> None:
        """Stop using address: its connection closes once its streams end (or after grace)."""
        self._failed.pop(address, None)
        if address in self._connecting:
            self._dropped.add(address)
        conn = self._current.pop(address, None)
        if conn is not None:
            conn.draining = True
            if not conn.streams:
                conn.close()
            else:
                asyncio.get_running_loop().call_later(grace, conn.close)

    def close(self) -> None:
        for task in self._connecting.values():
            task.cancel()
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._current.clear()


class Relay:
    """A listener whose calls are relayed to the endpoints router picks."""

    def __init__(self, router: Router, *, local: tuple[tuple[str, ...], Target] | None = None,
                 settings: ForwardSettings = ForwardSettings(),
                 limits: RelayLimits = RelayLimits(),
                 cache: BlockCache | None = None,
                 clock: Clock = MonotonicClock()) -> None:
        self.router = router
        self.local = local
        self.settings = settings
        self.limits = limits
        self.cache = cache if cache is not None else BlockCache()
        self.clock = clock
        self.flusher = Flusher()
        self.upstreams = Upstreams(self.flusher, clock, limits=limits, cache=self.cache)
        self.downstreams: set[Downstream] = set()
        self.in_flight = 0
        self.draining = False
        self.all_gone: asyncio.Event | None = None  # set when draining and every client is gone
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
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
        self.flusher.flush()

    def discard(self, address: str) -> None:
        """No endpoint uses address any more."""
        self.upstreams.discard(address)

    def call_done(self) -> None:
        self.in_flight -= 1

    # -- calls --------------------------------------------------------------------------------

    def open(self, down: Downstream, sid: int, headers: Headers, block: bytes | None,
             end: bool) -> None:
        call = Call(self, down, sid)
        leg = call.down
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
            call.reply_error(refused.code, refused.message, refused.http)
            return
        path = call.method = request.path
        override = request.override
        if request.timeout is not None:
            try:
                seconds = f.parse_timeout(request.timeout)
            except ValueError:
                seconds = None  # the upstream judges it
            if seconds is not None:
                if seconds <= 0:
                    call.reply_error(_SC.DEADLINE_EXCEEDED,
                                     f"deadline expired before {path} was forwarded")
                    return
                call.deadline = self.clock.now() + seconds
        local = self.local
        if local is not None and override is None and path.startswith(local[0]):
            target = local[1]
        else:
            try:
                target = self.router(path, override)
            except RouteError as err:
                call.reply_error(err.code, err.message)
                return
        if block is not None:
            down.keep(block, headers)
        call.limit = settings.max_message_bytes
        call.req_framing = f.MessageFraming(call.limit)
        call.resp_framing = f.MessageFraming(call.limit)
        if override is not None:
            headers = [h for h in headers if h[0] != SERVICE_HEADER]
            block = None
        # The call goes upstream at the end of the read that brought it (Downstream.after_read,
        # just before the flush that would send it anyway): a reset in the same read ends it in
        # the relay, and no app sees it (rapid reset, CVE-2023-44487).
        call.early = []
        down.deferred.append((call, target, block, headers))

    def route_to(self, call: Call, target: Target, block: bytes | None, headers: Headers
                 ) -> None:
        if call.closed:  # its client reset it in the same read
            return
        endpoint = target.pick()
        up = self.upstreams.ready(endpoint.address) if endpoint is not None else None
        if up is not None and endpoint is not None:
            self._start(call, up, endpoint, block, headers)
            return
        if call.early is None:
            call.early = []
        call.task = asyncio.get_running_loop().create_task(
            self._connect_then_start(call, target, endpoint, block, headers))

    def _start(self, call: Call, up: Upstream, endpoint: Endpoint, block: bytes | None,
               headers: Headers) -> None:
        if block is None:
            block = up.encode(headers)
        leg = up.open_stream(call)
        call.up = leg
        leg.other = call.down
        call.down.other = leg
        call.handle = endpoint.start(self.clock.now())
        up.send_headers(leg, block, call.end_headers)
        early, call.early = call.early, None
        for item, end, length in early or ():
            if isinstance(item, bytes):
                up.send_data(leg, item, end, call.down, length)
            else:
                up.send_headers(leg, up.encode(item), end)

    async def _connect_then_start(self, call: Call, target: Target, endpoint: Endpoint | None,
                                  block: bytes | None, headers: Headers) -> None:
        """The slow path: the picked endpoint has no connection yet (or refuses one)."""
        try:
            refused: list[Endpoint] = []
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
                        headers = [(k, left if k == "grpc-timeout" else v) for k, v in headers]
                        block = None
                    self._start(call, up, endpoint, block, headers)
                    return
                refused.append(endpoint)
                endpoint = target.pick(refused)
            if refused:
                if call.deadline is not None and self.clock.now() >= call.deadline:
                    call.reply_error(_SC.DEADLINE_EXCEEDED,
                                     f"deadline expired while connecting to {target.name}")
                    return
                tried = ", ".join(e.address for e in refused)
                message = f"no instance of {target.name} accepted a connection (tried {tried})"
            else:
                message = f"no healthy instance of {target.name} ({target.describe()})"
            call.reply_error(_SC.UNAVAILABLE, f"{message} for {call.method}")
        finally:
            self.flusher.flush()
