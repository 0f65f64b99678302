"""From a call's method path to the endpoints that may serve it. Pure: no sockets.

A call to /pkg.Service/Method goes to the mesh services whose instances serve pkg.Service
(usually one; if several do, their endpoints form one target). A client can instead name a mesh
service explicitly with the `grpcmesh-service` request header (grpcio servers cannot see
:authority, grpc/grpc#38906). Services stay known after their last instance goes, so a call
during a full restart gets UNAVAILABLE (retryable), not UNIMPLEMENTED. The mesh config's
external services (grpcmesh/external/) come first, by proto service and by name: set_external.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from grpcmesh.balance.endpoint import Endpoint, LoadSettings
from grpcmesh.balance.picker import Picker, RoundRobin
from grpcmesh.balance.pool import Pool
from grpcmesh.registry.model import Event, EventType, Instance, Method

if TYPE_CHECKING:
    from grpcmesh.external.table import Outside

SERVICE_HEADER = "grpcmesh-service"


class RouteError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Target:
    """Where a call may go: the pools of one or more mesh services and their picker.

    A target for a proto service keeps only the instances that serve it: during a rolling
    upgrade in which v2 adds a proto service, its calls must not reach v1 instances."""

    name: str
    pools: tuple[Pool, ...]
    picker: Picker = field(default_factory=RoundRobin)
    proto: str | None = None
    labels: tuple[tuple[str, str], ...] = ()  # a subset: only instances with these labels
    external: Outside | None = None  # an external service's (grpcmesh/external/); None: mesh
    _ready: Sequence[Endpoint] = ()
    _versions: object = None  # the pools' versions when _ready was made

    @property
    def service(self) -> str:
        """The mesh service whose rules apply (the first, when several serve a proto)."""
        return self.pools[0].service if self.pools else ""

    def subset(self, name: str, labels: tuple[tuple[str, str], ...]) -> Target:
        """The same target, restricted to the instances with labels (a config's subset)."""
        return Target(f"{self.name} (subset {name})", self.pools, self.picker, self.proto,
                      labels, self.external)

    def ready(self) -> Sequence[Endpoint]:
        pools = self.pools  # (per call: one pool, the usual case, makes no tuple)
        versions = pools[0].version if len(pools) == 1 else \
            tuple([pool.version for pool in pools])
        if versions != self._versions:  # recomputed only after discovery changed a pool
            ready = [e for pool in self.pools for e in pool.ready]
            if self.proto is not None:
                ready = [e for e in ready if self.proto in e.instance.proto_services]
            if self.labels:
                wanted = set(self.labels)
                ready = [e for e in ready if wanted <= set(e.instance.labels)]
            self._ready, self._versions = ready, versions
        return self._ready

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        return self.picker.pick(self.ready(), exclude)

    def describe(self) -> str:
        return ", ".join(f"{p.service}: {p.describe()}" for p in self.pools)


def service_of(method: str) -> str:
    """'/shop.v1.Orders/Get' -> 'shop.v1.Orders'."""
    parts = method.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        raise RouteError(grpc.StatusCode.UNIMPLEMENTED,
                         f"malformed method path {method!r}: expected /package.Service/Method")
    return parts[1]


class RouteTable:
    def __init__(self, picker_factory: Callable[[str], Picker] = lambda service: RoundRobin(),
                 on_endpoint_removed: Callable[[Endpoint], None] = lambda e: None,
                 load: LoadSettings = LoadSettings()) -> None:
        """picker_factory(service) makes the picker for a target; a target that spans several
        services uses the first service's (in name order)."""
        self.pools: dict[str, Pool] = {}
        self.synced = False
        self.revision = 0
        self._proto_index: dict[str, set[str]] = {}
        self._methods: dict[str, Method] = {}
        self._targets: dict[tuple[str, str], Target] = {}
        self._external: Mapping[tuple[str, str], Target] = {}
        self._picker_factory = picker_factory
        self._on_endpoint_removed = on_endpoint_removed
        self._load = load

    # -- discovery ----------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if event.type == EventType.SNAPSHOT:
            by_service: dict[str, list[Instance]] = {name: [] for name in self.pools}
            for inst in event.instances:
                if inst.is_client:  # a client-only sidecar: not an endpoint
                    continue
                by_service.setdefault(inst.service, []).append(inst)
                self._index(inst)
            for name, insts in by_service.items():
                if event.partial:  # a registry warming up: add what it has, remove nothing
                    for inst in insts:
                        self._pool(name).upsert(inst)
                else:
                    self._pool(name).reset(insts)
            self.synced = True
        elif event.type == EventType.UPSERT and event.instances[0].is_client:
            pool = self.pools.get(event.instances[0].service)  # in case it was an endpoint
            if pool is not None:
                pool.remove(event.instances[0].instance_id)
        elif event.type == EventType.UPSERT:
            inst = event.instances[0]
            self._index(inst)
            self._pool(inst.service).upsert(inst)
        elif event.type == EventType.DELETE:
            inst = event.instances[0]
            pool = self.pools.get(inst.service)
            if pool is not None:
                pool.remove(inst.instance_id)
        self.revision = event.revision

    def _pool(self, service: str) -> Pool:
        pool = self.pools.get(service)
        if pool is None:
            pool = self.pools[service] = Pool(service, self._on_endpoint_removed, self._load)
        return pool

    def _index(self, inst: Instance) -> None:
        for method in inst.methods:
            self._methods[method.path] = method
        for proto in inst.proto_services:
            services = self._proto_index.setdefault(proto, set())
            if inst.service not in services:
                services.add(inst.service)
                self._targets.pop(("proto", proto), None)

    def new_pickers(self) -> None:
        """Targets get pickers anew from picker_factory (the mesh config's balancer changed);
        calls already picked keep their endpoints, and the endpoints their load."""
        self._targets.clear()

    def set_external(self, targets: Mapping[tuple[str, str], Target]) -> None:
        """The external services' targets, by ("proto", proto service) and ("service", name)
        (grpcmesh/external/table.py). They come first: the config names them explicitly, so
        they win over mesh services that serve the same proto service or have the same name."""
        self._external = targets
        self._targets.clear()

    # -- routing ------------------------------------------------------------------------------

    def method(self, path: str) -> Method | None:
        """The method as some instance's registration described it (its call kind; the rules
        that depend on what a method does read it here), or None."""
        return self._methods.get(path)

    def route(self, method: str, service_override: str | None = None) -> Target:
        if service_override:
            key = ("service", service_override)
            target = self._targets.get(key)
            if target is None:
                target = self._external.get(key)
                if target is not None:
                    self._targets[key] = target
                    return target
                self._require_sync(f"service {service_override!r}")
                pool = self.pools.get(service_override)
                if pool is None:
                    raise RouteError(grpc.StatusCode.UNIMPLEMENTED,
                                     f"no route to mesh service {service_override!r} (named by "
                                     f"the {SERVICE_HEADER} header): it has never registered")
                target = self._targets[key] = Target(service_override, (pool,),
                                                     self._picker_factory(service_override))
            return target
        proto = service_of(method)
        key = ("proto", proto)
        target = self._targets.get(key)
        if target is None:
            target = self._external.get(key)
            if target is not None:
                self._targets[key] = target
                return target
            self._require_sync(proto)
            services = self._proto_index.get(proto)
            if not services:
                raise RouteError(grpc.StatusCode.UNIMPLEMENTED,
                                 f"no route for {proto}: no mesh service serves it "
                                 f"(method {method})")
            pools = tuple(self.pools[name] for name in sorted(services))
            target = self._targets[key] = Target(proto, pools,
                                                 self._picker_factory(pools[0].service), proto)
        return target

    def _require_sync(self, what: str) -> None:
        if not self.synced:
            raise RouteError(grpc.StatusCode.UNAVAILABLE,
                             f"no route for {what} yet: the registry has not answered")
