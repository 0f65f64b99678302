"""Method kinds and idempotency levels from descriptor sets (registry --descriptor-set): pure,
no sockets."""
from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from generated.grpcmesh.example.v1 import echo_pb2
from grpcmesh.reflection import MethodCatalog
from grpcmesh.registry.model import Idempotency, Method

ECHO = "grpcmesh.example.v1.Echo"


def descriptor_set(tmp_path: Path) -> Path:
    file = descriptor_pb2.FileDescriptorProto()
    echo_pb2.DESCRIPTOR.CopyToProto(file)
    path = tmp_path / "echo.pb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString())
    return path


def test_kinds_of_every_method_of_the_named_services(tmp_path: Path) -> None:
    catalog = MethodCatalog.load([str(descriptor_set(tmp_path))])
    assert catalog.services() == [ECHO]
    assert catalog.methods_for([ECHO, "other.v1.Unknown"]) == (
        Method(f"/{ECHO}/BidiStream", True, True),
        Method(f"/{ECHO}/ClientStream", True, False),
        Method(f"/{ECHO}/Get", False, False, Idempotency.NO_SIDE_EFFECTS),
        Method(f"/{ECHO}/ServerStream", False, True),
        Method(f"/{ECHO}/Unary", False, False))
    assert catalog.methods_for(["other.v1.Unknown"]) == ()


def test_bad_files_are_named_with_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read descriptor set .*/missing.pb: No such file"):
        MethodCatalog.load([str(tmp_path / "missing.pb")])
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xff\xff\xff not a descriptor set")
    with pytest.raises(ValueError, match="garbage.pb is not a FileDescriptorSet: expected the "
                                         "output of protoc --descriptor_set_out"):
        MethodCatalog.load([str(garbage)])
    empty = tmp_path / "empty.pb"
    empty.write_bytes(descriptor_pb2.FileDescriptorSet(
        file=[descriptor_pb2.FileDescriptorProto(name="m.proto")]).SerializeToString())
    with pytest.raises(ValueError, match="empty.pb defines no services"):
        MethodCatalog.load([str(empty)])
