"""What one registration and the whole registry may hold: pure checks, no sockets."""
from __future__ import annotations

import random
from dataclasses import replace

import grpc
import pytest

from grpcmesh.clock import FakeClock
from grpcmesh.registry.limits import (
    INSTANCE_BYTES_CEILING,
    RegistryLimits,
    check_registration,
    check_watchers,
)
from grpcmesh.registry.model import Instance, Method, RegistryError
from grpcmesh.registry.store import RegistryStore

ORDERS = "shop.v1.Orders"
BASE = Instance("orders", "o1", "10.0.0.1:8080", (ORDERS,), owner="10.0.0.1:8080")


def refused(instance: Instance, limits: RegistryLimits = RegistryLimits()) -> RegistryError:
    with pytest.raises(RegistryError) as info:
        check_registration(instance, limits)
    return info.value


def methods(count: int, length: int = 40) -> tuple[Method, ...]:
    """count methods of ORDERS whose paths are length characters long."""
    prefix = f"/{ORDERS}/M"
    return tuple(Method(f"{prefix}{i:0{length - len(prefix)}d}") for i in range(count))


def test_defaults_accept_a_large_but_real_registration() -> None:
    big = replace(BASE, methods=methods(1000), proto_services=(ORDERS, "grpc.health.v1.Health"),
                  labels=tuple((f"k{i}", "v" * 200) for i in range(64)))
    check_registration(big, RegistryLimits())


@pytest.mark.parametrize(("change", "message"), [
    ({"proto_services": tuple(f"shop.v1.S{i}" for i in range(257))},
     ("instance.proto_services has 257 entries: at most 256 are allowed "
      "(grpcmesh registry --max-proto-services)")),
    ({"labels": tuple((f"k{i}", "v") for i in range(65))},
     "instance.labels has 65 entries: at most 64 are allowed (grpcmesh registry --max-labels)"),
    ({"methods": methods(4097, 20)},
     ("instance.methods has 4097 entries: at most 4096 are allowed "
      "(grpcmesh registry --max-methods)")),
])
def test_counts_beyond_their_limit_are_refused_naming_field_and_flag(
        change: dict[str, object], message: str) -> None:
    err = refused(replace(BASE, **change))  # type: ignore[arg-type]
    assert (err.code, err.message) == (grpc.StatusCode.INVALID_ARGUMENT, message)


@pytest.mark.parametrize(("change", "field"), [
    ({"service": "s" * 257}, "instance.service"),
    ({"instance_id": "i" * 257}, "instance.instance_id"),
    ({"address": "h" * 300 + ":80"}, "instance.address"),
    ({"owner": "o" * 257}, "instance.owner"),
    ({"proto_services": (ORDERS, "p" * 257)}, "instance.proto_services[1]"),
    ({"labels": (("k" * 257, "v"),)}, "instance.labels key"),
    ({"labels": (("zone", "v" * 257),)}, "instance.labels[zone]"),
    ({"methods": (Method(f"/{ORDERS}/" + "m" * 250),)}, "instance.methods[0].path"),
])
def test_strings_longer_than_the_limit_are_refused_naming_the_field(
        change: dict[str, object], field: str) -> None:
    err = refused(replace(BASE, **change))  # type: ignore[arg-type]
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.message.startswith(f"{field} '"), err.message
    assert err.message.endswith("characters long: at most 256 are allowed "
                                "(grpcmesh registry --max-string-length)"), err.message
    assert len(err.message) < 250  # the value is shown clipped, not whole


def test_serialized_size_beyond_the_limit_is_refused_with_size_and_limit() -> None:
    limits = RegistryLimits(max_instance_bytes=10_000)
    small = replace(BASE, methods=methods(100))
    size = small.to_proto().ByteSize()
    check_registration(small, replace(limits, max_instance_bytes=size))
    err = refused(small, replace(limits, max_instance_bytes=size - 1))
    assert (err.code, err.message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        (f"instance orders/o1 is {size} bytes serialized: at most {size - 1} are allowed "
         "(grpcmesh registry --max-instance-bytes)"))
    # 1,700 methods of 40 characters: within the count limit, beyond the default 64 KiB.
    err = refused(replace(BASE, methods=methods(1700)))
    assert "bytes serialized: at most 65536 are allowed" in err.message


@pytest.mark.parametrize(("change", "message"), [
    ({"max_methods": 0}, "--max-methods 0 must be a whole number of at least 1"),
    ({"max_watchers": -5}, "--max-watchers -5 must be a whole number of at least 1"),
    ({"max_instance_bytes": INSTANCE_BYTES_CEILING + 1},
     f"--max-instance-bytes {INSTANCE_BYTES_CEILING + 1} is too large"),
])
def test_limits_are_checked_when_made(change: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError) as err:
        RegistryLimits(**change)
    assert str(err.value).startswith(message)


def test_the_store_holds_at_most_max_instances() -> None:
    store = RegistryStore(FakeClock(), random.Random(1), limits=RegistryLimits(max_instances=2))
    store.register(replace(BASE, instance_id="o1"), 0)
    store.register(replace(BASE, instance_id="o2"), 10)
    with pytest.raises(RegistryError) as info:
        store.register(replace(BASE, instance_id="o3"), 0)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.message == (
        "the registry holds 2 instances, its limit (grpcmesh registry --max-instances 2): "
        "instance_id 'o3' of service 'orders' is refused until others leave")
    assert store.revision == 2
    store.register(replace(BASE, instance_id="o2", labels=(("v", "2"),)), 10)  # a replacement
    store.deregister("orders", "o1", BASE.owner)
    store.register(replace(BASE, instance_id="o3"), 0)
    assert [i.instance_id for i in store.instances()] == ["o2", "o3"]


def test_watchers_beyond_the_limit_are_refused() -> None:
    limits = RegistryLimits(max_watchers=3)
    check_watchers(2, limits)
    with pytest.raises(RegistryError) as info:
        check_watchers(3, limits)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "serves 3 Watch streams, its limit (grpcmesh registry --max-watchers 3)" in (
        info.value.message)
