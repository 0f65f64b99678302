"""`grpcmesh top` against running sidecars: in a pseudo-terminal (pexpect) while a client
calls through its sidecar, and with stdout a pipe (one frame)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import termios
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from tests.conftest import Mesh

UNARY = "grpcmesh.example.v1.Echo/Unary"


async def _load(address: str, stop: asyncio.Event) -> int:
    """Calls, one after another, until stop; how many ended OK."""
    ok = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        while not stop.is_set():
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Unary(pb.EchoRequest(), timeout=5)
                ok += 1
            await asyncio.sleep(0.005)
    return ok


def _drive_top(admin: str, key: str) -> dict[str, Any]:
    """tests/integration/top_pty.py in a process of its own: pexpect forks, and a fork of
    this process, which runs gRPC's threads, is not safe."""
    run = subprocess.run([sys.executable, "-m", "tests.integration.top_pty", admin, key],
                         check=False, capture_output=True, text=True, timeout=40)
    assert run.returncode == 0, run.stdout + run.stderr
    result: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    return result


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_top_in_a_terminal_shows_the_busy_method_and_quits_on_q_or_ctrl_c(mesh: Mesh) -> None:
    app = await mesh.app("echo-app")
    await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    stop = asyncio.Event()
    load = asyncio.create_task(_load(client.outbound_address, stop))
    try:
        runs = {key: await asyncio.to_thread(_drive_top, client.admin.address, key)
                for key in ("ctrl-c", "q")}
    finally:
        stop.set()
        ok = await asyncio.wait_for(load, 10)
    assert ok > 0
    for run in runs.values():
        assert UNARY in run["seen"] and run["rate"] > 0
        assert run["status"] == 0 and run["took"] < 5
        # the terminal is back in canonical mode with echo (top used cbreak, without echo)
        assert run["lflag"] & termios.ICANON and run["lflag"] & termios.ECHO


@pytest.mark.asyncio
async def test_top_without_a_terminal_prints_one_frame(mesh: Mesh) -> None:
    app = await mesh.app("echo-app")
    server = await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    stop = asyncio.Event()
    load = asyncio.create_task(_load(client.outbound_address, stop))
    try:
        admins = f"{client.admin.address},{server.admin.address}"
        outbound, inbound, other = await asyncio.gather(*(asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "grpcmesh", "top", *extra, "--admin", admins],
            capture_output=True, text=True, timeout=30)
            for extra in ([], ["--inbound"], ["nosuch"])))
    finally:
        stop.set()
        await asyncio.wait_for(load, 10)
    for run in (outbound, inbound):
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert lines[1].split()[:3] == ["SERVICE", "METHOD", "CALLS/S"]
        [row] = [line.split() for line in lines[2:]]
        assert row[:2] == ["echo", UNARY] and float(row[2]) > 0 and row[3] == "100.00%"
    assert "inbound" in inbound.stdout.splitlines()[0]
    assert other.returncode == 0 and "no calls in the last second" in other.stdout


def test_an_unreachable_admin_address_is_a_one_line_error() -> None:
    with socket_on_loopback() as port:
        pass  # closed again: nothing listens there
    run = subprocess.run([sys.executable, "-m", "grpcmesh", "top", "--admin",
                          f"127.0.0.1:{port}"], check=False, capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in run.stderr
    assert run.stderr.startswith("grpcmesh top: cannot read /metrics")


@contextlib.contextmanager
def socket_on_loopback() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
