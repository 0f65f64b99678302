"""The byte pump: one catch-all handler that forwards every call upstream as raw bytes.

A call passes, outermost first: accept (this handler) -> deadline check -> route (method path or
grpcmesh-service header to a Target) -> pick an endpoint whose connection is up (a refused
connection means the call never left, so the next endpoint is tried) -> forward (request
messages, response headers, messages, trailers, status and details, unchanged) -> record the
latency to the first response and the outcome on the endpoint (its completion handle), which
is what the balancer learns from. Messages are never deserialized.

A method whose kind is known (from the apps' reflection, published in the registry) is forwarded
with a handler and an upstream call of that kind. Only unknown methods take the generic
stream-stream path, which carries all four kinds on the wire (a unary handler registered for a
streaming method would hang). Known kinds matter for correctness, not only speed: grpcio's
streaming client call can replace the status an upstream sent with INTERNAL "Internal error from
Core" when it writes a request after the upstream already answered (grpc/grpc#36066), which a
fast rejection of a unary call would otherwise hit a few percent of the time.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from grpcmesh.balance.endpoint import CallHandle, Endpoint
from grpcmesh.clock import Clock, MonotonicClock
from grpcmesh.proxy.channels import Channels, connected
from grpcmesh.routing import SERVICE_HEADER, RouteError, Target
from grpcmesh.server_util import bind, server_options

log = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str | bytes]]
Router = Callable[[str, str | None], Target]
Kind = tuple[bool, bool]  # (client streaming, server streaming)
KindOf = Callable[[str], "Kind | None"]
STREAMING: Kind = (True, True)  # for methods of unknown kind

_HANDLERS = {(False, False): grpc.unary_unary_rpc_method_handler,
             (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler,
             (True, True): grpc.stream_stream_rpc_method_handler}
_CALLS = {(False, False): "unary_unary", (False, True): "unary_stream",
          (True, False): "stream_unary", (True, True): "stream_stream"}

_OK = grpc.StatusCode.OK
MAX_CACHED_HANDLERS = 10_000
PUSHBACK = "grpc-retry-pushback-ms"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ForwardSettings:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # grpcio enforces its own metadata limit only after the client acknowledged SETTINGS; HEADERS
    # sent earlier got through with 300 KB. The proxy checks every call itself (HPACK accounting:
    # name + value + 32 bytes per entry), at grpcio's hard limit.
    max_metadata_bytes: int = 16 * 1024
    connect_timeout: float = 1.0  # how long a call waits for a new upstream connection


class Forwarder(grpc.GenericRpcHandler):
    """Catch-all handler: route each call and forward it upstream."""

    def __init__(self, router: Router, channels: Channels, *,
                 kinds: KindOf = lambda method: None,
                 local: grpc.GenericRpcHandler | None = None,
                 local_prefixes: tuple[str, ...] = (),
                 settings: ForwardSettings = ForwardSettings(),
                 clock: Clock = MonotonicClock()) -> None:
        self._router = router
        self._kinds = kinds
        self._clock = clock
        self._channels = channels
        self._local = local
        self._local_prefixes = local_prefixes
        self._settings = settings
        self._handlers: dict[tuple[str, Kind], grpc.RpcMethodHandler] = {}
        self.in_flight = 0

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        if self._local is not None and method.startswith(self._local_prefixes) and not any(
                key == SERVICE_HEADER for key, _ in details.invocation_metadata):
            return self._local.service(details)
        kind = self._kinds(method) or STREAMING
        handler = self._handlers.get((method, kind))
        if handler is None:
            handler = self._handler(method, kind)
            if len(self._handlers) < MAX_CACHED_HANDLERS:  # method names come from clients
                self._handlers[(method, kind)] = handler
        return handler

    def _handler(self, method: str, kind: Kind) -> grpc.RpcMethodHandler:
        """The handler for one method, built once and reused for every call to it."""
        if kind[1]:
            stream = self._forward_stream

            async def handle(request: Any, context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[bytes]:
                async for message in stream(method, kind, request, context):
                    yield message
            return _HANDLERS[kind](handle)
        return _HANDLERS[kind](functools.partial(self._forward_unary, method, kind))

    async def _prepare(self, method: str, kind: Kind, context: grpc.aio.ServicerContext
                       ) -> tuple[Endpoint, Any, list[tuple[str, str | bytes]]]:
        """Check the call, route it and pick a connected endpoint (or abort, saying why)."""
        override = None
        size = 0
        forwarded: list[tuple[str, str | bytes]] = []
        for key, value in context.invocation_metadata() or ():
            size += len(key) + len(value) + 32
            if key == SERVICE_HEADER:
                override = value if isinstance(value, str) else value.decode()
            elif key != "user-agent":  # grpcio sets its own on the upstream call
                forwarded.append((key, value))
        if size > self._settings.max_metadata_bytes:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"request metadata of {method} is {size} bytes; the proxy's "
                                f"limit is {self._settings.max_metadata_bytes}")
        timeout = context.time_remaining()
        if timeout is not None and timeout <= 0:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"deadline expired before {method} was forwarded")
        try:
            target = self._router(method, override)
        except RouteError as err:
            await context.abort(err.code, err.message)
        endpoint = target.pick()
        # The usual case, decided without a trip through the event loop: a connected endpoint.
        if endpoint is None or not self._channels.ready(endpoint.address):
            endpoint = await self._pick(target, method, timeout, context)
        return endpoint, self._channels.call(endpoint.address, method, _CALLS[kind]), forwarded

    async def _forward_unary(self, method: str, kind: Kind, request: Any,
                             context: grpc.aio.ServicerContext) -> bytes | None:
        """Forward a call with one response (unary or client streaming). Awaiting the response
        before the headers saves one trip through the event loop per call."""
        endpoint, upstream, forwarded = await self._prepare(method, kind, context)
        clock = self._clock
        handle = endpoint.start(clock.now())
        call = upstream(request, timeout=context.time_remaining(), metadata=forwarded)
        self.in_flight += 1
        response = None  # stays None when the upstream answered with an error status
        try:
            response = await call
            handle.first_response(clock.now())
        except grpc.aio.AioRpcError:
            pass  # the status, details and trailers are read from the call below
        except BaseException:
            self._abandon(call, handle, context)
            raise
        finally:
            self.in_flight -= 1
        headers = await call.initial_metadata()
        if headers:
            await context.send_initial_metadata(headers)
        # A response means the status is OK: one await less.
        await self._finish(call, handle, context, None if response is None else _OK)
        return response

    async def _forward_stream(self, method: str, kind: Kind, request: Any,
                              context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """Forward a call with a response stream; request is one message or an iterator."""
        endpoint, upstream, forwarded = await self._prepare(method, kind, context)
        clock = self._clock
        handle = endpoint.start(clock.now())
        call = upstream(request, timeout=context.time_remaining(), metadata=forwarded)
        self.in_flight += 1
        ended = False
        try:
            headers = await call.initial_metadata()
            if headers:
                await context.send_initial_metadata(headers)
            async for message in call:
                handle.first_response(clock.now())
                yield message
            ended = True
        except grpc.aio.AioRpcError:
            ended = True  # the status, details and trailers are read from the call below
        finally:
            self.in_flight -= 1
            if not ended:
                self._abandon(call, handle, context)
        await self._finish(call, handle, context)

    def _abandon(self, call: Any, handle: CallHandle, context: grpc.aio.ServicerContext
                 ) -> None:
        """Our caller went away or its deadline passed: so does the upstream call. A
        cancellation is not the endpoint's fault; an expired deadline means it was slow."""
        call.cancel()
        left = context.time_remaining()
        expired = left is not None and left <= 0
        handle.finish(self._clock.now(), grpc.StatusCode.DEADLINE_EXCEEDED if expired else None)

    async def _finish(self, call: Any, handle: CallHandle, context: grpc.aio.ServicerContext,
                      code: grpc.StatusCode | None = None) -> None:
        """Record the outcome and pass the upstream's status, details and trailers on."""
        if code is None:
            code = await call.code()
        trailers = tuple(await call.trailing_metadata() or ())
        handle.finish(self._clock.now(), code, _pushback_ms(trailers) if code != _OK else None)
        if trailers:
            context.set_trailing_metadata(trailers)
        if code != _OK:
            context.set_code(code)
            context.set_details(await call.details())

    async def _pick(self, target: Target, method: str, timeout: float | None,
                    context: grpc.aio.ServicerContext) -> Endpoint:
        refused: list[Endpoint] = []
        while True:
            endpoint = target.pick(refused)
            if endpoint is None:
                break
            wait = self._settings.connect_timeout
            if timeout is not None:
                wait = min(wait, max(0.0, context.time_remaining() or 0.0))
            if await connected(self._channels.get(endpoint.address), wait):
                return endpoint
            refused.append(endpoint)
        if refused:
            left = context.time_remaining()
            if left is not None and left <= 0:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"deadline expired while connecting to {target.name}")
            tried = ", ".join(e.address for e in refused)
            message = f"no instance of {target.name} accepted a connection (tried {tried})"
        else:
            message = f"no healthy instance of {target.name} ({target.describe()})"
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"{message} for {method}")
        raise AssertionError("unreachable")


