"""`grpcmesh tap` against a running sidecar: a line per call as they end, filtered, and the
sidecar stops observing calls once nobody watches."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from tests.conftest import Mesh, wait_for

pytestmark = pytest.mark.timeout(30)


async def read_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()


@pytest.mark.asyncio
async def test_tap_follows_the_calls_and_lets_go_when_it_leaves(mesh: Mesh) -> None:
    app = await mesh.app("a")
    await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    before = len(client.outbound_server.observers)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grpcmesh", "tap", "echo", "--method", "Get", "--json",
        "--admin", client.admin.address, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await read_line(proc)  # the header: the tap is on
        await wait_for(lambda: len(client.outbound_server.observers) == before + 1, 5,
                       "the sidecar to observe calls for the tap")
        async with grpc.aio.insecure_channel(client.outbound_address) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            await stub.Unary(pb.EchoRequest(), timeout=5)  # not Get: filtered out
            for _ in range(3):
                await stub.Get(pb.EchoRequest(), timeout=5)
        lines = [json.loads(await read_line(proc)) for _ in range(3)]
        assert [(x["method"], x["direction"], x["code"], x["attempts"]) for x in lines] == [
            ("/grpcmesh.example.v1.Echo/Get", "outbound", "OK", 1)] * 3
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    await wait_for(lambda: len(client.outbound_server.observers) == before, 5,
                   "the sidecar to stop observing once the tap left")


@pytest.mark.asyncio
async def test_tap_prints_a_readable_line_per_call(mesh: Mesh) -> None:
    app = await mesh.app("a")
    await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grpcmesh", "tap", "--admin", client.admin.address,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        header = await read_line(proc)
        assert header.split()[:4] == ["TIME", "DIR", "METHOD", "ENDPOINT"]
        await wait_for(lambda: client.tap.watchers, 5, "the tap to watch")
        async with grpc.aio.insecure_channel(client.outbound_address) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary("/nope.v1.Nothing/Call")(b"", timeout=5)
        line = await read_line(proc)
        assert "out  /nope.v1.Nothing/Call" in line and "UNIMPLEMENTED (no_route)" in line
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


@pytest.mark.asyncio
async def test_tap_of_a_port_that_is_not_a_sidecar_says_so(mesh: Mesh) -> None:
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "grpcmesh", "tap", "--admin", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=20)
    assert run.returncode == 1
    assert "cannot tap the sidecar admin port at 127.0.0.1:1" in run.stderr


@pytest.mark.asyncio
async def test_taps_that_leave_at_once_or_never_read_hold_no_slot(mesh: Mesh) -> None:
    import socket
    import struct

    client = await mesh.sidecar("client")
    host, port = client.admin.address.rsplit(":", 1)
    for _ in range(20):  # more than the 16 slots: each asks, then resets at once
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /tap HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    await wait_for(lambda: not client.tap.watchers, 5, "every slot given back")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /tap HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
    # a tap that never reads: shutdown cuts it at once
    start = asyncio.get_running_loop().time()
    await client.shutdown()
    assert asyncio.get_running_loop().time() - start < 5
    assert not client.tap.watchers
    writer.close()
