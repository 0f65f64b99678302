"""The registry's state: instances, leases and revisions. Pure: no sockets, no asyncio.

A store that just started holds only part of the mesh: leased instances re-register when their
owners notice (their next keep-alive, within their TTL). For `warmup` seconds its snapshots are
marked partial, so watchers keep the instances it lacks; finish_warmup() then sends every
listener a complete SNAPSHOT.

Time comes from an injected Clock and lease ids from an injected Random, so tests drive lease
expiry with a fake clock. Every change bumps the revision and is handed to the listeners (the
gRPC service fans it out to watchers). Registry-checked instances (no lease) are written to the
optional persistence so they survive a restart; leased instances are not: their owners
re-register when their keep-alive is refused.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

import grpc

from grpcmesh import names
from grpcmesh.clock import Clock
from grpcmesh.registry.limits import RegistryLimits, check_registration, check_room
from grpcmesh.registry.model import (
    Event,
    EventType,
    Health,
    Instance,
    Lease,
    RegistryError,
    ServiceSummary,
)

MAX_TTL_SECONDS = 3600

Listener = Callable[[Event, "Instance | None"], None]


class Persistence(Protocol):
    def load(self) -> list[Instance]: ...
    def save(self, instance: Instance) -> None: ...
    def delete(self, key: tuple[str, str]) -> None: ...


@dataclass(frozen=True)
class Registration:
    instance: Instance
    lease: Lease | None
    revision: int


def _invalid(err: ValueError) -> RegistryError:
    return RegistryError(grpc.StatusCode.INVALID_ARGUMENT, str(err))


def validate_instance(instance: Instance, limits: RegistryLimits = RegistryLimits()) -> None:
    """Raise RegistryError(INVALID_ARGUMENT) naming the first bad field: beyond a limit first
    (cheap, and it bounds the work of the rest), then not a valid name."""
    check_registration(instance, limits)
    try:
        names.check_service(instance.service, "instance.service")
        names.check_instance_id(instance.instance_id, "instance.instance_id")
        names.check_address(instance.address, "instance.address")
        if instance.admin_address:
            names.check_address(instance.admin_address, "instance.admin_address")
        for proto in instance.proto_services:
            names.check_proto_service(proto, "instance.proto_services")
        for key, value in instance.labels:
            names.check_label(key, value, "instance.labels")
        for method in instance.methods:
            _, service, name = (method.path.split("/") + ["", "", ""])[:3]
            if method.path.count("/") != 2 or method.path[0] != "/" or \
                    service not in instance.proto_services or not name.isidentifier():
                raise ValueError(f"instance.methods path {method.path!r} is not "
                                 "/Service/Method for one of instance.proto_services")
    except ValueError as err:
        raise _invalid(err) from None


class InstanceReads:
    """The reads of a set of instances by key: the store's own (RegistryStore) and a
    replica's copy of its store's (view.View)."""

    _instances: dict[tuple[str, str], Instance]

    def instances(self) -> list[Instance]:
        return sorted(self._instances.values(), key=lambda i: i.key)

    def get(self, service: str, instance_id: str) -> Instance | None:
        return self._instances.get((service, instance_id))

    def resolve(self, service: str = "", proto_service: str = "") -> list[Instance]:
        return resolve(self.instances(), service, proto_service)

    def list_services(self) -> list[ServiceSummary]:
        return list_services(self.instances())

    def checked_instances(self) -> list[Instance]:
        """Instances without a lease, whose health the registry itself checks."""
        return [i for i in self.instances() if i.checked_by_registry]


class RegistryStore(InstanceReads):
    def __init__(self, clock: Clock, rng: random.Random | None = None,
                 persistence: Persistence | None = None, warmup: float = 0.0,
                 limits: RegistryLimits = RegistryLimits()) -> None:
        self._clock = clock
        self.limits = limits
        self.warm_until: float | None = clock.now() + warmup if warmup > 0 else None
        self._rng = rng or random.Random()
        self._persistence = persistence
        self._instances: dict[tuple[str, str], Instance] = {}
        self._leases: dict[int, Lease] = {}
        self._listeners: list[Listener] = []
        self.revision = 0
        if persistence is not None:
            for inst in persistence.load():
                self._instances[inst.key] = replace(inst, health=Health.UNKNOWN, lease_id=0)
            self.revision = 1 if self._instances else 0

    # -- observation --------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call listener(event, previous) after every change; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def snapshot(self) -> Event:
        return Event(EventType.SNAPSHOT, self.revision, tuple(self.instances()),
                     partial=self.warm_until is not None)

    def finish_warmup(self) -> bool:
        """End the warm-up once it is due; listeners then get a complete SNAPSHOT."""
        if self.warm_until is None or self._clock.now() < self.warm_until:
            return False
        self.warm_until = None
        # A revision of its own: a watcher that saw the partial state at the old revision
        # must not resume from it as if it were complete.
        self.revision += 1
        event = self.snapshot()
        for listener in list(self._listeners):
            listener(event, None)
        return True

    # -- changes ------------------------------------------------------------------------------

    def register(self, instance: Instance, ttl_seconds: float) -> Registration:
        instance = normalized(instance)
        check_registration_request(instance, ttl_seconds, self.limits)
        previous = self._instances.get(instance.key)
        instance = admit(instance, ttl_seconds, previous, len(self._instances), self.limits)
        if previous is not None and previous.lease_id:
            self._leases.pop(previous.lease_id, None)
        lease = None
        if ttl_seconds > 0:
            lease = Lease(self._new_lease_id(), float(ttl_seconds),
                          self._clock.now() + ttl_seconds, instance.key)
            self._leases[lease.lease_id] = lease
            instance = replace(instance, lease_id=lease.lease_id)
        self._instances[instance.key] = instance
        if self._persistence is not None:
            if instance.checked_by_registry:
                self._persistence.save(instance)
            elif previous is not None and previous.checked_by_registry:
                self._persistence.delete(instance.key)
        revision = self._emit(EventType.UPSERT, instance, previous, "registered")
        return Registration(instance, lease, revision)

    def keep_alive(self, lease_id: int) -> Lease:
        lease = self._live_lease(lease_id)
        lease.expires_at = self._clock.now() + lease.ttl
        return lease

    def set_health(self, lease_id: int, health: Health) -> int:
        lease = self._live_lease(lease_id)
        return self._set_health(lease.key, health)

    def set_checked_health(self, key: tuple[str, str], health: Health) -> int:
        """The registry's own health checker reporting on a registry-checked instance."""
        inst = self._instances.get(key)
        if inst is None or not inst.checked_by_registry:
            return self.revision
        return self._set_health(key, health)

    def deregister(self, service: str, instance_id: str, owner: str) -> int:
        """Remove an instance for its owner: the owner it was registered with (by default its
        address). Without the check any client could empty a service."""
        inst = self._instances.get((service, instance_id))
        check_deregister(inst, service, instance_id, owner)
        assert inst is not None
        return self._remove(inst, "deregistered")

    def expire(self) -> int:
        """Remove every instance whose lease has run out; returns how many were removed."""
        now = self._clock.now()
        expired = [lease for lease in self._leases.values() if lease.expires_at <= now]
        for lease in expired:
            inst = self._instances.get(lease.key)
            if inst is not None and inst.lease_id == lease.lease_id:
                self._remove(inst, f"lease {lease.lease_id} expired")
            self._leases.pop(lease.lease_id, None)
        return len(expired)

    def next_expiry(self) -> float | None:
        """When expire() or finish_warmup() next has work to do."""
        due = [lease.expires_at for lease in self._leases.values()]
        if self.warm_until is not None:
            due.append(self.warm_until)
        return min(due, default=None)

    def bump(self) -> int:
        """A new revision for a write that is not an instance's (the mesh config's)."""
        self.revision += 1
        return self.revision

    # -- internals ----------------------------------------------------------------------------

    def _new_lease_id(self) -> int:
        while True:
            lease_id = self._rng.getrandbits(62) + 1
            if lease_id not in self._leases:
                return lease_id

    def _live_lease(self, lease_id: int) -> Lease:
        lease = self._leases.get(lease_id)
        if lease is not None and lease.expires_at <= self._clock.now():
            self.expire()
            lease = None
        if lease is None:
            raise lease_not_found(lease_id)
        return lease

    def _set_health(self, key: tuple[str, str], health: Health) -> int:
        inst = self._instances[key]
        if inst.health == health:
            return self.revision
        updated = replace(inst, health=health)
        self._instances[key] = updated
        return self._emit(EventType.UPSERT, updated, inst, f"health {health.name}")

    def _remove(self, inst: Instance, reason: str) -> int:
        del self._instances[inst.key]
        if inst.lease_id:
            self._leases.pop(inst.lease_id, None)
        elif self._persistence is not None:
            self._persistence.delete(inst.key)
        return self._emit(EventType.DELETE, inst, inst, reason)

    def _emit(self, type_: EventType, inst: Instance, previous: Instance | None,
              reason: str) -> int:
        self.revision += 1
        event = Event(type_, self.revision, (inst,), reason)
        for listener in list(self._listeners):
            listener(event, previous)
        return self.revision


