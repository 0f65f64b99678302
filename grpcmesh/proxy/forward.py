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

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from grpcmesh.balance.endpoint import Endpoint
from grpcmesh.clock import Clock, MonotonicClock
from grpcmesh.proxy.channels import Channels, connected
from grpcmesh.routing import SERVICE_HEADER, RouteError, Target
from grpcmesh.server_util import server_options

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

# Request metadata that grpcio sets itself on the upstream call, or that only means something to
# this proxy.
_DROP_REQUEST = frozenset({"user-agent", SERVICE_HEADER})
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
        self.in_flight = 0

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        metadata: Metadata = details.invocation_metadata
        override = None
        size = 0
        for key, value in metadata:
            size += len(key) + len(value) + 32
            if key == SERVICE_HEADER:
                override = value if isinstance(value, str) else value.decode()
        if self._local is not None and override is None and method.startswith(self._local_prefixes):
            return self._local.service(details)

        kind = self._kinds(method) or STREAMING
        if size > self._settings.max_metadata_bytes:
            limit = self._settings.max_metadata_bytes
            return _HANDLERS[kind](_rejection(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request metadata of {method} is {size} bytes; the proxy's limit is {limit}"))
        forward = self._forward

        if kind[1]:
            async def handle(request: Any, context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[bytes]:
                async for message in forward(method, metadata, override, kind, request, context):
                    yield message
            return _HANDLERS[kind](handle)

        async def handle_unary(request: Any, context: grpc.aio.ServicerContext) -> bytes | None:
            response = None  # stays None when the upstream answered with an error status
            async for message in forward(method, metadata, override, kind, request, context):
                response = message
            return response
        return _HANDLERS[kind](handle_unary)

    async def _forward(self, method: str, metadata: Metadata, override: str | None, kind: Kind,
                       request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """Forward one call; request is one message or, for client streaming, an iterator."""
        timeout = context.time_remaining()
        if timeout is not None and timeout <= 0:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"deadline expired before {method} was forwarded")
        try:
            target = self._router(method, override)
        except RouteError as err:
            await context.abort(err.code, err.message)
        endpoint = await self._pick(target, method, timeout, context)
        upstream = getattr(self._channels.get(endpoint.address), _CALLS[kind])(method)
        request_metadata = [(k, v) for k, v in metadata if k not in _DROP_REQUEST]
        clock = self._clock
        handle = endpoint.start(clock.now())
        call = upstream(request, timeout=context.time_remaining(), metadata=request_metadata)
        self.in_flight += 1
        ended = False
        try:
            headers = await call.initial_metadata()
            if headers:
                await context.send_initial_metadata(headers)
            if kind[1]:
                async for message in call:
                    handle.first_response(clock.now())
                    yield message
            else:
                message = await call
                handle.first_response(clock.now())
                yield message
            ended = True
        except grpc.aio.AioRpcError:
            ended = True  # the status, details and trailers are read from the call below
        finally:
            self.in_flight -= 1
            if not ended:
                # Our caller went away or its deadline passed: so does the upstream call. A
                # cancellation is not the endpoint's fault; an expired deadline means it was slow.
                call.cancel()
                left = context.time_remaining()
                expired = left is not None and left <= 0
                handle.finish(clock.now(), grpc.StatusCode.DEADLINE_EXCEEDED if expired else None)
        code = await call.code()
        trailers = tuple(await call.trailing_metadata() or ())
        handle.finish(clock.now(), code, _pushback_ms(trailers) if code != grpc.StatusCode.OK
                      else None)
        context.set_trailing_metadata(trailers)
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


def _rejection(code: grpc.StatusCode, message: str) -> Callable[..., Any]:
    async def reject(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)
    return reject


def _pushback_ms(trailers: Metadata) -> int | None:
    for key, value in trailers:
        if key == PUSHBACK:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def proxy_server(forwarder: Forwarder, settings: ForwardSettings, **extra: Any) -> grpc.aio.Server:
    server = grpc.aio.server(options=server_options(max_message_bytes=settings.max_message_bytes),
                             **extra)
    server.add_generic_rpc_handlers([forwarder])
    return server
