"""Asking apps what they serve, as `grpcmesh register` and the sidecar do, against an app that
serves reflection under only one of its two names, and against one that serves none.

Each test starts one app process and asks it 50 times (20 for no reflection) on fresh
channels. Asking for a version the app does not serve made grpcio report `INTERNAL: Internal
error from Core` instead of UNIMPLEMENTED about 1 time in 10 (grpc/grpc#36066), which failed
`grpcmesh register` for every Python app when v1 was asked first."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from grpcmesh import reflection
from grpcmesh.commands import _describe_app
from grpcmesh.registry.model import is_idempotent
from tests.reflection_app import ECHO

ECHO_METHODS = [f"/{ECHO}/{m}"
                for m in ("BidiStream", "ClientStream", "Get", "ServerStream", "Unary")]


@pytest_asyncio.fixture
async def app(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The address of `python -m tests.reflection_app request.param`, stopped afterwards."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.reflection_app", request.param, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert line, f"tests.reflection_app {request.param} exited without an address"
        yield line.decode().strip()
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.mark.asyncio
@pytest.mark.timeout(40)
@pytest.mark.parametrize("app", ["v1alpha", "v1"], indirect=True)
async def test_register_describes_an_app_with_one_reflection_version_every_time(
        app: str) -> None:
    for attempt in range(50):
        protos, methods = await _describe_app(app, [])  # what `grpcmesh register` runs
        assert protos == [ECHO], attempt
        assert [m.path for m in methods] == ECHO_METHODS, attempt
        # echo.proto's `option idempotency_level`, through either reflection version
        assert [m.path for m in methods if is_idempotent(m)] == [f"/{ECHO}/Get"], attempt


@pytest.mark.asyncio
@pytest.mark.timeout(30)
@pytest.mark.parametrize("app", ["none"], indirect=True)
async def test_an_app_without_reflection_is_unimplemented_every_time(app: str) -> None:
    for attempt in range(20):
        async with grpc.aio.insecure_channel(app) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await reflection.list_services(channel, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, (attempt, err.value)