def lease_not_found(lease_id: int) -> RegistryError:
    """What a sidecar hears when its lease is gone: it registers again."""
    return RegistryError(grpc.StatusCode.NOT_FOUND,
                         f"lease {lease_id} not found: it expired, was revoked or the registry "
                         "restarted; register again")


def normalized(instance: Instance) -> Instance:
    """A registration as stored: its owner (by default its address), no lease yet, proto
    services and labels sorted."""
    return replace(instance, owner=instance.owner or instance.address, lease_id=0,
                   proto_services=tuple(sorted(set(instance.proto_services))),
                   labels=tuple(sorted(instance.labels)))


def check_registration_request(instance: Instance, ttl_seconds: float,
                               limits: RegistryLimits) -> None:
    """Raise RegistryError(INVALID_ARGUMENT) for a bad instance (normalized) or ttl."""
    validate_instance(instance, limits)
    if not 0 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise RegistryError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"ttl_seconds {ttl_seconds} is out of range: expected 0 "
                            f"(registry-checked) to {MAX_TTL_SECONDS}")


def admit(instance: Instance, ttl_seconds: float, previous: Instance | None, held: int,
          limits: RegistryLimits) -> Instance:
    """The instance to store in place of previous (None: a new one, among `held`), or a
    RegistryError saying why it may not be."""
    if previous is None:
        check_room(held, limits, instance)
    if previous is not None and previous.owner != instance.owner:
        raise RegistryError(
            grpc.StatusCode.ALREADY_EXISTS,
            f"instance_id {instance.instance_id!r} of service {instance.service!r} is "
            f"already registered by owner {previous.owner!r} (address {previous.address}); "
            f"deregister it first or choose another instance id",
        )
    if (ttl_seconds == 0 and previous is not None and previous.checked_by_registry
            and previous.address == instance.address):
        # The checker keeps following this address and reports only changes: keep the
        # health it last reported rather than the registrant's initial guess.
        instance = replace(instance, health=previous.health)
    if previous is not None and previous.lease_id and ttl_seconds == 0:
        raise RegistryError(
            grpc.StatusCode.ALREADY_EXISTS,
            f"instance_id {instance.instance_id!r} of service {instance.service!r} is "
            f"registered by its sidecar under lease {previous.lease_id}; a registry-checked "
            "registration cannot replace it (deregister it first)")
    return instance


