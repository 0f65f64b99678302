"""The relay's connections to endpoints: one HTTP/2 connection per address (Upstreams, the
pool), each mapping its stream ids to calls and handing them what the endpoint sends."""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Mapping
from typing import Any

from grpcmesh.clock import Clock
from grpcmesh.relay import frames as f
from grpcmesh.relay.blocks import BlockCache
from grpcmesh.relay.dial import Dial, check_h2
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.peer import Flusher, Leg, Peer

log = logging.getLogger(__name__)


class Upstream(Peer):
    """The relay's connection to one endpoint address."""

    __slots__ = ("address", "draining", "next_id", "pool")

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

    def open_stream(self, call: Any) -> Leg:
        leg = Leg(self, self.next_id, call)
        self.next_id += 2
        self.streams[leg.sid] = leg
        return leg

    def on_headers(self, sid: int, block: bytes, end: bool) -> None:
        leg = self.streams.get(sid)
        chain = leg.call.chain if leg is not None else None
        # Response headers are decoded only for interceptors that asked to see them.
        headers, verbatim = self.read_block(
            block, need=end or (chain is not None and chain.wants_responses))
        if leg is None:
            return
        if leg.ended_in:
            raise f.ProtocolError(f"HEADERS on stream {sid} after its END_STREAM",
                                  f.STREAM_CLOSED)
        if end:
            leg.ended_in = True
            assert headers is not None
            if self.fresh:
                self.keep(block, headers)
        leg.call.response_headers(block, headers, verbatim, end)
        if end and leg.ended_out:
            self.forget(leg)

    def on_data(self, leg: Leg, payload: bytes, end: bool, length: int) -> None:
        leg.call.response_data(payload, end, length)

    def on_reset(self, leg: Leg, code: int, finished: bool, answered: bool) -> None:
        leg.call.upstream_reset(code, finished)

    def on_goaway(self, last: int, code: int, debug: bytes) -> None:
        """The endpoint is going away: no new streams here, and the ones it never saw are
        refused, which a gRPC client retries transparently."""
        if code != f.NO_ERROR:
            log.info("upstream %s sent GOAWAY %d: %s", self.address, code,
                     debug.decode(errors="replace"))
        self.draining = True
        self.pool.retire(self)
        for leg in [leg for sid, leg in self.streams.items() if sid > last]:
            self.reset(leg, f.CANCEL)
            leg.call.upstream_refused()
        if not self.streams:
            self.close()

    def stream_closed(self, leg: Leg) -> None:
        if self.draining and not self.streams:
            self.close()

    def lost(self, legs: list[Leg]) -> None:
        self.pool.retire(self)
        for leg in legs:
            leg.call.upstream_lost(leg.ended_in, self.address)


class Upstreams:
    """One HTTP/2 connection per endpoint address, opened on demand; a failed connect makes
    the address wait (200 ms, doubling up to 2 s) before it is tried again, as grpc channels
    back off, so that every call does not pay for a dead endpoint; `failure` says why it failed.

    An address in `dials` (an external service's endpoint: grpcmesh/external/table.py, which
    keeps that dict up to date) is connected as its Dial says, with TLS if it has a context;
    any other address is HOST:PORT in plaintext."""

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
        # address -> (retry at, backoff, why)
        self._failed: dict[str, tuple[float, float, str]] = {}
        self.dials: Mapping[str, Dial] = {}
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

    def warm(self, address: str) -> None:
        """Start connecting to address, if it is not connected, connecting or waiting after a
        failure, for calls that come later (a hedge does not wait for it)."""
        failed = self._failed.get(address)
        if address in self._current or address in self._connecting or (
                failed is not None and self.clock.now() < failed[0]):
            return
        task = self._connecting[address] = asyncio.get_running_loop().create_task(
            self._open(address))
        task.add_done_callback(_quiet)

    def failure(self, address: str) -> str | None:
        """Why the last connect to address failed, while it waits to be tried again."""
        failed = self._failed.get(address)
        return failed[2] if failed is not None else None

    async def _open(self, address: str) -> Upstream | None:
        dial = self.dials.get(address)
        loop = asyncio.get_running_loop()
        conn: Upstream | None = None
        try:
            if dial is None:
                host, _, port = address.rpartition(":")
                connecting = loop.create_connection(lambda: Upstream(address, self),
                                                    host.strip("[]"), int(port))
            else:
                connecting = loop.create_connection(
                    lambda: Upstream(address, self), dial.host, dial.port, ssl=dial.tls,
                    server_hostname=dial.server_name if dial.tls is not None else None)
            transport, opened = await asyncio.wait_for(connecting, self.handshake_timeout)
            conn = opened
            self._all.add(conn)
            if dial is not None and dial.tls is not None:
                check_h2(transport.get_extra_info("ssl_object"))
            if not await asyncio.wait_for(conn.handshake(), self.handshake_timeout):
                raise ConnectionError("closed before its HTTP/2 SETTINGS")
        except (OSError, TimeoutError, ValueError) as err:
            if conn is not None:
                conn.close()
            backoff = min(2.0, self._failed.get(address, (0.0, 0.1, ""))[1] * 2)
            self._failed[address] = (self.clock.now() + backoff, backoff, _why(err))
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


def _quiet(task: asyncio.Task[Upstream | None]) -> None:
    if not task.cancelled():
        task.exception()  # (_open catches what connecting raises; nothing is lost here)


def _why(err: Exception) -> str:
    """A connect error as a call's message shows it: TLS errors as TLS, with the reason
    (such as "certificate verify failed: unable to get local issuer certificate")."""
    if isinstance(err, ssl.SSLError):
        return f"TLS: {err}"
    if isinstance(err, TimeoutError):
        return "timed out"
    return (err.strerror if isinstance(err, OSError) and err.strerror else str(err)) or repr(err)
