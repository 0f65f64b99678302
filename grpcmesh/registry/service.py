"""The grpcmesh.registry.v1.Registry gRPC service: a thin shell over a Store (writes) and this
replica's View of it (reads, and the changes fanned out to watchers). A write is answered once
the view has seen it, so a client reads its own writes back through the same replica.

Watch answers with bytes serialized once and shared by every watcher (snapshot.py): each change
once, and each snapshot once per revision and filter, in parts. Its handler is registered
without a response serializer (add_to_server) so that grpcio sends those bytes as they are.
The mesh config's CONFIG event, for watchers that include_config, is serialized once per
version too. ApplyConfig validates off the event loop (a 1 MiB file takes about a second),
one config at a time.
"""
from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh import names
from grpcmesh.reflection import MethodCatalog
from grpcmesh.registry.backend import Store, StoreUnavailable
from grpcmesh.registry.config_store import known_instances, prepare, serving_protos
from grpcmesh.registry.history import Change
from grpcmesh.registry.limits import check_watchers
from grpcmesh.registry.model import (
    Event,
    EventType,
    Health,
    Instance,
    PushedConfig,
    RegistryError,
)
from grpcmesh.registry.snapshot import PART_BYTES, encode_instance, snapshot_parts
from grpcmesh.registry.store import filter_event, lease_not_found, matches
from grpcmesh.registry.view import View

T = TypeVar("T")
SERVICE = pb.DESCRIPTOR.services_by_name["Registry"].full_name

# A watcher that falls this far behind gets a fresh SNAPSHOT instead of the backlog.
WATCH_BACKLOG_LIMIT = 10_000
# How long a watch that resumes from a revision this replica has not seen yet (it was seen
# through another replica) waits for this replica to catch up, before it gets a SNAPSHOT.
RESUME_CATCH_UP_SECONDS = 2.0
# How long a write waits for this replica's view to show it before answering anyway.
READ_BACK_SECONDS = 5.0


class _Watcher:
    def __init__(self, service: str, proto_service: str, include_config: bool = False) -> None:
        self.service = service
        self.proto_service = proto_service
        self.include_config = include_config
        self.pending: collections.deque[bytes] = collections.deque()
        self.resync = False
        self.wakeup = asyncio.Event()
        self.closing = ""  # why the stream ends (UNAVAILABLE), once set

    def push(self, data: bytes) -> None:
        if len(self.pending) >= WATCH_BACKLOG_LIMIT:
            self.start_over()
        else:
            self.pending.append(data)
            self.wakeup.set()

    def start_over(self) -> None:
        """Send a fresh snapshot next: it holds everything pending, which is dropped."""
        self.pending.clear()
        self.resync = True
        self.wakeup.set()


