"""The sidecar's admin port: an HTTP server (aiohttp) for probes and introspection.

GET /live      200 while the process runs
GET /ready     200 once the sidecar routes (registry answered) and its instance is registered
GET /endpoints JSON: every known service and endpoint with health and call counts; with
               --workers, each worker process's own view too (the primary asks the others)
GET /config    JSON: the mesh config in force here: version, applied_at (when it took effect in
               this sidecar), digest and the canonical config

A route is a callable returning (status, body), or an awaitable of it; one that takes a
parameter is given the query string as {name: value} (/stat?window=30). The body is JSON-able,
or a Raw (bytes served as they are, with their content type: the Prometheus text format, say).
Only GET is served (405 otherwise); an unknown path gets a 404 that lists the known ones.

The port may face more than the operator's tools, so a peer is bounded (AdminLimits): the size
of the request line and of each header, the number of headers, the time to send the request's
head, and the time a route may take. Each connection serves one request (Connection: close).

admin_get() is the client side, used by `grpcmesh endpoints`, the benchmarks and the tests.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web import RequestHandler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Raw:
    """A route body served as is, with its content type, instead of as JSON."""
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Stream:
    """A route body written as its chunks come (one JSON line per call: /tap), until the
    iterator ends or the peer goes. A chunk the peer does not take within WRITE_TIMEOUT ends
    the stream (a peer that never reads holds nothing for long), and stop() cuts every stream
    still open. What the chunks are made from must be bounded on its own (telemetry/tap.py).
    close() is called once the stream is over, however it ended (even if it never started)."""
    content_type: str
    chunks: AsyncGenerator[bytes, None]
    close: Callable[[], None] = lambda: None


WRITE_TIMEOUT = 5.0  # seconds a Stream's chunk may wait for its peer


Route = Callable[..., "tuple[int, Any] | Awaitable[tuple[int, Any]]"]  # () or (query)


@dataclass(frozen=True)
class AdminLimits:
    """What one peer of the admin port may send or hold (docs/proxy.md, "The admin port")."""
    max_line_size: int = 4096  # the request line: method, path and query
    max_field_size: int = 4096  # one header line
    max_headers: int = 32
    head_timeout: float = 5.0  # from accepting the connection to the end of the request head
    handler_timeout: float = 10.0  # a route's answer (/endpoints asks --workers for 2 s)


class _QuietLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp logs a malformed request (a request line too long, say) as an error with its
    traceback: on a port anyone may reach, that is a way to flood the log. The peer gets a
    400 that says why; the log gets a debug line."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, exc_info=exc_info, **kwargs)


class _Site(web.BaseSite):
    """A TCP site whose connections must send their request head within head_timeout.

    aiohttp's TCPSite has no such limit (its keep-alive timeout starts after a response), so a
    peer could hold a connection open forever by sending a request line byte by byte. This
    site wraps the runner's protocol factory with a timer that a request reaching the handler
    cancels (see AdminServer._handle).
    """

    __slots__ = ("_head_timeout", "_host", "_port", "waiting")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, head_timeout: float
                 ) -> None:
        super().__init__(runner)
        self._host, self._port = host, port
        self._head_timeout = head_timeout
        self.waiting: dict[RequestHandler, asyncio.TimerHandle] = {}

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The bound port, once started (port 0 asks the kernel for one)."""
        return self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def expire(protocol: RequestHandler) -> None:
            if self.waiting.pop(protocol, None) is not None:
                protocol.force_close()

        def connection() -> RequestHandler:
            protocol = server()
            self.waiting[protocol] = loop.call_later(self._head_timeout, expire, protocol)
            return protocol
        self._server = await loop.create_server(connection, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    def request_started(self, protocol: RequestHandler) -> None:
        timer = self.waiting.pop(protocol, None)
        if timer is not None:
            timer.cancel()

    async def stop(self) -> None:
        for timer in self.waiting.values():
            timer.cancel()
        self.waiting.clear()
        await super().stop()


class AdminServer:
    def __init__(self, listen: str, routes: dict[str, Route],
                 limits: AdminLimits = AdminLimits(), purpose: str = "admin") -> None:
        self.listen = listen
        self.purpose = purpose  # what the port is for, in the error when it cannot listen
        self.routes = routes
        self.limits = limits
        self.address = ""
        self._runner: web.AppRunner | None = None
        self._site: _Site | None = None
        self._streams: set[asyncio.Transport] = set()  # of Stream responses in progress

    async def start(self) -> str:
        host, _, port = self.listen.rpartition(":")
        app = web.Application(handler_args={
            "max_line_size": self.limits.max_line_size,
            "max_field_size": self.limits.max_field_size,
            "max_headers": self.limits.max_headers,
            "logger": _QuietLog(log.getChild("http")),
        })
        app.router.add_route("*", "/{path:.*}", self._handle)
        # stop() waits for routes in progress, which handler_timeout bounds
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=self.limits.handler_timeout)
        await runner.setup()
        site = _Site(runner, host.strip("[]"), int(port), self.limits.head_timeout)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise OSError(f"cannot listen on {self.listen} for {self.purpose}: "
                          f"{err.strerror}") from None
        self._runner, self._site = runner, site
        self.address = f"{host}:{site.port}"
        return self.address

    async def stop(self) -> None:
        for transport in list(self._streams):  # a stream would hold the runner's cleanup
            transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._site is not None:
            self._site.request_started(request.protocol)
        status, body = await self._answer(request)
        if isinstance(body, Stream):
            stream = web.StreamResponse(status=status,
                                        headers={"Content-Type": body.content_type})
            stream.force_close()
            transport = request.transport
            if transport is not None:
                self._streams.add(transport)
            try:
                await stream.prepare(request)
                async for chunk in body.chunks:
                    async with asyncio.timeout(WRITE_TIMEOUT):
                        await stream.write(chunk)
            except (ConnectionError, TimeoutError):
                pass  # the peer went away, or does not read
            finally:
                if transport is not None:
                    self._streams.discard(transport)
                try:
                    await body.chunks.aclose()
                finally:
                    body.close()
            return stream
        if isinstance(body, Raw):
            response = web.Response(status=status, body=body.body,
                                    headers={"Content-Type": body.content_type})
        else:
            response = web.Response(status=status, body=(json.dumps(body, indent=2) + "\n"
                                                         ).encode(),
                                    content_type="application/json")
        if status == 405:
            response.headers["Allow"] = "GET"
        response.force_close()
        return response

    async def _answer(self, request: web.Request) -> tuple[int, Any]:
        if request.method != "GET":
            return 405, {"error": "only GET is supported"}
        route = self.routes.get(request.path)
        if route is None:
            return 404, {"error": f"no such path {request.path}", "paths": sorted(self.routes)}
        try:
            async with asyncio.timeout(self.limits.handler_timeout):
                result = (route(dict(request.query)) if inspect.signature(route).parameters
                          else route())
                return await result if inspect.isawaitable(result) else result
        except TimeoutError:
            return 503, {"error": f"{request.path} took longer than "
                                  f"{self.limits.handler_timeout:g} s"}
        except Exception as err:  # a bug in a route: say so, and keep serving
            log.exception("admin %s failed", request.path)
            return 500, {"error": f"{request.path} failed: {err!r}"}


