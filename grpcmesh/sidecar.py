"""The sidecar: registers its app, follows the registry, and proxies the app's calls.

Start-up: outbound listener -> registry watch (instances, and the mesh config: mesh_config,
config_version, on_config; sidecar_config.py; its external services are resolved by DNS and
routed to: grpcmesh/external/) -> admin port -> (with an app) inbound listener, learn its
proto services, watch its health, register under a lease (with the admin port's address);
(without one) announce this client-only sidecar under a lease, as no endpoint.
Shutdown (SIGTERM): report NOT_SERVING, deregister, wait drain_delay so peers stop sending,
then stop the listeners, letting calls in flight finish within the grace period.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import socket
import time
import urllib.parse
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh import reflection
from grpcmesh.admin import AdminServer, Raw, Stream, admin_fetch, admin_lines, json_body
from grpcmesh.balance.endpoint import Endpoint
from grpcmesh.balance.picker import BalancerSettings, Picker, make_picker
from grpcmesh.balance.pool import Pool
from grpcmesh.clock import MonotonicClock
from grpcmesh.config import MeshConfig
from grpcmesh.external.resolver import Resolver
from grpcmesh.external.table import ExternalTable
from grpcmesh.health import HealthWatcher
from grpcmesh.interceptors import Interceptor
from grpcmesh.registry.client import Backoff, Registrar, RegistryClient, watch_forever
from grpcmesh.registry.model import (
    CLIENT_ROLE,
    ROLE_LABEL,
    Event,
    EventType,
    Health,
    Instance,
    Method,
)
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.relay import Relay
from grpcmesh.relay.settings import ForwardSettings
from grpcmesh.resilience.ejection import Ejections
from grpcmesh.routing import RouteTable, Target
from grpcmesh.server_util import reconnect_options, with_port
from grpcmesh.sidecar_config import ConfigCallback, ConfigInForce, LiveConfig
from grpcmesh.telemetry.access_log import DEFAULT_BUFFER as DEFAULT_ACCESS_LOG_BUFFER
from grpcmesh.telemetry.access_log import AccessLog, Stamp
from grpcmesh.telemetry.collector import MeshCollector, MeshView
from grpcmesh.telemetry.counters import CallCounters
from grpcmesh.telemetry.exposition import CONTENT_TYPE, Exposition
from grpcmesh.telemetry.merge import merged_text
from grpcmesh.telemetry.tap import Tap, Watcher
from grpcmesh.telemetry.tracing import DEFAULT_RATIO as DEFAULT_TRACE_RATIO
from grpcmesh.telemetry.tracing import Tracing, otlp_provider
from grpcmesh.telemetry.window import Window

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"


@dataclass(frozen=True)
class SidecarSettings:
    service: str
    registry: tuple[str, ...]
    app: str | None = None
    outbound: str = "127.0.0.1:15001"
    inbound: str | None = None
    admin: str | None = "127.0.0.1:15000"  # None: no admin port
    proto_services: tuple[str, ...] = ()
    instance_id: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    ttl_seconds: int = 10
    grace_seconds: float = 10.0
    drain_delay: float = 1.0
    # --workers: listeners share their ports (SO_REUSEPORT) with other sidecar processes; a
    # secondary worker proxies only: the primary registers the app and serves the admin port.
    reuse_port: bool = False
    secondary: bool = False
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    limits: RelayLimits = field(default_factory=RelayLimits)
    # --interceptor: the user's interceptors, first in every call's chain (both listeners)
    interceptors: tuple[Interceptor, ...] = ()
    balancer: BalancerSettings = field(default_factory=BalancerSettings)
    # --access-log PATH|-: a JSON line per call (telemetry/access_log.py), None: off
    access_log: str | None = None
    access_log_buffer: int = DEFAULT_ACCESS_LOG_BUFFER
    # --otlp HOST:PORT: a span per call, exported there (telemetry/tracing.py), None: off
    otlp: str | None = None
    trace_sample_ratio: float = DEFAULT_TRACE_RATIO
    # --no-metrics: no /metrics, and no observer counting each call (docs/telemetry.md)
    metrics: bool = True


def _fixed_target(name: str, service: str, address: str) -> Target:
    """A target of one always-serving endpoint (the local app, the sidecar's own services),
    whose calls are recorded under service."""
    pool = Pool(service)
    pool.upsert(Instance(service, "local", address, health=Health.SERVING))
    return Target(name, (pool,))


class Sidecar:
    def __init__(self, settings: SidecarSettings) -> None:
        self.settings = settings
        # One client each for the watch and the registrar: rotating to the next registry
        # address closes a client's channel, which must not cancel the other's calls.
        self.client = RegistryClient(list(settings.registry))
        self._registrar_client = RegistryClient(list(settings.registry))
        self.clock = MonotonicClock()
        self._rng = random.Random()
        self.routes = RouteTable(self._picker_for, self._endpoint_removed,
                                 settings.balancer.load)
        self.health = health.aio.HealthServicer()
        # The sidecar's own health service answers on the outbound port.
        self._local_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._local_server)
        self._local_port = self._local_server.add_insecure_port("127.0.0.1:0")
        local = _fixed_target("this sidecar", settings.service, f"127.0.0.1:{self._local_port}")
        # --otlp: tracing is the first interceptor of every chain, each way
        self.tracer_provider = (otlp_provider(settings.otlp, settings.service)
                                if settings.otlp is not None else None)
        self.outbound_server = Relay(self._route, local=((HEALTH_PREFIX,), local),
                                     settings=settings.forward, limits=settings.limits,
                                     interceptors=self._interceptors("outbound"),
                                     clock=self.clock, methods=self.routes.method)
        # The mesh config's external services: pools of their resolved addresses, and how the
        # outbound relay dials them (TLS). Built in each process from the config it receives.
        self.external = ExternalTable(self._picker_for, self._endpoint_removed,
                                      settings.balancer.load)
        self.outbound_server.upstreams.dials = self.external.dials
        self.resolver = Resolver(self.external, self.clock)
        # services.NAME.outlier: its observer is on the outbound relay only while some
        # service has the rule (a call costs nothing more otherwise).
        self.ejections = Ejections(self._pool_of, self.clock)
        self.inbound_server: Relay | None = None
        self.access_log: AccessLog | None = None
        self.registrar: Registrar | None = None
        self.app_health = Health.UNKNOWN
        self.registry_up = False
        self.outbound_address = ""
        self.inbound_address = ""
        # The mesh config from the registry: read it through mesh_config / config_version,
        # and hear of each new version through on_config.
        self.config = LiveConfig()
        self.config.listeners.append(self._config_in_force)
        self.admin = AdminServer(settings.admin or "", {
            "/live": lambda: (200, {"live": True}), "/ready": self._ready,
            "/endpoints": self._all_endpoints,
            "/config": lambda: (200, self.config.current.to_json())})
        # Metrics: each relay's CallCounters observe its calls; the rest is read at scrape time
        self.window = Window()  # the last minute of calls, for /stat (grpcmesh stat)
        self.metrics: MeshView | None = None
        if settings.metrics:
            counts = CallCounters("outbound", self.routes.method)
            self.outbound_server.observers.append(counts.observe)
            self.metrics = MeshView([(self.outbound_server, counts)], self._pools,
                                    lambda: self.config_version, lambda: self.registry_up,
                                    self.clock)
            self._exposition = Exposition(MeshCollector(self.metrics))
            self.admin.routes["/metrics"] = self._metrics
            # and the last minute of calls, for grpcmesh stat
            self.outbound_server.observers.append(self.window.observer("outbound"))
            self.admin.routes["/stat"] = self._stat
        # grpcmesh tap: each relay is observed only while someone watches
        self.tap = Tap(Stamp(time.time() - self.clock.now()))
        self.tap.relay(self.outbound_server.observers, "outbound")
        self.admin.routes["/tap"] = self._tap
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.failure: BaseException | None = None
        self.stopped = asyncio.Event()
        self.worker_admins: list[tuple[int, str]] = []  # (pid, admin) of --workers processes

    # -- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        if s.access_log is not None:
            self.access_log = AccessLog(s.access_log, self.clock, s.access_log_buffer)
            self.outbound_server.observers.append(self.access_log.observer("outbound"))
        await self._local_server.start()
        self.outbound_address = with_port(s.outbound, self.outbound_server.bind(
            s.outbound, "outbound", s.reuse_port, join=s.secondary))
        await self.outbound_server.start()
        await self._set_own_health(False)
        self._spawn(self.config.follow(), "mesh-config")
        self._spawn(self.resolver.run(), "external-dns")
        self._spawn(self._outlier_timer(), "outlier-ejection")
        self._spawn(watch_forever(self.client, self._on_event,
                                  pb.WatchRequest(include_config=True),
                                  on_state=self._registry_state), "registry-watch")
        if s.admin is not None:  # before the app's registration, which carries its address
            await self.admin.start()
        if s.app is not None:
            if s.inbound is not None:
                self.inbound_server = self._inbound_server(s.app)
                self.tap.relay(self.inbound_server.observers, "inbound")
                if self.access_log is not None:
                    self.inbound_server.observers.append(self.access_log.observer("inbound"))
                if self.metrics is not None:
                    counts = CallCounters("inbound", self.routes.method, s.service)
                    self.inbound_server.observers.append(counts.observe)
                    self.metrics.relays = [*self.metrics.relays, (self.inbound_server, counts)]
                    self.inbound_server.observers.append(self.window.observer("inbound"))
                self.inbound_server.set_config(self.mesh_config)
                self.inbound_address = with_port(s.inbound, self.inbound_server.bind(
                    s.inbound, "inbound", s.reuse_port, join=s.secondary))
                await self.inbound_server.start()
            if not s.secondary:
                self._spawn(self._serve_app(s.app), "app")
        elif not s.secondary:
            self._spawn(self._announce(), "announce")
        log.info("sidecar for %s: outbound %s, inbound %s, admin %s, app %s", s.service,
                 self.outbound_address, self.inbound_address or "-", self.admin.address,
                 s.app or "none (client only)")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        err = task.exception()
        if isinstance(err, grpc.aio.AioRpcError):  # e.g. the registry refused the registration
            err = RuntimeError(f"the registry refused: {err.code().name}: {err.details()}")
        self.failure = err
        self.stopped.set()

    def _inbound_server(self, app: str) -> Relay:
        s = self.settings
        target = _fixed_target(f"the local app at {app}", s.service, app)
        return Relay(lambda method, override: target, settings=s.forward, limits=s.limits,
                     interceptors=self._interceptors("inbound"), direction="inbound",
                     own_service=s.service, clock=self.clock)

    def _interceptors(self, direction: str) -> tuple[Interceptor, ...]:
        s = self.settings
        if self.tracer_provider is None:
            return s.interceptors
        return (Tracing(self.tracer_provider, direction, s.trace_sample_ratio), *s.interceptors)

    async def _serve_app(self, app: str) -> None:
        s = self.settings
        protos, methods = await self._learn_services(app)
        instance = Instance(
            service=s.service, address=self.inbound_address or app,
            instance_id=s.instance_id or self.inbound_address or app,
            proto_services=tuple(protos), labels=s.labels, methods=methods,
            admin_address=self.admin.address)
        self.registrar = Registrar(self._registrar_client, instance, s.ttl_seconds)
        first = asyncio.Event()

        def on_health(status: Health, why: str) -> None:
            log.info("app %s is %s (%s)", app, status.name, why)
            self.app_health = status
            assert self.registrar is not None
            self.registrar.set_health(status)
            first.set()

        self._spawn(HealthWatcher(app, on_health).run(), "app-health")
        await first.wait()
        await self.registrar.run()

    async def _announce(self) -> None:
        """A client-only sidecar registers itself, so tools find it through the registry: an
        instance of its --service with no proto services, labelled grpcmesh.io/role=client,
        which sidecars never route to (docs/registry.md, "Client-only sidecars"). A registry
        that refuses it does not stop the sidecar: its app's calls matter more."""
        s = self.settings
        port = self.outbound_address.rpartition(":")[2]
        host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:100].strip(".-") or "client"
        instance = Instance(
            service=s.service, address=self.outbound_address,
            # Unique across machines: every client sidecar's outbound is 127.0.0.1:15001.
            instance_id=s.instance_id or f"{host}:{port}",
            labels=tuple(sorted({*((k, v) for k, v in s.labels if k != ROLE_LABEL),
                                 (ROLE_LABEL, CLIENT_ROLE)})),
            health=Health.SERVING, admin_address=self.admin.address)
        self.registrar = Registrar(self._registrar_client, instance, s.ttl_seconds)
        try:
            await self.registrar.run()
        except grpc.aio.AioRpcError as err:
            log.warning("the registry refused this client-only sidecar's announcement (%s: %s);"
                        " it keeps routing, unannounced", err.code().name, err.details())

    async def _learn_services(self, app: str) -> tuple[list[str], tuple[Method, ...]]:
        """The proto services the app serves (--proto-service, or its reflection) and their
        methods' kinds and idempotency levels (from reflection; unknown without it)."""
        given = list(self.settings.proto_services)
        backoff = Backoff(maximum=2.0)
        waited = False
        async with grpc.aio.insecure_channel(app, options=reconnect_options()) as channel:
            while True:
                try:
                    services = given or reflection.application_services(
                        await reflection.list_services(channel))
                    methods = await reflection.describe_methods(channel, services)
                except grpc.aio.AioRpcError as err:
                    if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                        if given:
                            log.info("the app at %s serves no reflection: its methods are "
                                     "unknown, and none is known to be idempotent", app)
                            return given, ()
                        raise RuntimeError(
                            f"cannot learn which proto services the app at {app} serves: it "
                            "does not serve gRPC reflection; pass --proto-service NAME") from None
                    log.log(logging.DEBUG if waited else logging.INFO,
                            "waiting for the app at %s (%s)", app, err.code().name)
                    waited = True
                    await asyncio.sleep(backoff.next())
                    continue
                if not services:
                    raise RuntimeError(f"the app at {app} reports no services through "
                                       "reflection; pass --proto-service NAME")
                log.info("app %s serves %s (%s)", app, ", ".join(services),
                         reflection.methods_summary(methods))
                return services, methods

    # -- discovery ----------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.type == EventType.CONFIG:
            if event.config is not None:
                self.config.push(event.config)
            return
        self.routes.apply(event)

    def _config_in_force(self, config: ConfigInForce) -> None:
        """Calls from now on follow it; calls in flight finish under the rules they started
        with (each call keeps the chain it was given)."""
        for relay in (self.outbound_server, self.inbound_server):
            if relay is not None:
                relay.set_config(config.config)
        self.routes.new_pickers()  # a service's balancer may have changed
        self.routes.set_external(self.external.configure(config.config.external,
                                                         self.clock.now()))
        self.resolver.wake()  # new addresses are resolved at once
        self.ejections.configure(config.config)
        observers = self.outbound_server.observers
        observe = self.ejections.observe
        if self.ejections.detectors and observe not in observers:
            observers.append(observe)
        elif not self.ejections.detectors and observe in observers:
            observers.remove(observe)

    def _pools(self) -> dict[str, Pool]:
        return {**self.routes.pools, **self.external.pools}

    def _pool_of(self, service: str) -> Pool | None:
        return self.routes.pools.get(service) or self.external.pools.get(service)

    async def _outlier_timer(self) -> None:
        """Returns from ejection and the success-rate rule, once a second (off the call path)."""
        while True:
            await asyncio.sleep(1.0)
            self.ejections.tick()

    @property
    def mesh_config(self) -> MeshConfig:
        """The mesh config in force in this sidecar (no rules until the registry sends one)."""
        return self.config.current.config

    @property
    def config_version(self) -> int:
        return self.config.current.version

    @property
    def on_config(self) -> list[ConfigCallback]:
        """Called on the event loop with each new ConfigInForce, once it is in force."""
        return self.config.listeners

    def _registry_state(self, up: bool) -> None:
        if up != self.registry_up:
            self.registry_up = up
            if up:
                task = asyncio.get_running_loop().create_task(self._set_own_health(True))
                self._background.add(task)  # keep a reference until it is done
                task.add_done_callback(self._background.discard)

    def _picker_for(self, service: str) -> Picker:
        return make_picker(self._balancer_kind(service), self._rng, self.clock)

    def _balancer_kind(self, service: str) -> str:
        """The mesh config's balancer for service, else the sidecar's --balancer."""
        rules = self.mesh_config.service(service)
        if rules is not None and rules.balancer:
            return rules.balancer
        return self.settings.balancer.kind_for(service)

    def _route(self, method: str, override: str | None) -> Target:
        return self.routes.route(method, override)

    def _endpoint_removed(self, endpoint: Endpoint) -> None:
        pools = [*self.routes.pools.values(), *self.external.pools.values()]
        still_used = any(e.address == endpoint.address
                         for pool in pools for e in pool.endpoints.values() if e is not endpoint)
        if not still_used:
            self.outbound_server.discard(endpoint.address)

    async def _set_own_health(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set("", status)

    # -- admin --------------------------------------------------------------------------------

    def _ready(self) -> tuple[int, Any]:
        """Ready once routes are known and (with an app) the instance has been registered;
        a registry outage later does not make the sidecar unready: it keeps routing."""
        body: dict[str, Any] = {"routes_synced": self.routes.synced,
                                "registry_up": self.registry_up}
        ready = self.routes.synced
        if self.settings.app is not None:
            registered = self.registrar is not None and self.registrar.registered.is_set()
            ready = ready and registered
            body.update(registered=registered, app_health=self.app_health.name)
        body["ready"] = ready
        return (200 if ready else 503), body

    async def _metrics(self) -> tuple[int, Any]:
        """This process's metrics; with --workers, merged with every worker's (merge.py).
        A worker whose admin port does not answer is left out, and logged."""
        own = self._exposition.render()
        if not self.worker_admins:
            return 200, Raw(CONTENT_TYPE, own)

        texts = [own.decode()]
        for pid, admin, answer in await self._ask_workers("/metrics"):
            if isinstance(answer, Exception):  # (TimeoutError is an OSError)
                log.warning("/metrics leaves out worker %d: cannot read its admin port %s: "
                            "%r", pid, admin, answer)
            else:
                texts.append(answer.decode())
        return 200, Raw(CONTENT_TYPE, merged_text(texts))

    async def _ask_workers(self, path: str) -> list[tuple[int, str, bytes | Exception]]:
        """path from every --workers process's admin port at once (2 s each): (pid, admin,
        its body, or why not)."""
        async def ask(pid: int, admin: str) -> tuple[int, str, bytes | Exception]:
            try:
                return pid, admin, await admin_fetch(admin, path, timeout=2.0)
            except (OSError, ValueError) as err:
                return pid, admin, err
        return list(await asyncio.gather(*(ask(p, a) for p, a in self.worker_admins)))

    async def _all_endpoints(self) -> tuple[int, Any]:
        """This process's view; with --workers, also every worker's own view under "workers"
        (worker 0 is this process), because each worker balances on its own."""
        status, body = self._endpoints()
        if not self.worker_admins:
            return status, body

        views: list[dict[str, Any]] = [{"pid": os.getpid(), "services": body["services"]}]
        for pid, admin, answer in await self._ask_workers("/endpoints"):
            try:
                if isinstance(answer, Exception):
                    raise answer
                views.append({"pid": pid,
                              "services": json_body("/endpoints", answer)["services"]})
            except (OSError, ValueError) as err:  # (TimeoutError is an OSError)
                views.append({"pid": pid, "error": f"cannot read its admin port {admin}: "
                                                   f"{err!r}"})
        body["workers"] = [{"worker": i, **v} for i, v in enumerate(views)]
        return status, body

    def _tap(self, query: dict[str, str]) -> tuple[int, Any]:
        """A line per call through this process from now on (the access log's JSON), as they
        come, filtered by ?service= and ?method= (a name or /pkg.Service/Method); a blank line
        each second nothing comes, and {"dropped": N} when the watcher fell behind."""
        try:
            watcher = self.tap.watch(query.get("service") or None, query.get("method") or None)
        except ValueError as err:
            return 429, {"error": str(err)}

        # With --workers, each worker's calls too: its own /tap, relayed line by line into
        # this watcher's bounded queue (a slow reader loses lines here, not in the workers).
        query_text = urllib.parse.urlencode({k: v for k, v in query.items()
                                             if k in ("service", "method") and v})
        relays = [asyncio.get_running_loop().create_task(
            self._tap_worker(pid, admin, query_text, watcher))
            for pid, admin in self.worker_admins]

        def stop() -> None:
            for task in relays:
                task.cancel()
            self.tap.leave(watcher)

        async def lines() -> AsyncGenerator[bytes, None]:
            dropped = 0
            try:
                while not watcher.closed:
                    try:
                        await asyncio.wait_for(watcher.wake.wait(), 1.0)
                    except TimeoutError:
                        yield b"\n"  # (a write per second: a peer that left is noticed)
                        continue
                    batch = watcher.take()
                    if watcher.dropped != dropped:
                        dropped = watcher.dropped
                        yield f'{{"dropped":{dropped}}}\n'.encode()
                    yield b"".join(batch)
            finally:
                stop()
        # (close: the watcher goes even when the stream never started: a peer that left)
        return 200, Stream("application/x-ndjson", lines(), stop)

    async def _tap_worker(self, pid: int, admin: str, query: str, watcher: Watcher) -> None:
        """One --workers process's /tap lines into watcher, until cancelled."""
        reported = 0  # lines the worker says it dropped for us so far
        try:
            async for text in admin_lines(admin, f"/tap?{query}"):
                if text.startswith(b'{"dropped":'):
                    count = int(json.loads(text)["dropped"])
                    watcher.dropped += max(0, count - reported)
                    watcher.wake.set()
                    reported = max(reported, count)
                elif text.strip():
                    watcher.offer(text)
        except (OSError, ValueError) as err:
            log.warning("/tap leaves out worker %d: cannot follow its admin port %s: %r",
                        pid, admin, err)

    async def _stat(self, query: dict[str, str]) -> tuple[int, Any]:
        """The last `window` seconds (1..60, default 30) of calls, per service and endpoint,
        each way, as counts and latency histograms that add up across sidecars (grpcmesh
        stat); with --workers, every worker's too."""
        try:
            seconds = int(query.get("window", "30"))
        except ValueError:
            return 400, {"error": f"window {query.get('window')!r}: expected whole seconds"}
        rows = self.window.summary(self.clock.now(), seconds)
        serving = {name: len(pool.ready) for name, pool in self.routes.pools.items()}
        for pid, admin, answer in await self._ask_workers(f"/stat?window={seconds}"):
            try:
                if isinstance(answer, Exception):
                    raise answer
                rows += list(json_body("/stat", answer)["rows"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("cannot read worker %d's /stat at %s: %r", pid, admin, err)
        return 200, {"window_s": max(1, min(60, seconds)), "service": self.settings.service,
                     "rows": rows, "serving": serving}

    def _endpoints(self) -> tuple[int, Any]:
        """Why an endpoint gets picked: its estimate, calls in flight and cost, per service."""
        now = self.clock.now()
        wall_offset = time.time() - now
        services: dict[str, Any] = {}
        external = self.external.describe()
        for name, pool in sorted(self._pools().items()):
            endpoints = []
            for _, e in sorted(pool.endpoints.items()):
                estimate = e.rtt.get(now)
                endpoints.append({
                    "instance_id": e.instance.instance_id, "address": e.address,
                    "health": e.instance.health.name,
                    "estimate_ms": None if estimate is None else round(estimate * 1000, 3),
                    "in_flight": e.in_flight, "cost_ms": round(e.cost(now) * 1000, 3),
                    "calls": e.calls, "failures": e.failures,
                    **self.ejections.describe(name, e.address, wall_offset)})
            services[name] = {"balancer": self._balancer_kind(name),
                              "endpoints": endpoints,
                              **self.outbound_server.kept.describe(name)}
            if name in external:  # its configured addresses and what DNS said of each
                services[name]["external"] = external[name]
        return 200, {"revision": self.routes.revision, "registry_up": self.registry_up,
                     "services": services}

    # -- shutdown -----------------------------------------------------------------------------

    def fail(self, why: str) -> None:
        """Stop because something the sidecar depends on (a worker process) failed."""
        self.failure = RuntimeError(why)
        self.stopped.set()

    async def shutdown(self, on_deregistered: Callable[[], None] = lambda: None) -> None:
        """Deregister first, let peers notice, then finish calls in flight and stop."""
        s = self.settings
        await self._set_own_health(False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.registrar is not None and self.registrar.lease_id:
            await self.registrar.deregister()
        on_deregistered()
        if s.app is not None:  # peers stop sending once they hear of the deregistration
            await asyncio.sleep(s.drain_delay)
        servers = [self.outbound_server] + ([self.inbound_server] if self.inbound_server else [])
        await asyncio.gather(*(srv.stop(s.grace_seconds) for srv in servers))
        if s.admin is not None:
            self.tap.close()
            await self.admin.stop()
        await self._local_server.stop(None)
        await self.client.close()
        await self._registrar_client.close()
        loop = asyncio.get_running_loop()
        if self.access_log is not None:  # its last lines, written off the loop (first: local)
            self.access_log.flush()
            await loop.run_in_executor(None, self.access_log.close)
        if self.tracer_provider is not None:  # its last spans: at most ~2 s more
            await loop.run_in_executor(None, self.tracer_provider.shutdown)
        self.stopped.set()