class _Capture:
    """Takes the method handlers that the generated add_RegistryServicer_to_server makes."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers = dict(handlers)


def add_to_server(service: RegistryService, server: grpc.aio.Server) -> None:
    """The generated handlers, but Watch yields serialized WatchEvents (bytes)."""
    capture = _Capture()
    registry_pb2_grpc.add_RegistryServicer_to_server(service, capture)
    handlers = capture.handlers
    handlers["Watch"] = grpc.unary_stream_rpc_method_handler(
        service.Watch, request_deserializer=pb.WatchRequest.FromString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


class RegistryService(registry_pb2_grpc.RegistryServicer):
    def __init__(self, store: Store, view: View, catalog: MethodCatalog = MethodCatalog(),
                 part_bytes: int = PART_BYTES) -> None:
        self.store = store
        self.view = view
        self._config_event = self._encode_config(view.config)
        self._applying = asyncio.Lock()
        self._catalog = catalog
        self._part_bytes = part_bytes
        self._watchers: set[_Watcher] = set()
        self._catching_up = 0  # Watches waiting for this replica to reach their revision
        # Each instance's bytes (by key, for the Instance object they encode), and the current
        # revision's snapshot parts per watch filter; cleared by every change.
        self._encoded: dict[tuple[str, str], tuple[Instance, bytes]] = {}
        self._snapshots: dict[tuple[str, str], list[bytes]] = {}
        view.subscribe(self._on_event)
        view.subscribe_config(self._on_config)

    def close(self, why: str = "the registry is shutting down") -> None:
        """End every Watch stream with UNAVAILABLE (why), so watchers go to another registry
        (or retry) at once instead of being cancelled when the server's grace period ends, or
        waiting on a replica that cannot follow its store."""
        for watcher in self._watchers:
            watcher.closing = why
            watcher.wakeup.set()

    # -- watch fan-out ------------------------------------------------------------------------

    def _on_event(self, event: Event, previous: Instance | None) -> None:
        self._snapshots.clear()
        if event.type == EventType.SNAPSHOT:  # the warm-up ended: everyone starts over
            for watcher in self._watchers:
                watcher.start_over()
            return
        if event.type == EventType.DELETE:
            self._encoded.pop(event.instances[0].key, None)
        shared: bytes | None = None
        for watcher in self._watchers:
            seen = filter_event(event, previous, watcher.service, watcher.proto_service)
            if seen is event:
                if shared is None:
                    shared = event.to_proto().SerializeToString()
                watcher.push(shared)
            elif seen is not None:  # a DELETE for a watcher whose filter it no longer matches
                watcher.push(seen.to_proto().SerializeToString())

    @staticmethod
    def _encode_config(config: PushedConfig) -> bytes:
        data: bytes = Event(EventType.CONFIG, 0, config=config).to_proto().SerializeToString()
        return data

    def _on_config(self, config: PushedConfig) -> None:
        self._config_event = self._encode_config(config)
        for watcher in self._watchers:
            if watcher.include_config:
                watcher.push(self._config_event)

    def _start(self, watcher: _Watcher) -> list[bytes]:
        """What a watcher is sent first, and after falling behind: the snapshot, then (if it
        asked) the config in force."""
        parts = self.snapshot(watcher.service, watcher.proto_service)
        return [*parts, self._config_event] if watcher.include_config else parts

    def _encode(self, instance: Instance) -> bytes:
        cached = self._encoded.get(instance.key)
        if cached is None or cached[0] is not instance:
            cached = self._encoded[instance.key] = (instance, encode_instance(instance))
        return cached[1]

    def snapshot(self, service: str = "", proto_service: str = "") -> list[bytes]:
        """The current snapshot for a watch filter, in serialized parts."""
        key = (service, proto_service)
        parts = self._snapshots.get(key)
        if parts is None:
            parts = self._snapshots[key] = snapshot_parts(
                self.view.revision, self.view.partial,
                [self._encode(i) for i in self.view.instances()
                 if matches(i, service, proto_service)], self._part_bytes,
                self.view.store_id)
        return parts

    def _resume(self, watcher: _Watcher, after: int) -> list[bytes] | None:
        """What a watcher resuming after revision `after` is sent first: RESUMED, what changed
        since (filtered as its watch is), and the config if it asked. None: start over."""
        held = self.view.since(after)
        if held is None:
            return None
        # A watch may have broken between changes that share `after` (the keys of one etcd
        # transaction): they all go again, as applying one twice changes nothing.
        again = self.view.at(after)
        if len(again) > 1:
            held = again + held
        out = [Event(EventType.RESUMED, after,
                     store_id=self.view.store_id).to_proto().SerializeToString()]
        for change in held:
            out.extend(self._replayed(watcher, change))
        if watcher.include_config:
            out.append(self._config_event)
        return out

    def _replayed(self, watcher: _Watcher, change: Change) -> list[bytes]:
        if change.event.type == EventType.CONFIG:
            return []  # the config in force is sent once, after the changes
        seen = filter_event(change.event, change.previous, watcher.service,
                            watcher.proto_service)
        return [] if seen is None else [seen.to_proto().SerializeToString()]

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[int]],
                    ) -> int:
        """Make a write, answer with its revision once this replica's view shows it."""
        revision = await self._abort_on_error(context, fn)
        await self.view.wait_for(revision, READ_BACK_SECONDS)
        return revision

    async def _abort_on_error(self, context: grpc.aio.ServicerContext,
                              fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except RegistryError as err:
            await context.abort(err.code, err.message)
            raise  # unreachable: abort raises
        except StoreUnavailable as err:  # the client tries again, or another replica
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
            raise

    async def Register(self, request: pb.RegisterRequest,
                       context: grpc.aio.ServicerContext) -> pb.RegisterResponse:
        if not request.HasField("instance"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "instance is required")
        instance = Instance.from_proto(request.instance)
        if not instance.methods:  # an app without reflection: kinds from --descriptor-set
            instance = replace(instance, methods=self._catalog.methods_for(
                instance.proto_services))
        reg = await self._abort_on_error(context, lambda: self.store.register(
            instance, request.ttl_seconds))
        await self.view.wait_for(reg.revision, READ_BACK_SECONDS)
        ttl = int(reg.lease.ttl) if reg.lease is not None else request.ttl_seconds
        return pb.RegisterResponse(lease_id=reg.instance.lease_id, ttl_seconds=ttl,
                                   revision=reg.revision)

    async def KeepAlive(self, request: pb.KeepAliveRequest,
                        context: grpc.aio.ServicerContext) -> pb.KeepAliveResponse:
        if not self.view.holds_lease(request.lease_id):
            # Only a lease an instance is registered under: not one whose instance is gone
            # (its key deleted, its deregistration's revoke lost), nor a replica's own.
            err = lease_not_found(request.lease_id)
            await context.abort(err.code, err.message)
        lease = await self._abort_on_error(context, lambda: self.store.keep_alive(
            request.lease_id))
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
        try:
            found = self.view.resolve(request.service, request.proto_service)
        except RegistryError as err:
            await context.abort(err.code, err.message)
        return pb.ResolveResponse(instances=[i.to_proto() for i in found],
                                  revision=self.view.revision)

    async def ListServices(self, request: pb.ListServicesRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListServicesResponse:
        return pb.ListServicesResponse(
            services=[pb.ServiceSummary(service=s.service, proto_services=s.proto_services,
                                        instances=s.instances, serving=s.serving)
                      for s in self.view.list_services()],
            revision=self.view.revision)

    async def Watch(self, request: pb.WatchRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            if request.service:
                names.check_service(request.service, "service")
            if request.proto_service:
                names.check_proto_service(request.proto_service, "proto_service")
            check_watchers(len(self._watchers) + self._catching_up, self.view.limits)
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except RegistryError as err:
            await context.abort(err.code, err.message)
        watcher = _Watcher(request.service, request.proto_service, request.include_config)
        resume = request.after_revision > 0 and request.store_id == self.view.store_id
        if resume and request.after_revision > self.view.reached:
            self.store.request_progress()  # etcd's revision moves with others' writes too
            self._catching_up += 1  # a watcher already, for max_watchers
            try:
                await self.view.wait_for(request.after_revision, RESUME_CATCH_UP_SECONDS)
            finally:
                self._catching_up -= 1
        # The first messages and the subscription happen in one step of the event loop:
        # nothing is missed.
        parts = (self._resume(watcher, request.after_revision) if resume else None) \
            or self._start(watcher)
        self._watchers.add(watcher)
        try:
            while True:
                for part in parts:
                    yield part
                await watcher.wakeup.wait()
                watcher.wakeup.clear()
                if watcher.closing:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, watcher.closing)
                parts = []
                if watcher.resync:  # everything pending is in the current snapshot
                    watcher.resync = False
                    watcher.pending.clear()
                    parts = self._start(watcher)
                while watcher.pending:
                    yield watcher.pending.popleft()
        finally:
            self._watchers.discard(watcher)

    async def ApplyConfig(self, request: pb.ApplyConfigRequest,
                          context: grpc.aio.ServicerContext) -> pb.ApplyConfigResponse:
        async with self._applying:  # one at a time: each may take a core for a second
            instances = self.view.instances()
            known, serving = known_instances(instances), serving_protos(instances)
            try:
                ready = await asyncio.to_thread(prepare, request.text,
                                                request.source or "config", known, serving)
            except RegistryError as err:
                await context.abort(err.code, err.message)
            applied = await self._abort_on_error(
                context, lambda: self.store.apply_config(ready, time.time()))
        await self.view.wait_for(applied.revision, READ_BACK_SECONDS)
        return pb.ApplyConfigResponse(config=applied.current.to_proto(), changed=applied.changed,
                                      warnings=applied.warnings)

    async def GetConfig(self, request: pb.GetConfigRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetConfigResponse:
        return pb.GetConfigResponse(config=self.view.config.to_proto())