async def admin_get(address: str, path: str, timeout: float = 5.0) -> Any:
    """GET a sidecar admin path and decode its JSON body.

    Raises OSError when it cannot be reached (TimeoutError after timeout seconds) and
    ValueError when it answers something other than 200 and JSON: callers catch those two.
    """
    return json_body(path, await admin_fetch(address, path, timeout))


def json_body(path: str, body: bytes) -> Any:
    """An admin path's answer decoded as JSON (ValueError naming path if it is not)."""
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError(f"its {path} answer is not JSON") from None


async def admin_lines(address: str, path: str, connect_timeout: float = 2.0,
                      ) -> AsyncGenerator[bytes, None]:
    """GET a streaming admin path (/tap): each line as it comes, until the stream ends.
    Raises OSError or ValueError as admin_fetch does; a line longer than 64 KiB is a
    ValueError."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout,
                                    sock_read=None)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                f"http://{address}{path}", allow_redirects=False) as response:
            if response.status != 200:
                raise ValueError(f"{path} answered HTTP {response.status}")
            while line := await response.content.readline():
                yield line
    except aiohttp.ClientOSError:
        raise
    except aiohttp.ClientError as err:
        raise ValueError(str(err) or type(err).__name__) from None


async def admin_fetch(address: str, path: str, timeout: float = 5.0) -> bytes:
    """GET a sidecar admin path: its body as it is (JSON, or /metrics' text). Raises as
    admin_get does."""
    try:
        async with asyncio.timeout(timeout):
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://{address}{path}", allow_redirects=False) as response:
                body = await response.read()
                version = response.version or aiohttp.HttpVersion11
                status = (f"HTTP/{version.major}.{version.minor} {response.status} "
                          f"{response.reason or ''}").rstrip()
    except TimeoutError:
        raise TimeoutError(f"no answer within {timeout:g} s") from None
    except aiohttp.ServerDisconnectedError:
        raise ValueError("it closed the connection without an answer") from None
    except aiohttp.ClientResponseError:  # not an HTTP answer
        raise ValueError("it did not answer HTTP: is it a sidecar's admin port (--admin)?"
                         ) from None
    except aiohttp.InvalidURL:
        raise ValueError(f"not an address: {address!r}") from None
    except aiohttp.ClientOSError:  # refused, unreachable: an OSError already
        raise
    except aiohttp.ClientConnectionError as err:
        raise ConnectionError(str(err) or type(err).__name__) from None
    except aiohttp.ClientError as err:  # a broken body, say
        raise ValueError(str(err) or type(err).__name__) from None
    if response.status != 200:
        raise ValueError(status)
    return body