def check_deregister(inst: Instance | None, service: str, instance_id: str,
                     owner: str) -> None:
    """Raise RegistryError unless owner may remove inst (the instance at service/instance_id,
    None if there is none). Without the owner check any client could empty a service."""
    try:
        names.check_service(service, "service")
        names.check_instance_id(instance_id, "instance_id")
    except ValueError as err:
        raise _invalid(err) from None
    if not owner:
        raise RegistryError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"owner is required to deregister instance_id {instance_id!r} of "
                            f"service {service!r}: give the owner it was registered with "
                            "(its address, unless an owner was given)")
    if inst is None:
        raise RegistryError(grpc.StatusCode.NOT_FOUND,
                            f"instance_id {instance_id!r} of service {service!r} is not "
                            "registered")
    if owner != inst.owner:
        raise RegistryError(grpc.StatusCode.PERMISSION_DENIED,
                            f"instance_id {instance_id!r} of service {service!r} is not owned "
                            f"by {owner!r}: only the owner it was registered with may "
                            "deregister it")


def resolve(instances: Iterable[Instance], service: str = "",
            proto_service: str = "") -> list[Instance]:
    """The instances of a service, or of every service that serves a proto service."""
    if bool(service) == bool(proto_service):
        raise RegistryError(grpc.StatusCode.INVALID_ARGUMENT,
                            "give exactly one of service or proto_service")
    try:
        if service:
            names.check_service(service, "service")
        else:
            names.check_proto_service(proto_service, "proto_service")
    except ValueError as err:
        raise _invalid(err) from None
    found = [i for i in instances
             if (i.service == service if service else proto_service in i.proto_services)]
    if not found:
        what = f"service {service!r}" if service else f"proto service {proto_service!r}"
        raise RegistryError(grpc.StatusCode.NOT_FOUND, f"no instance of {what} is registered")
    return found


def list_services(instances: Iterable[Instance]) -> list[ServiceSummary]:
    """Per service: its proto services, how many instances, how many serving."""
    groups: dict[str, list[Instance]] = {}
    for inst in instances:
        groups.setdefault(inst.service, []).append(inst)
    return [
        ServiceSummary(
            service=name,
            proto_services=tuple(sorted({p for i in insts for p in i.proto_services})),
            instances=len(insts),
            serving=sum(1 for i in insts if i.health == Health.SERVING),
        )
        for name, insts in sorted(groups.items())
    ]


def matches(instance: Instance, service: str, proto_service: str) -> bool:
    """The watch filter: empty filters match everything."""
    if service and instance.service != service:
        return False
    return not proto_service or proto_service in instance.proto_services


def filter_event(event: Event, previous: Instance | None, service: str,
                 proto_service: str) -> Event | None:
    """The event as a filtered watcher should see it (None: not for this watcher)."""
    if event.type == EventType.SNAPSHOT:
        kept: Iterable[Instance] = (i for i in event.instances
                                    if matches(i, service, proto_service))
        return replace(event, instances=tuple(kept))
    inst = event.instances[0]
    if matches(inst, service, proto_service):
        return event
    if event.type == EventType.UPSERT and previous is not None and matches(
            previous, service, proto_service):
        return replace(event, type=EventType.DELETE, instances=(previous,),
                       reason="no longer matches the watch filter")
    return None
