"""How much the registry takes: from one registration, in all, and in watchers. Pure.

Every watcher gets the whole state in its SNAPSHOT, so a client that registers much (a few
registrations of nearly 1 MB each, or tens of thousands of small ones) made every new sidecar's
snapshot too large to receive, and the registry's memory grew with it. The limits bound what one
registration and the whole registry hold; each is a `grpcmesh registry` flag
(docs/registry.md says why each default).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import grpc

from grpcmesh.registry.model import Instance, RegistryError

# Each SNAPSHOT part holds at least one whole instance and must stay well under the 4 MiB that
# gRPC clients accept by default, so one instance may not be larger than this.
INSTANCE_BYTES_CEILING = 1024 * 1024


@dataclass(frozen=True)
class RegistryLimits:
    # One registration (INVALID_ARGUMENT beyond these):
    max_instance_bytes: int = 64 * 1024  # the Instance message, serialized
    max_string_length: int = 256  # any one string: names, address, owner, label, method path
    max_labels: int = 64
    max_proto_services: int = 256
    max_methods: int = 4096
    # The registry as a whole (RESOURCE_EXHAUSTED beyond these):
    max_instances: int = 10_000
    max_watchers: int = 1_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{flag(f.name)} {value!r} must be a whole number of at "
                                 "least 1")
        if self.max_instance_bytes > INSTANCE_BYTES_CEILING:
            raise ValueError(f"--max-instance-bytes {self.max_instance_bytes} is too large: at "
                             f"most {INSTANCE_BYTES_CEILING}, so that every snapshot part stays "
                             "well under gRPC's default 4 MiB message limit")


def flag(name: str) -> str:
    """The `grpcmesh registry` flag that sets a RegistryLimits field."""
    return name.replace("_", "-")


def _over(what: str, count: int, limit: int, name: str) -> RegistryError:
    return RegistryError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{what} has {count} entries: at most {limit} are allowed "
                         f"(grpcmesh registry --{flag(name)})")


def _strings(instance: Instance) -> list[tuple[str, str]]:
    """(field, value) for every string of a registration."""
    found = [("instance.service", instance.service),
             ("instance.instance_id", instance.instance_id),
             ("instance.address", instance.address), ("instance.owner", instance.owner),
             ("instance.admin_address", instance.admin_address)]
    found += [(f"instance.proto_services[{i}]", p) for i, p in enumerate(instance.proto_services)]
    for key, value in instance.labels:
        found += [("instance.labels key", key), (f"instance.labels[{key[:40]}]", value)]
    found += [(f"instance.methods[{i}].path", m.path) for i, m in enumerate(instance.methods)]
    return found


def check_registration(instance: Instance, limits: RegistryLimits) -> None:
    """Raise RegistryError(INVALID_ARGUMENT) naming the first field beyond a limit, and the limit.

    Counts and lengths come first: they are cheap, and they bound the serialized size."""
    for what, count, name in (
            ("instance.proto_services", len(instance.proto_services), "max_proto_services"),
            ("instance.labels", len(instance.labels), "max_labels"),
            ("instance.methods", len(instance.methods), "max_methods")):
        if count > getattr(limits, name):
            raise _over(what, count, getattr(limits, name), name)
    for what, value in _strings(instance):
        if len(value) > limits.max_string_length:
            shown = repr(value if len(value) <= 40 else value[:40] + "...")
            raise RegistryError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{what} {shown} is {len(value)} characters long: at most "
                                f"{limits.max_string_length} are allowed "
                                "(grpcmesh registry --max-string-length)")
    size = instance.to_proto().ByteSize()
    if size > limits.max_instance_bytes:
        raise RegistryError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"instance {instance.service}/{instance.instance_id} is {size} bytes "
                            f"serialized: at most {limits.max_instance_bytes} are allowed "
                            "(grpcmesh registry --max-instance-bytes)")


def check_room(instances: int, limits: RegistryLimits, instance: Instance) -> None:
    """Raise RegistryError(RESOURCE_EXHAUSTED) when a new instance would pass max_instances."""
    if instances >= limits.max_instances:
        raise RegistryError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"the registry holds {instances} instances, its limit "
                            f"(grpcmesh registry --max-instances {limits.max_instances}): "
                            f"instance_id {instance.instance_id!r} of service {instance.service!r} "
                            "is refused until others leave")


def check_watchers(watchers: int, limits: RegistryLimits) -> None:
    """Raise RegistryError(RESOURCE_EXHAUSTED) when another watch would pass max_watchers."""
    if watchers >= limits.max_watchers:
        raise RegistryError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"the registry serves {watchers} Watch streams, its limit "
                            f"(grpcmesh registry --max-watchers {limits.max_watchers}); "
                            "try again later or another registry")