def _pushback_ms(trailers: Metadata) -> int | None:
    for key, value in trailers:
        if key == PUSHBACK:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def proxy_server(forwarder: Forwarder, settings: ForwardSettings, *, reuse_port: bool = False,
                 **extra: Any) -> grpc.aio.Server:
    """A server for the forwarder; reuse_port lets --workers processes share its port."""
    server = grpc.aio.server(options=server_options(
        reuse_port=reuse_port, max_message_bytes=settings.max_message_bytes), **extra)
    server.add_generic_rpc_handlers([forwarder])
    return server


class GrpcListener:
    """The grpc.aio data path (`--data-path grpc`) behind the same bind/start/stop as the
    relay's listener."""

    def __init__(self, forwarder: Forwarder, settings: ForwardSettings, channels: Channels,
                 reuse_port: bool = False) -> None:
        self.forwarder = forwarder
        self.channels = channels
        self.server = proxy_server(forwarder, settings, reuse_port=reuse_port)

    def bind(self, address: str, what: str, reuse_port: bool = False, join: bool = False
             ) -> int:
        return bind(self.server, address, what, reuse_port, join)

    @property
    def in_flight(self) -> int:
        return self.forwarder.in_flight

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace: float | None) -> None:
        await self.server.stop(grace)
        await self.channels.close()

    def discard(self, address: str) -> None:
        self.channels.discard(address)
