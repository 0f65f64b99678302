"""Fixtures that start real gRPC servers on 127.0.0.1, port 0, and stop them afterwards."""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio

from grpcmesh.example.server import EchoBehaviour, EchoServer
from grpcmesh.registry.server import RegistryServer
from grpcmesh.sidecar import Sidecar, SidecarSettings
from tests.etcd import ETCD, MISSING, EtcdCluster


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0,
                   what: str = "condition") -> Any:
    """Poll predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Mesh:
    """A registry plus whatever apps and sidecars a test starts; all stopped at the end."""

    def __init__(self, registry: RegistryServer) -> None:
        self.registry = registry
        self.apps: list[EchoServer] = []
        self.sidecars: list[Sidecar] = []

    async def app(self, name: str, delay_ms: float = 0.0, fail_code: int = 0, *,
                  fail_percent: float = 100.0, slow_percent: float = 0.0, slow_ms: float = 0.0,
                  seed: int = 0) -> EchoServer:
        """An example app; fail_percent/slow_percent are drawn from random.Random(seed)."""
        app = EchoServer("127.0.0.1:0", EchoBehaviour(
            name, delay_ms, fail_code, fail_percent=fail_percent, slow_percent=slow_percent,
            slow_ms=slow_ms, rng=random.Random(seed)))
        await app.start()
        self.apps.append(app)
        return app

    async def sidecar(self, service: str, app: Any = None, *,
                      inbound: bool = True, **settings: Any) -> Sidecar:
        base = SidecarSettings(
            service=service, registry=(self.registry.address,),
            app=app.address if app else None, outbound="127.0.0.1:0",  # app: anything with .address
            inbound="127.0.0.1:0" if (app and inbound) else None, admin="127.0.0.1:0",
            ttl_seconds=5, grace_seconds=2.0, drain_delay=0.2)
        sidecar = Sidecar(replace(base, **settings))
        await sidecar.start()
        self.sidecars.append(sidecar)
        return sidecar

    async def serving(self, sidecar: Sidecar, service: str, count: int,
                      timeout: float = 5.0) -> None:
        """Wait until sidecar routes to count serving instances of service."""
        def ready() -> bool:
            pool = sidecar.routes.pools.get(service)
            return pool is not None and len(pool.ready) == count
        await wait_for(ready, timeout, f"{count} serving instances of {service}")

    async def close(self) -> None:
        for sidecar in reversed(self.sidecars):
            if not sidecar.stopped.is_set():
                await sidecar.shutdown()
        for app in reversed(self.apps):
            await app.stop(0)


@pytest_asyncio.fixture
async def registry() -> AsyncIterator[RegistryServer]:
    server = RegistryServer("127.0.0.1:0", check_interval=0.1)
    await server.start()
    yield server
    await server.stop(0)


@pytest_asyncio.fixture
async def mesh(registry: RegistryServer) -> AsyncIterator[Mesh]:
    m = Mesh(registry)
    yield m
    await m.close()


async def _etcd(tmp_path: Any, size: int) -> AsyncIterator[EtcdCluster]:
    if ETCD is None:
        pytest.skip(MISSING)
    cluster = EtcdCluster(tmp_path / "etcd", size=size)
    await asyncio.to_thread(cluster.start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


@pytest_asyncio.fixture
async def etcd(tmp_path: Any) -> AsyncIterator[EtcdCluster]:
    """A real one-member etcd on loopback ports (tests/etcd.py), stopped after the test."""
    async for cluster in _etcd(tmp_path, 1):
        yield cluster


@pytest_asyncio.fixture
async def etcd3(tmp_path: Any) -> AsyncIterator[EtcdCluster]:
    """A real three-member etcd cluster on loopback ports."""
    async for cluster in _etcd(tmp_path, 3):
        yield cluster
