"""An app whose grpc.health.v1 Watch is unimplemented but whose Check works.

health.py then polls Check. The app here is a real grpc.aio server on 127.0.0.1, port 0, with a
status the test flips; the followers under test are HealthWatcher itself, a sidecar's app-health
follower and the registry's checker of a registry-checked instance.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh.health import HealthWatcher
from grpcmesh.registry.model import Health, Instance
from grpcmesh.registry.server import RegistryServer
from tests.conftest import Mesh, wait_for

HEALTH = "grpc.health.v1.Health"
PROTO = "shop.v1.Legacy"
FLIP_TIMEOUT = 3.0  # the sidecar polls Check every second


class CheckOnlyApp:
    """A health service with a working Check and no Watch.

    watch="missing" registers no Watch handler, so grpcio answers UNIMPLEMENTED itself;
    watch="aborts" registers one that aborts with UNIMPLEMENTED, as a hand-written servicer does.
    """

    def __init__(self, watch: str) -> None:
        self.status: int = health_pb2.HealthCheckResponse.SERVING
        self.checks = 0
        self.watches = 0
        self.address = ""
        self.watch = watch
        self._server = grpc.aio.server()
        handlers = {"Check": grpc.unary_unary_rpc_method_handler(
            self._check, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString)}
        if watch == "aborts":
            handlers["Watch"] = grpc.unary_stream_rpc_method_handler(
                self._watch, request_deserializer=health_pb2.HealthCheckRequest.FromString,
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString)
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(HEALTH, handlers)])

    async def _check(self, request: health_pb2.HealthCheckRequest,
                     context: Any) -> health_pb2.HealthCheckResponse:
        self.checks += 1
        return health_pb2.HealthCheckResponse(status=self.status)

    async def _watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        self.watches += 1
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Watch is not implemented")

    def set_serving(self, serving: bool) -> None:
        self.status = (health_pb2.HealthCheckResponse.SERVING if serving
                       else health_pb2.HealthCheckResponse.NOT_SERVING)

    async def start(self) -> None:
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.address = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._server.stop(0)


@pytest_asyncio.fixture(params=["missing", "aborts"])
async def app(request: pytest.FixtureRequest) -> AsyncIterator[CheckOnlyApp]:
    server = CheckOnlyApp(request.param)
    await server.start()
    yield server
    await server.stop()


async def flip(app: CheckOnlyApp, serving: bool, reported: Any, what: str) -> float:
    """Set the app's status; return how long until reported() says the new one."""
    app.set_serving(serving)
    flipped = time.monotonic()
    await wait_for(lambda: reported() == (Health.SERVING if serving else Health.NOT_SERVING),
                   FLIP_TIMEOUT, what)
    return time.monotonic() - flipped


def assert_polled(app: CheckOnlyApp) -> None:
    """Watch was tried once, then Check was polled (not given up on as "no health service")."""
    assert app.watches == (1 if app.watch == "aborts" else 0)
    assert app.checks >= 3


@pytest.mark.asyncio
async def test_watcher_polls_check_when_watch_is_unimplemented(app: CheckOnlyApp) -> None:
    changes: list[tuple[Health, str]] = []
    watcher = HealthWatcher(app.address, lambda status, why: changes.append((status, why)),
                            poll_interval=0.05)
    task = asyncio.create_task(watcher.run())
    try:
        await wait_for(lambda: watcher.status == Health.SERVING, FLIP_TIMEOUT, "first SERVING")
        assert await flip(app, False, lambda: watcher.status, "NOT_SERVING") < 1.0
        assert await flip(app, True, lambda: watcher.status, "SERVING again") < 1.0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [status for status, _ in changes] == [Health.SERVING, Health.NOT_SERVING,
                                                 Health.SERVING]
    assert [why for _, why in changes] == ["health Check says SERVING",
                                           "health Check says NOT_SERVING",
                                           "health Check says SERVING"]
    assert_polled(app)


@pytest.mark.asyncio
async def test_sidecar_follows_check_when_watch_is_unimplemented(
        app: CheckOnlyApp, mesh: Mesh) -> None:
    sidecar = await mesh.sidecar("legacy", app, proto_services=(PROTO,))

    def registered() -> Health | None:
        found = mesh.registry.view.resolve(service="legacy")
        return found[0].health if found else None

    await wait_for(lambda: sidecar.app_health == Health.SERVING, FLIP_TIMEOUT, "first SERVING")
    await wait_for(lambda: registered() == Health.SERVING, FLIP_TIMEOUT, "registry SERVING")
    await flip(app, False, lambda: sidecar.app_health, "the sidecar to see NOT_SERVING")
    await wait_for(lambda: registered() == Health.NOT_SERVING, FLIP_TIMEOUT,
                   "the registry to hear NOT_SERVING")
    await flip(app, True, lambda: sidecar.app_health, "the sidecar to see SERVING again")
    await wait_for(lambda: registered() == Health.SERVING, FLIP_TIMEOUT,
                   "the registry to hear SERVING again")
    assert_polled(app)


@pytest.mark.asyncio
async def test_registry_checks_a_check_only_instance(
        app: CheckOnlyApp, registry: RegistryServer) -> None:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        instance = Instance("legacy", "l1", app.address, (PROTO,))
        await stub.Register(pb.RegisterRequest(instance=instance.to_proto(), ttl_seconds=0),
                            timeout=5)

        def checked() -> Health | None:
            found = registry.view.get("legacy", "l1")
            return found.health if found else None

        await wait_for(lambda: checked() == Health.SERVING, FLIP_TIMEOUT, "first SERVING")
        assert await flip(app, False, checked, "NOT_SERVING") < 1.0
        assert await flip(app, True, checked, "SERVING again") < 1.0
        await stub.Deregister(pb.DeregisterRequest(service="legacy", instance_id="l1",
                                                   owner=app.address), timeout=5)
    assert_polled(app)
