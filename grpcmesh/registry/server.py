"""The registry process: the Registry service, grpc.health.v1, reflection, lease expiry and the
health checks of registry-checked instances, on one gRPC server."""
from __future__ import annotations

import asyncio
import logging
import random
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from generated.grpcmesh.registry.v1 import registry_pb2
from grpcmesh.clock import MonotonicClock
from grpcmesh.reflection import MethodCatalog, enable_reflection
from grpcmesh.registry.checker import HealthChecker
from grpcmesh.registry.config_store import ConfigPersistence, ConfigStore, Prepared
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.registry.service import RegistryService, add_to_server
from grpcmesh.registry.store import Persistence, RegistryStore
from grpcmesh.server_util import bind, server_options, with_port

log = logging.getLogger(__name__)
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name


def open_persistence(spec: str) -> Persistence | None:
    """--store memory | sqlite:PATH"""
    if spec == "memory":
        return None
    if spec.startswith("sqlite:") and len(spec) > len("sqlite:"):
        from grpcmesh.registry.sqlite_store import SqlitePersistence

        return SqlitePersistence(spec[len("sqlite:"):])
    raise ValueError(f"--store {spec!r} is not valid: expected 'memory' or 'sqlite:PATH'")


class RegistryServer:
    def __init__(self, listen: str = "127.0.0.1:7700", persistence: Persistence | None = None,
                 *, check_interval: float = 1.0, warmup: float = 10.0,
                 catalog: MethodCatalog = MethodCatalog(),
                 limits: RegistryLimits = RegistryLimits(),
                 config: Prepared | None = None) -> None:
        """config: the mesh config to start with (`--config`), applied over the stored one:
        the same content keeps its version. A stored config that cannot be read is a
        ValueError."""
        self.listen = listen
        self.store = RegistryStore(MonotonicClock(), random.Random(), persistence, warmup,
                                   limits)
        self._persistence = persistence
        self.configs = ConfigStore(persistence if isinstance(persistence, ConfigPersistence)
                                   else None)
        if config is not None:
            self.configs.apply(config, time.time())
        self._checker = HealthChecker(self.store, poll_interval=check_interval)
        self.service = RegistryService(self.store, catalog, configs=self.configs)
        self._server = grpc.aio.server(options=server_options())
        self._expiry: asyncio.Task[None] | None = None
        self.address = ""
        self._stopped = False

    async def start(self) -> str:
        add_to_server(self.service, self._server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self._server)
        enable_reflection(self._server, [REGISTRY_SERVICE, health.SERVICE_NAME])
        port = bind(self._server, self.listen, "registry")
        self.address = with_port(self.listen, port)
        await self._server.start()
        for name in ("", REGISTRY_SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._checker.start()
        self._expiry = asyncio.get_running_loop().create_task(self._expire_leases())
        log.info("registry listening on %s (%d instances loaded, mesh config version %d)",
                 self.address, len(self.store.instances()), self.configs.current.version)
        return self.address

    async def _expire_leases(self) -> None:
        clock = MonotonicClock()
        while True:
            try:
                self.store.expire()
                if self.store.finish_warmup():
                    log.info("warm-up over: watchers now get the complete state")
            except Exception:  # a bug in one listener must not stop lease expiry for good
                log.exception("lease expiry failed; trying again")
            due = self.store.next_expiry()
            wait = 1.0 if due is None else min(1.0, max(0.01, due - clock.now()))
            await asyncio.sleep(wait)

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._expiry is not None:
            self._expiry.cancel()
        await self._checker.stop()
        self.service.close()
        await self._server.stop(grace)
        if self._persistence is not None and hasattr(self._persistence, "close"):
            self._persistence.close()

    async def wait(self) -> None:
        await self._server.wait_for_termination()
