"""The admin HTTP server and admin_get, on real sockets (127.0.0.1, port 0)."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from grpcmesh.admin import AdminLimits, AdminServer, Raw, admin_get

pytestmark = pytest.mark.asyncio

METRICS = Raw("text/plain; version=0.0.4; charset=utf-8", b"# TYPE calls counter\ncalls 3\n")


async def _slow() -> tuple[int, Any]:
    await asyncio.sleep(1.0)
    return 200, {}


async def _async_route() -> tuple[int, Any]:
    await asyncio.sleep(0)
    return 200, {"async": True}


def _broken() -> tuple[int, Any]:
    raise RuntimeError("a bug")


ROUTES: dict[str, Any] = {
    "/live": lambda: (200, {"live": True}),
    "/ready": lambda: (503, {"ready": False}),
    "/async": _async_route,
    "/metrics": lambda: (200, METRICS),
    "/slow": _slow,
    "/broken": _broken,
}


@pytest_asyncio.fixture
async def admin() -> AsyncIterator[AdminServer]:
    server = AdminServer("127.0.0.1:0", ROUTES,
                         AdminLimits(head_timeout=0.3, handler_timeout=0.3))
    await server.start()
    yield server
    await server.stop()


async def _exchange(address: str, request: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes; return everything the server sends until it closes."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        await writer.wait_closed()


def _parse(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


async def test_json_routes_sync_and_async(admin: AdminServer) -> None:
    assert admin.address.startswith("127.0.0.1:") and not admin.address.endswith(":0")
    assert await admin_get(admin.address, "/live") == {"live": True}
    assert await admin_get(admin.address, "/async?x=1") == {"async": True}  # query ignored


async def test_raw_body_is_served_as_is(admin: AdminServer) -> None:
    status, headers, body = _parse(await _exchange(
        admin.address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert body == METRICS.body
    with pytest.raises(ValueError, match="not JSON"):  # admin_get reads JSON only
        await admin_get(admin.address, "/metrics")


async def test_unknown_path_is_404_listing_the_known_ones(admin: AdminServer) -> None:
    status, headers, body = _parse(await _exchange(
        admin.address, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == "HTTP/1.1 404 Not Found"
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"error": "no such path /nope", "paths": sorted(ROUTES)}
    with pytest.raises(ValueError, match="404 Not Found"):
        await admin_get(admin.address, "/nope")


async def test_only_get_is_served(admin: AdminServer) -> None:
    for method in (b"POST", b"PUT", b"DELETE", b"HEAD"):
        status, headers, body = _parse(await _exchange(
            admin.address, method + b" /live HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"))
        assert status == "HTTP/1.1 405 Method Not Allowed", method
        assert headers["allow"] == "GET"
        if method != b"HEAD":
            assert json.loads(body) == {"error": "only GET is supported"}


async def test_non_200_is_a_value_error_with_the_status(admin: AdminServer) -> None:
    with pytest.raises(ValueError, match="^HTTP/1.1 503 Service Unavailable$"):
        await admin_get(admin.address, "/ready")


async def test_oversized_request_line_and_header_are_rejected(admin: AdminServer) -> None:
    long_path = b"/" + b"a" * 5000
    status, _, _ = _parse(await _exchange(
        admin.address, b"GET " + long_path + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert " 400 " in status
    status, _, _ = _parse(await _exchange(
        admin.address, b"GET /live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n"))
    assert " 400 " in status
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(40))
    status, _, _ = _parse(await _exchange(
        admin.address, b"GET /live HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"))
    assert " 400 " in status
    assert await admin_get(admin.address, "/live") == {"live": True}  # still serving


async def test_a_slow_request_head_is_cut_off(admin: AdminServer) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await _exchange(admin.address, b"GET /live HTTP/1.1\r\nHo", timeout=3.0)
    assert answer == b""  # closed without an answer
    assert loop.time() - started < 2.0  # head_timeout is 0.3 s


async def test_a_slow_route_and_a_broken_route_answer_json(admin: AdminServer) -> None:
    with pytest.raises(ValueError, match="503"):
        await admin_get(admin.address, "/slow")
    status, _, body = _parse(await _exchange(admin.address,
                                             b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert "a bug" in json.loads(body)["error"]
    assert await admin_get(admin.address, "/live") == {"live": True}


async def test_a_port_in_use_is_a_clear_error(admin: AdminServer) -> None:
    with pytest.raises(OSError, match=f"cannot listen on {admin.address} for admin"):
        await AdminServer(admin.address, {}).start()


async def test_admin_get_errors_are_oserror_or_valueerror() -> None:
    handled = asyncio.Event()

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        await writer.drain()
        writer.close()
        handled.set()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; the client gives up and closes
        writer.close()
        handled.set()

    for handler in (not_http, silent):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            if handler is not_http:
                with pytest.raises(ValueError, match="did not answer HTTP"):
                    await admin_get(address, "/live", timeout=2.0)
            else:
                with pytest.raises(TimeoutError, match="no answer within 0.2 s"):
                    await admin_get(address, "/live", timeout=0.2)
            await asyncio.wait_for(handled.wait(), 2.0)
            handled.clear()
        finally:
            server.close()
            await server.wait_closed()
    # a port nobody listens on: the server's own port, once it is stopped
    server = AdminServer("127.0.0.1:0", {})
    address = await server.start()
    await server.stop()
    with pytest.raises(OSError):
        await admin_get(address, "/live", timeout=2.0)
