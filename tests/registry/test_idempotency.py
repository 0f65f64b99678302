"""Which methods are idempotent: read from file descriptors (`option idempotency_level`), kept
through the registry's messages, and is_idempotent. Pure: descriptors built here, no sockets."""
from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.reflection import MethodCatalog, methods_in_files, methods_summary
from grpcmesh.registry.model import Idempotency, Instance, Method, is_idempotent

Level = descriptor_pb2.MethodOptions.IdempotencyLevel
ORDERS = "shop.v1.Orders"


def orders_file() -> descriptor_pb2.FileDescriptorProto:
    """shop/v1/orders.proto as protoc describes it: Get NO_SIDE_EFFECTS, Cancel IDEMPOTENT,
    Create with options but no level, Follow (server streaming) with no options at all."""
    file = descriptor_pb2.FileDescriptorProto(name="shop/v1/orders.proto", package="shop.v1",
                                              syntax="proto3")
    file.message_type.add(name="Req")
    service = file.service.add(name="Orders")
    for name, level in (("Get", Level.NO_SIDE_EFFECTS), ("Cancel", Level.IDEMPOTENT),
                        ("Create", Level.IDEMPOTENCY_UNKNOWN)):
        method = service.method.add(name=name, input_type=".shop.v1.Req",
                                    output_type=".shop.v1.Req")
        method.options.idempotency_level = level
    service.method.add(name="Follow", input_type=".shop.v1.Req", output_type=".shop.v1.Req",
                       server_streaming=True)
    return file


EXPECTED = (
    Method(f"/{ORDERS}/Cancel", idempotency=Idempotency.IDEMPOTENT),
    Method(f"/{ORDERS}/Create"),
    Method(f"/{ORDERS}/Follow", server_streaming=True),
    Method(f"/{ORDERS}/Get", idempotency=Idempotency.NO_SIDE_EFFECTS),
)


def test_levels_read_from_a_file_descriptor() -> None:
    # The bytes a reflection service sends (file_descriptor_proto), parsed as describe_methods
    # parses them.
    raw = orders_file().SerializeToString()
    assert methods_in_files([descriptor_pb2.FileDescriptorProto.FromString(raw)]) == EXPECTED
    assert methods_in_files([orders_file()], ["other.v1.Other"]) == ()


def test_levels_read_from_a_descriptor_set(tmp_path: Path) -> None:
    path = tmp_path / "orders.pb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[orders_file()]).SerializeToString())
    assert MethodCatalog.load([str(path)]).methods_for([ORDERS]) == EXPECTED


def test_only_no_side_effects_and_idempotent_are_idempotent() -> None:
    assert [is_idempotent(m) for m in EXPECTED] == [True, False, False, True]
    assert not is_idempotent(None)  # a method no registration described


def test_levels_keep_the_names_and_numbers_of_method_options() -> None:
    for level in Idempotency:
        name = "IDEMPOTENCY_UNKNOWN" if level == Idempotency.UNKNOWN else level.name
        assert Level.Value(name) == level
        assert pb.Method.IdempotencyLevel.Value(name) == level


@pytest.mark.parametrize("method", EXPECTED)
def test_levels_survive_the_registry_message(method: Method) -> None:
    instance = Instance("orders", "a1", "10.0.0.1:8080", (ORDERS,), methods=(method,))
    wire = instance.to_proto().SerializeToString()
    assert Instance.from_proto(pb.Instance.FromString(wire)) == instance


def test_a_level_from_a_newer_registry_is_unknown() -> None:
    msg = pb.Method(path=f"/{ORDERS}/Get")
    msg.idempotency_level = 7  # type: ignore[assignment]  # proto3 enums keep unknown values
    assert Method.from_proto(msg) == Method(f"/{ORDERS}/Get")
    assert not is_idempotent(Method.from_proto(msg))


def test_summary_counts_the_idempotent_methods() -> None:
    assert methods_summary(EXPECTED) == "4 methods described, 2 idempotent"
    assert methods_summary(()) == "no methods described: none is known to be idempotent"
