"""Registry values: instances, health, watch events and the mesh config as it travels, with
their protobuf conversions."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from sys import intern
from typing import cast

import grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb


class RegistryError(Exception):
    """A request the registry refuses, with the gRPC status code that says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Health(enum.IntEnum):
    UNKNOWN = pb.HEALTH_STATUS_UNKNOWN
    SERVING = pb.SERVING
    NOT_SERVING = pb.NOT_SERVING


class Idempotency(enum.IntEnum):
    """A method's `option idempotency_level` (google.protobuf.MethodOptions.IdempotencyLevel:
    the same numbers; UNKNOWN is its IDEMPOTENCY_UNKNOWN)."""

    UNKNOWN = pb.Method.IDEMPOTENCY_UNKNOWN
    NO_SIDE_EFFECTS = pb.Method.NO_SIDE_EFFECTS
    IDEMPOTENT = pb.Method.IDEMPOTENT

    @classmethod
    def of(cls, value: int) -> Idempotency:
        """A level from a message; a value this version does not know is UNKNOWN."""
        return cls(value) if value in cls._value2member_map_ else cls.UNKNOWN


@dataclass(frozen=True, slots=True)
class Method:
    """A proto method, its call kind (which sides stream) and its idempotency level."""

    path: str  # "/shop.v1.Orders/Get"
    client_streaming: bool = False
    server_streaming: bool = False
    idempotency: Idempotency = Idempotency.UNKNOWN

    @property
    def kind(self) -> tuple[bool, bool]:
        return (self.client_streaming, self.server_streaming)

    def to_proto(self) -> pb.Method:
        return pb.Method(path=self.path, client_streaming=self.client_streaming,
                         server_streaming=self.server_streaming,
                         idempotency_level=cast(pb.Method.IdempotencyLevel,
                                                int(self.idempotency)))

    @classmethod
    def from_proto(cls, msg: pb.Method) -> Method:
        return cls(intern(msg.path), msg.client_streaming, msg.server_streaming,
                   Idempotency.of(msg.idempotency_level))


def is_idempotent(method: Method | None) -> bool:
    """Whether calls of method may be sent again once their request left (retried, hedged):
    its proto says NO_SIDE_EFFECTS or IDEMPOTENT. A method nobody described (None) or whose
    level is unknown is not: sending it twice may do twice what it does."""
    return method is not None and method.idempotency != Idempotency.UNKNOWN


# A client-only sidecar announces itself as an instance of its --service with this label and
# no proto services (docs/registry.md, "Client-only sidecars"); sidecars never route to it.
ROLE_LABEL = "grpcmesh.io/role"
CLIENT_ROLE = "client"


@dataclass(frozen=True, slots=True)
class Instance:
    service: str
    instance_id: str
    address: str
    proto_services: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    health: Health = Health.UNKNOWN
    owner: str = ""
    lease_id: int = 0
    methods: tuple[Method, ...] = ()
    admin_address: str = ""  # its sidecar's admin port; "" without one

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.instance_id)

    @property
    def checked_by_registry(self) -> bool:
        return self.lease_id == 0

    @property
    def is_client(self) -> bool:
        """A client-only sidecar's announcement: not an endpoint, never routed to."""
        return (ROLE_LABEL, CLIENT_ROLE) in self.labels

    def to_proto(self) -> pb.Instance:
        return pb.Instance(
            service=self.service, instance_id=self.instance_id, address=self.address,
            proto_services=list(self.proto_services), labels=dict(self.labels),
            health=cast(pb.HealthStatus, int(self.health)), owner=self.owner,
            lease_id=self.lease_id,
            methods=[m.to_proto() for m in self.methods], admin_address=self.admin_address,
        )

    @classmethod
    def from_proto(cls, msg: pb.Instance) -> Instance:
        """The names that instances share (service, proto services, labels, method paths) are
        interned: one string for all of them. With __slots__ this took a typical registration
        from about 2.6 to 1.9 KB of the registry's memory (scripts/bench_registry.py)."""
        return cls(
            service=intern(msg.service), instance_id=msg.instance_id, address=msg.address,
            proto_services=tuple(map(intern, msg.proto_services)),
            labels=tuple(sorted((intern(k), intern(v)) for k, v in msg.labels.items())),
            health=Health(msg.health) if msg.health in Health._value2member_map_ else Health.UNKNOWN,
            owner=msg.owner, lease_id=msg.lease_id,
            methods=tuple(Method.from_proto(m) for m in msg.methods),
            admin_address=msg.admin_address,
        )


class EventType(enum.IntEnum):
    SNAPSHOT = pb.WatchEvent.SNAPSHOT
    UPSERT = pb.WatchEvent.UPSERT
    DELETE = pb.WatchEvent.DELETE
    CONFIG = pb.WatchEvent.CONFIG
    RESUMED = pb.WatchEvent.RESUMED


@dataclass(frozen=True)
class PushedConfig:
    """A mesh config as the registry sends it: its version and canonical JSON, not parsed
    here (a sidecar parses it, and keeps its old config if it cannot)."""

    version: int  # 0: no config applied, no rules
    canonical_json: str = "{}"
    applied_at: float | None = None  # when the registry took it (Unix time); None: version 0

    def to_proto(self) -> pb.AppliedConfig:
        msg = pb.AppliedConfig(version=self.version, canonical_json=self.canonical_json)
        if self.applied_at is not None:
            msg.applied_at.FromNanoseconds(round(self.applied_at * 1e9))
        return msg

    @classmethod
    def from_proto(cls, msg: pb.AppliedConfig) -> PushedConfig:
        applied_at = msg.applied_at.ToNanoseconds() / 1e9 if msg.HasField("applied_at") else None
        return cls(msg.version, msg.canonical_json or "{}", applied_at)


@dataclass(frozen=True, slots=True)
class Event:
    """A change to the registry. SNAPSHOT carries the whole state; the others one instance."""

    type: EventType
    revision: int
    instances: tuple[Instance, ...] = ()
    reason: str = ""
    partial: bool = False  # SNAPSHOT only: the registry is still warming up
    more: bool = False  # SNAPSHOT only: a part, and more parts of the snapshot follow
    config: PushedConfig | None = None  # CONFIG only
    store_id: str = ""  # SNAPSHOT and RESUMED: whose revisions these are

    def to_proto(self) -> pb.WatchEvent:
        msg = pb.WatchEvent(type=cast(pb.WatchEvent.Type, int(self.type)),
                            revision=self.revision,
                            instances=[i.to_proto() for i in self.instances],
                            reason=self.reason, partial=self.partial, more=self.more,
                            store_id=self.store_id)
        if self.config is not None:
            msg.config.CopyFrom(self.config.to_proto())
        return msg

    @classmethod
    def from_proto(cls, msg: pb.WatchEvent) -> Event:
        return cls(EventType(msg.type), msg.revision,
                   tuple(Instance.from_proto(i) for i in msg.instances), msg.reason,
                   msg.partial, msg.more,
                   PushedConfig.from_proto(msg.config) if msg.HasField("config") else None,
                   msg.store_id)


@dataclass(frozen=True)
class ServiceSummary:
    service: str
    proto_services: tuple[str, ...]
    instances: int
    serving: int


@dataclass(slots=True)
class Lease:
    lease_id: int
    ttl: float
    expires_at: float
    key: tuple[str, str] = field(default=("", ""))
