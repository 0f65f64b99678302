"""The registry process: the Registry service, grpc.health.v1 and reflection on one gRPC server,
over a store (memory, SQLite or etcd) that a View follows; and, while this replica leads them,
the health checks of registry-checked instances."""
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
from grpcmesh.registry.backend import LocalStore, Store
from grpcmesh.registry.checker import HealthChecker
from grpcmesh.registry.config_store import ConfigPersistence, ConfigStore, Prepared
from grpcmesh.registry.history import HISTORY_LIMIT
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.registry.service import RegistryService, add_to_server
from grpcmesh.registry.store import Persistence, RegistryStore
from grpcmesh.registry.view import View, follow
from grpcmesh.server_util import bind, server_options, with_port

log = logging.getLogger(__name__)
# A store that answers but cannot be listed (etcd without a quorum, a listing it refuses):
# the registry says so and exits rather than waiting without a word.
FIRST_LISTING_SECONDS = 30.0
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
# A replica away from its store this long ends its watches, so that watchers resume on a
# replica that still follows it (an etcd election alone is shorter).
WATCH_HANDOFF_SECONDS = 3.0


def open_persistence(spec: str) -> Persistence | None:
    """--store memory | sqlite:PATH"""
    if spec == "memory":
        return None
    if spec.startswith("sqlite:") and len(spec) > len("sqlite:"):
        from grpcmesh.registry.sqlite_store import SqlitePersistence

        return SqlitePersistence(spec[len("sqlite:"):])
    raise ValueError(f"--store {spec!r} is not valid: expected 'memory', 'sqlite:PATH' or "
                     "'etcd://HOST:PORT[,HOST:PORT...][/PREFIX]'")


def open_store(spec: str, *, warmup: float = 10.0,
               limits: RegistryLimits = RegistryLimits()) -> Store:
    """--store memory | sqlite:PATH | etcd://HOST:PORT[,HOST:PORT...][/PREFIX]; ValueError
    for a bad spec (etcd is reached only by Store.open)."""
    if spec.startswith("etcd:"):
        from grpcmesh.registry.etcd_store import EtcdStore, parse_etcd_url

        return EtcdStore(parse_etcd_url(spec), limits)
    return local_store(open_persistence(spec), warmup=warmup, limits=limits)


def local_store(persistence: Persistence | None = None, *, warmup: float = 10.0,
                limits: RegistryLimits = RegistryLimits(),
                history_limit: int = HISTORY_LIMIT) -> LocalStore:
    """The store of one registry process: memory, or memory and a SQLite file. A stored
    config that cannot be read is a ValueError."""
    clock = MonotonicClock()
    state = RegistryStore(clock, random.Random(), persistence, warmup, limits)
    configs = ConfigStore(persistence if isinstance(persistence, ConfigPersistence) else None)
    close = getattr(persistence, "close", None)
    return LocalStore(state, configs, clock, history_limit, close)


class RegistryServer:
    def __init__(self, listen: str = "127.0.0.1:7700", persistence: Persistence | None = None,
                 *, check_interval: float = 1.0, warmup: float = 10.0,
                 catalog: MethodCatalog = MethodCatalog(),
                 limits: RegistryLimits = RegistryLimits(),
                 config: Prepared | None = None, store: Store | None = None) -> None:
        """store: where the state lives (default: this process, with persistence if given).
        config: the mesh config to start with (`--config`), applied over the stored one: the
        same content keeps its version."""
        self.listen = listen
        self.store: Store = store if store is not None else local_store(
            persistence, warmup=warmup, limits=limits)
        self.view = View(self.store.store_id, self.store.limits,
                         lease_index=self.store.shared)
        self._config = config
        self._checker = HealthChecker(self.store, self.view, poll_interval=check_interval)
        self.service = RegistryService(self.store, self.view, catalog)
        self._server = grpc.aio.server(options=server_options())
        self._tasks: list[asyncio.Task[None]] = []
        self._health = health.aio.HealthServicer()
        self._health_set: asyncio.Task[None] | None = None
        self._handoff: asyncio.Task[None] | None = None
        self.leading = False  # whether this replica runs the health checks now
        self.address = ""
        self._stopped = False

    async def start(self) -> str:
        await self.store.open()
        self.view.store_id = self.store.store_id  # an etcd store knows it once connected
        if self._config is not None:
            await self.store.apply_config(self._config, time.time())
        loop = asyncio.get_running_loop()
        listed = asyncio.Event()
        health_servicer = self._health
        self._tasks.append(loop.create_task(follow(self.store, self.view, listed,
                                                   self._store_state)))
        try:
            await asyncio.wait_for(listed.wait(), FIRST_LISTING_SECONDS)
        except TimeoutError:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.store.close()
            raise ValueError(f"could not read the store within {FIRST_LISTING_SECONDS:g} s "
                             "(the log says why)") from None
        add_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self._server)
        enable_reflection(self._server, [REGISTRY_SERVICE, health.SERVICE_NAME])
        port = bind(self._server, self.listen, "registry")
        self.address = with_port(self.listen, port)
        await self._server.start()
        for name in ("", REGISTRY_SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._tasks.append(loop.create_task(self._lead_checks()))
        log.info("registry listening on %s (%d instances, mesh config version %d, store %s)",
                 self.address, len(self.view.instances()), self.view.config.version,
                 self.store.store_id)
        return self.address

    def _store_state(self, up: bool) -> None:
        """grpc.health.v1 says whether this replica can reach its store: the Registry service
        is NOT_SERVING while it cannot (readiness probes and load balancers send clients to
        another replica; it still answers reads from what it knew). "" stays SERVING: the
        process is alive."""
        status = (health_pb2.HealthCheckResponse.SERVING if up
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.address:  # after start(): before it, start() sets SERVING itself
            self._health_set = asyncio.get_running_loop().create_task(
                self._health.set(REGISTRY_SERVICE, status))
        if self._handoff is not None:
            self._handoff.cancel()
            self._handoff = None
        if not up and self.address and not self._stopped:
            self._handoff = asyncio.get_running_loop().create_task(self._hand_off_watches())

    async def _hand_off_watches(self) -> None:
        """Still away from the store after WATCH_HANDOFF_SECONDS: end the watches here, so
        that watchers resume on another replica (a watcher that comes back is served what
        this replica knows)."""
        await asyncio.sleep(WATCH_HANDOFF_SECONDS)
        log.warning("cannot reach the store for %g s: ending this registry's watches so that "
                    "watchers move to another replica", WATCH_HANDOFF_SECONDS)
        self.service.close("the registry cannot reach its store: watch another replica")

    async def _lead_checks(self) -> None:
        """Run the health checks of registry-checked instances while this replica leads them."""
        leadership = self.store.leadership("checker")
        try:
            while True:
                await leadership.acquire()
                log.info("this registry now runs the health checks")
                self._checker.start()
                self.leading = True
                try:
                    await leadership.lost()
                finally:
                    self.leading = False
                    await self._checker.stop()
                log.warning("this registry no longer runs the health checks")
        finally:
            await leadership.release()

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._handoff is not None:
            self._handoff.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.service.close()
        await self._server.stop(grace)
        await self.store.close()

    async def wait(self) -> None:
        await self._server.wait_for_termination()
