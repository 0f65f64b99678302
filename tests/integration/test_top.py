"""`grpcmesh top` against running sidecars: in a pseudo-terminal (pexpect) while a client
calls through its sidecar, and with stdout a pipe (one frame)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pexpect
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from tests.conftest import Mesh

UNARY = "grpcmesh.example.v1.Echo/Unary"
# The method's row: its name, then calls/s (rich pads cells with spaces).
RATE = re.compile(rb"Echo/Unary\s+(\d+\.\d)\s+(\d+\.\d+)%")


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


def _drive_top(admin: str) -> tuple[bytes, int | None, float]:
    """Run top in a pseudo-terminal: wait for the method's row with a non-zero rate, press q,
    and return what it drew, its exit status and how long it took to exit."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    child = pexpect.spawn(sys.executable, ["-m", "grpcmesh", "top", "--admin", admin],
                          env=env, dimensions=(40, 160), timeout=15)
    try:
        child.expect("collecting")
        deadline = time.monotonic() + 15
        while True:
            child.expect(RATE, timeout=max(0.1, deadline - time.monotonic()))
            assert child.match is not None
            if float(child.match.group(1)) > 0:
                break
        seen = child.before + child.after
        child.send("q")
        quit_at = time.monotonic()
        child.expect(pexpect.EOF, timeout=5)
        took = time.monotonic() - quit_at
        child.close()
        return seen, child.exitstatus, took
    finally:
        if child.isalive():
            child.terminate(force=True)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_top_in_a_terminal_shows_the_busy_method_and_quits_on_q(mesh: Mesh) -> None:
    app = await mesh.app("echo-app")
    await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    stop = asyncio.Event()
    load = asyncio.create_task(_load(client.outbound_address, stop))
    try:
        seen, status, took = await asyncio.to_thread(_drive_top, client.admin.address)
    finally:
        stop.set()
        ok = await asyncio.wait_for(load, 10)
    assert ok > 0
    assert UNARY.encode() in seen
    assert status == 0 and took < 5


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
