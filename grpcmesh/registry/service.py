"""The grpcmesh.registry.v1.Registry gRPC service: a thin shell over RegistryStore."""
from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TypeVar

import grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh import names
from grpcmesh.reflection import MethodCatalog
from grpcmesh.registry.limits import check_watchers
from grpcmesh.registry.model import Event, Health, Instance, RegistryError
from grpcmesh.registry.store import RegistryStore, filter_event

T = TypeVar("T")

# A watcher that falls this far behind gets a fresh SNAPSHOT instead of the backlog.
WATCH_BACKLOG_LIMIT = 10_000


class _Watcher:
    def __init__(self, service: str, proto_service: str) -> None:
        self.service = service
        self.proto_service = proto_service
        self.pending: collections.deque[Event] = collections.deque()
        self.resync = False
        self.wakeup = asyncio.Event()
        self.closing = False

    def on_event(self, event: Event, previous: Instance | None) -> None:
        filtered = filter_event(event, previous, self.service, self.proto_service)
        if filtered is None:
            return
        if len(self.pending) >= WATCH_BACKLOG_LIMIT:
            self.pending.clear()
            self.resync = True
        else:
            self.pending.append(filtered)
        self.wakeup.set()


class RegistryService(registry_pb2_grpc.RegistryServicer):
    def __init__(self, store: RegistryStore, catalog: MethodCatalog = MethodCatalog()) -> None:
        self.store = store
        self._catalog = catalog
        self._watchers: set[_Watcher] = set()

    def close(self) -> None:
        """End every Watch stream with UNAVAILABLE, so watchers go to another registry (or
        retry) at once instead of being cancelled when the server's grace period ends."""
        for watcher in self._watchers:
            watcher.closing = True
            watcher.wakeup.set()

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except RegistryError as err:
            await context.abort(err.code, err.message)
            raise  # unreachable: abort raises

    async def Register(self, request: pb.RegisterRequest,
                       context: grpc.aio.ServicerContext) -> pb.RegisterResponse:
        if not request.HasField("instance"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "instance is required")
        instance = Instance.from_proto(request.instance)
        if not instance.methods:  # an app without reflection: kinds from --descriptor-set
            instance = replace(instance, methods=self._catalog.methods_for(
                instance.proto_services))
        reg = await self._call(context, lambda: self.store.register(
            instance, request.ttl_seconds))
        return pb.RegisterResponse(lease_id=reg.instance.lease_id,
                                   ttl_seconds=request.ttl_seconds, revision=reg.revision)

    async def KeepAlive(self, request: pb.KeepAliveRequest,
                        context: grpc.aio.ServicerContext) -> pb.KeepAliveResponse:
        lease = await self._call(context, lambda: self.store.keep_alive(request.lease_id))
        return pb.KeepAliveResponse(ttl_seconds=int(lease.ttl))

    async def SetHealth(self, request: pb.SetHealthRequest,
                        context: grpc.aio.ServicerContext) -> pb.SetHealthResponse:
        if request.health not in (pb.SERVING, pb.NOT_SERVING):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"health {request.health} is invalid: expected SERVING (1) or "
                                "NOT_SERVING (2)")
        revision = await self._call(
            context, lambda: self.store.set_health(request.lease_id, Health(request.health)))
        return pb.SetHealthResponse(revision=revision)

    async def Deregister(self, request: pb.DeregisterRequest,
                         context: grpc.aio.ServicerContext) -> pb.DeregisterResponse:
        revision = await self._call(context, lambda: self.store.deregister(
            request.service, request.instance_id, request.owner))
        return pb.DeregisterResponse(revision=revision)

    async def Resolve(self, request: pb.ResolveRequest,
                      context: grpc.aio.ServicerContext) -> pb.ResolveResponse:
        found = await self._call(context, lambda: self.store.resolve(
            request.service, request.proto_service))
        return pb.ResolveResponse(instances=[i.to_proto() for i in found],
                                  revision=self.store.revision)

    async def ListServices(self, request: pb.ListServicesRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListServicesResponse:
        return pb.ListServicesResponse(
            services=[pb.ServiceSummary(service=s.service, proto_services=s.proto_services,
                                        instances=s.instances, serving=s.serving)
                      for s in self.store.list_services()],
            revision=self.store.revision)

    async def Watch(self, request: pb.WatchRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchEvent]:
        try:
            if request.service:
                names.check_service(request.service, "service")
            if request.proto_service:
                names.check_proto_service(request.proto_service, "proto_service")
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        try:
            check_watchers(len(self._watchers), self.store.limits)
        except RegistryError as err:
            await context.abort(err.code, err.message)
        watcher = _Watcher(request.service, request.proto_service)
        # Snapshot and subscription happen in one step of the event loop: nothing is missed.
        snapshot = filter_event(self.store.snapshot(), None, watcher.service,
                                watcher.proto_service)
        unsubscribe = self.store.subscribe(watcher.on_event)
        self._watchers.add(watcher)
        try:
            assert snapshot is not None
            yield snapshot.to_proto()
            while True:
                await watcher.wakeup.wait()
                watcher.wakeup.clear()
                if watcher.closing:
                    await context.abort(grpc.StatusCode.UNAVAILABLE,
                                        "the registry is shutting down")
                if watcher.resync:
                    watcher.resync = False
                    again = filter_event(self.store.snapshot(), None, watcher.service,
                                         watcher.proto_service)
                    assert again is not None
                    yield again.to_proto()
                while watcher.pending:
                    yield watcher.pending.popleft().to_proto()
        finally:
            self._watchers.discard(watcher)
            unsubscribe()
