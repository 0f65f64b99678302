"""Talking to the registry: one-shot calls with failover across addresses, the Registrar that
keeps one instance registered, and a watch that reconnects with backoff.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh import names
from grpcmesh.registry.model import Event, EventType, Health, Instance
from grpcmesh.registry.snapshot import SnapshotAssembler, SnapshotError

log = logging.getLogger(__name__)

_FAILOVER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def parse_registry_addresses(text: str) -> list[str]:
    addresses = [a.strip() for a in text.split(",") if a.strip()]
    if not addresses:
        raise ValueError("--registry is empty: expected HOST:PORT[,HOST:PORT...]")
    for address in addresses:
        names.check_address(address, "--registry address")
    return addresses


class Backoff:
    """Exponential backoff with full jitter, reset after a success."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0,
                 rng: random.Random | None = None) -> None:
        self._initial = initial
        self._maximum = maximum
        self._attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self._maximum, self._initial * 2 ** self._attempt)
        if ceiling < self._maximum:  # stop counting at the cap: 2**attempt must not overflow
            self._attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


class RegistryClient:
    """Calls the first registry that answers; moves to the next address when one is down."""

    def __init__(self, addresses: list[str], timeout: float = 5.0) -> None:
        self.addresses = addresses
        self.timeout = timeout
        self._index = 0
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_pb2_grpc.RegistryStub | None = None

    @property
    def address(self) -> str:
        return self.addresses[self._index]

    def stub(self) -> registry_pb2_grpc.RegistryStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.address)
            self._stub = registry_pb2_grpc.RegistryStub(self._channel)
        return self._stub

    def rotate(self) -> None:
        """Use the next address from now on."""
        if self._channel is not None:
            channel = self._channel
            asyncio.get_running_loop().create_task(channel.close())
        self._channel = self._stub = None
        self._index = (self._index + 1) % len(self.addresses)

    async def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """Call method on the registry, trying each address once if it is unreachable."""
        for attempt in range(len(self.addresses)):
            try:
                return await getattr(self.stub(), method)(request, timeout=timeout or self.timeout)
            except grpc.aio.AioRpcError as err:
                if err.code() not in _FAILOVER or attempt == len(self.addresses) - 1:
                    raise
                log.warning("registry %s: %s; trying the next one", self.address, err.code().name)
                self.rotate()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None


async def watch_forever(client: RegistryClient, on_event: Callable[[Event], None],
                        request: pb.WatchRequest | None = None,
                        on_state: Callable[[bool], None] = lambda up: None) -> None:
    """Follow the registry until cancelled. While the registry is away, nothing is forgotten.
    After a reconnect the watch asks to resume after the last revision it applied: a replica of
    the same store that still holds the changes since sends just those (after a RESUMED, which
    on_event does not see); otherwise the first event is a SNAPSHOT, which replaces what was
    known.

    A snapshot may come in parts: on_event gets it whole, once its last part has arrived, and
    never a part of a snapshot whose stream broke."""
    backoff = Backoff()
    base = request or pb.WatchRequest()
    position = WatchPosition()
    up = False
    warned = False
    while True:
        snapshot = SnapshotAssembler()
        request = pb.WatchRequest()
        request.CopyFrom(base)
        request.store_id, request.after_revision = position.store_id, position.revision
        call = client.stub().Watch(request)
        try:
            async for msg in call:
                if not up:
                    up, warned = True, False
                    backoff.reset()
                    on_state(True)
                    log.info("watching registry %s (%s at revision %d)", client.address,
                             "resumed" if msg.type == pb.WatchEvent.RESUMED else "snapshot",
                             msg.revision)
                event = snapshot.feed(Event.from_proto(msg))
                if event is not None and position.apply(event):
                    on_event(event)
            log.warning("registry %s ended the watch; reconnecting", client.address)
        except grpc.aio.AioRpcError as err:
            # Logged once per outage (and once if it never answered); retries stay quiet.
            log.log(logging.DEBUG if warned and not up else logging.WARNING,
                    "registry %s watch failed: %s %s; keeping the last known endpoints and "
                    "retrying", client.address, err.code().name, err.details())
            warned = True
            client.rotate()
        except SnapshotError as err:
            call.cancel()
            log.warning("registry %s: %s; watching again", client.address, err)
            client.rotate()
        if up:
            up = False
            on_state(False)
        await asyncio.sleep(backoff.next())


class WatchPosition:
    """Where a watcher is: the store its state came from and the last revision it applied."""

    def __init__(self) -> None:
        self.store_id = ""
        self.revision = 0

    def apply(self, event: Event) -> bool:
        """Note an event; False if it only moves the position (RESUMED) and is not applied."""
        if event.type in (EventType.SNAPSHOT, EventType.RESUMED):
            self.store_id = event.store_id
        if event.type != EventType.CONFIG:  # a CONFIG carries revision 0
            self.revision = event.revision
        return event.type != EventType.RESUMED


class Registrar:
    """Keeps one instance registered under a lease: registers, keeps the lease alive,
    publishes health changes at once, and registers again when the lease is gone (expired, or
    the registry restarted)."""

    def __init__(self, client: RegistryClient, instance: Instance, ttl_seconds: int = 10) -> None:
        self._client = client
        self.instance = instance
        self.ttl = ttl_seconds
        self.lease_id = 0
        self._changed = asyncio.Event()
        self.registered = asyncio.Event()

    def set_health(self, health: Health) -> None:
        if health != self.instance.health:
            self.instance = replace(self.instance, health=health)
            self._changed.set()

    async def run(self) -> None:
        backoff = Backoff()
        warned = False
        while True:
            try:
                await self._register()
                backoff.reset()
                warned = False
                await self._keep_alive()
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    log.warning("registry forgot lease %d (%s); registering again",
                                self.lease_id, err.details())
                    self.lease_id = 0
                    continue
                if err.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.ALREADY_EXISTS):
                    raise  # retrying cannot help: the caller reports it
                log.log(logging.DEBUG if warned else logging.WARNING,
                        "registry %s: %s %s; registering again when it answers",
                        self._client.address, err.code().name, err.details())
                warned = True
                self.lease_id = 0
                await asyncio.sleep(backoff.next())

    async def _register(self) -> None:
        self._changed.clear()
        resp = await self._client.call("Register", pb.RegisterRequest(
            instance=self.instance.to_proto(), ttl_seconds=self.ttl))
        self.lease_id = resp.lease_id
        self.registered.set()
        log.info("registered %s/%s at %s as %s (lease %d, ttl %ds)", self.instance.service,
                 self.instance.instance_id, self.instance.address, self.instance.health.name,
                 self.lease_id, self.ttl)

    async def _keep_alive(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), self.ttl / 3)
            except TimeoutError:
                await self._client.call("KeepAlive", pb.KeepAliveRequest(lease_id=self.lease_id),
                                        timeout=self.ttl / 3)
                continue
            self._changed.clear()
            health = self.instance.health
            await self._client.call("SetHealth", pb.SetHealthRequest(
                lease_id=self.lease_id, health=cast(pb.HealthStatus, int(health))))
            log.info("published health %s", health.name)

    async def deregister(self, timeout: float = 2.0) -> None:
        inst = self.instance
        try:  # the registry gave the registration its address as owner unless one was set
            await self._client.call("Deregister", pb.DeregisterRequest(
                service=inst.service, instance_id=inst.instance_id,
                owner=inst.owner or inst.address), timeout=timeout)
            log.info("deregistered %s/%s", inst.service, inst.instance_id)
        except grpc.aio.AioRpcError as err:
            log.warning("deregister failed (%s %s); the lease will expire instead",
                        err.code().name, err.details())
