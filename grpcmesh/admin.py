"""The sidecar's admin port: a tiny HTTP/1.1 server for probes and introspection.

GET /live      200 while the process runs
GET /ready     200 once the sidecar routes (registry answered) and its instance is registered
GET /endpoints JSON: every known service and endpoint with health and call counts; with
               --workers, each worker process's own view too (the primary asks the others)
GET /metrics   Prometheus text: the sidecar's metrics (docs/telemetry.md); absent with
               --no-metrics
GET /config    JSON: the mesh config in force here: version, applied_at (when it took effect in
               this sidecar), digest and the canonical config

admin_get() is the client side, used by `grpcmesh endpoints`, the benchmarks and the tests.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Raw:
    """A route's body served as it is (not JSON), with its content type."""

    content_type: str
    body: bytes


Route = Callable[..., "tuple[int, Any] | Awaitable[tuple[int, Any]]"]  # () or (query)


class AdminServer:
    def __init__(self, listen: str, routes: dict[str, Route]) -> None:
        self.listen = listen
        self.routes = routes
        self.address = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        host, _, port = self.listen.rpartition(":")
        try:
            self._server = await asyncio.start_server(self._handle, host, int(port))
        except OSError as err:
            raise OSError(f"cannot listen on {self.listen} for admin: {err.strerror}") from None
        bound = self._server.sockets[0].getsockname()[1]
        self.address = f"{host}:{bound}"
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            body: Any
            if len(parts) < 2 or parts[0] != "GET":
                status, body = 405, {"error": "only GET is supported"}
            else:
                path, _, query = parts[1].partition("?")
                route = self.routes.get(path)
                if route is None:
                    status, body = 404, {"error": f"no such path {path}",
                                         "paths": sorted(self.routes)}
                else:
                    # A route with a parameter is given the query: {name: value}
                    result = (route(dict(urllib.parse.parse_qsl(query)))
                              if inspect.signature(route).parameters else route())
                    status, body = await result if inspect.isawaitable(result) else result
            if isinstance(body, Raw):
                payload, content_type = body.body, body.content_type
            else:
                payload = (json.dumps(body, indent=2) + "\n").encode()
                content_type = "application/json"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}.get(status, "")
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                         f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                         + payload)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


async def admin_get(address: str, path: str, timeout: float = 5.0) -> Any:
    """GET a sidecar admin path and decode its JSON body."""
    body = await admin_fetch(address, path, timeout)
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError(f"its {path} answer is not JSON") from None


async def admin_fetch(address: str, path: str, timeout: float = 5.0) -> bytes:
    """GET a sidecar admin path: its body (JSON, or /metrics' text)."""
    host, _, port = address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
            await writer.wait_closed()
    except TimeoutError:
        raise TimeoutError(f"no answer within {timeout:g} s") from None
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        raise ValueError("it did not answer HTTP: is it a sidecar's admin port (--admin)?"
                         if raw else "it closed the connection without an answer")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(head.split(b"\r\n")[0].decode(errors="replace"))
    return body
