"""Snapshots in parts: splitting under a byte budget and assembling them again. No sockets."""
from __future__ import annotations

import pytest

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.registry.model import Event, EventType, Instance, Method
from grpcmesh.registry.snapshot import (
    PART_BYTES,
    SnapshotAssembler,
    SnapshotError,
    encode_instance,
    plan_parts,
    snapshot_parts,
)

GRPC_DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024


def instances(count: int, methods: int = 0) -> list[Instance]:
    return [Instance("orders", f"o{i:05d}", f"10.0.{i // 250}.{i % 250}:8080",
                     ("shop.v1.Orders",), (("zone", "a"),), owner="ops", lease_id=i + 1,
                     methods=tuple(Method(f"/shop.v1.Orders/Method{m:040d}")
                                   for m in range(methods)))
            for i in range(count)]


def parse(parts: list[bytes]) -> list[pb.WatchEvent]:
    return [pb.WatchEvent.FromString(part) for part in parts]


@pytest.mark.parametrize(("sizes", "budget", "runs"), [
    ([], 10, [range(0)]),
    ([3, 3, 3], 10, [range(3)]),
    ([3, 3, 3, 3], 10, [range(3), range(3, 4)]),
    ([5, 5, 5], 10, [range(2), range(2, 3)]),
    ([4, 30, 4, 4], 10, [range(1), range(1, 2), range(2, 4)]),  # too large: alone
    ([30], 10, [range(1)]),
])
def test_plan_parts_packs_in_order_under_the_budget(
        sizes: list[int], budget: int, runs: list[range]) -> None:
    assert plan_parts(sizes, budget) == runs


def test_a_small_snapshot_is_one_message_as_before() -> None:
    found = instances(3)
    [part] = snapshot_parts(7, True, [encode_instance(i) for i in found])
    event = Event(EventType.SNAPSHOT, 7, tuple(found), partial=True)
    assert pb.WatchEvent.FromString(part) == event.to_proto()
    [empty] = parse(snapshot_parts(8, False, []))
    assert (empty.type, empty.revision, list(empty.instances), empty.more) == (
        pb.WatchEvent.SNAPSHOT, 8, [], False)


def test_a_state_over_4_mib_is_split_into_parts_under_the_budget() -> None:
    found = instances(1500, methods=50)  # about 5 MB
    encoded = [encode_instance(i) for i in found]
    assert sum(map(len, encoded)) > GRPC_DEFAULT_MAX_MESSAGE
    parts = snapshot_parts(42, False, encoded)
    assert len(parts) > GRPC_DEFAULT_MAX_MESSAGE // PART_BYTES
    assert max(map(len, parts)) <= PART_BYTES
    events = parse(parts)
    assert [e.more for e in events] == [True] * (len(parts) - 1) + [False]
    assert {(e.type, e.revision, e.partial) for e in events} == {(pb.WatchEvent.SNAPSHOT, 42,
                                                                 False)}
    assert [Instance.from_proto(i) for e in events for i in e.instances] == found


def test_an_instance_larger_than_the_budget_gets_a_part_of_its_own() -> None:
    small, big, tail = instances(3, methods=1)
    big_bytes = encode_instance(big)
    parts = snapshot_parts(1, False, [encode_instance(small), big_bytes, encode_instance(tail)],
                           budget=len(big_bytes) // 2)
    assert [[i.instance_id for i in e.instances] for e in parse(parts)] == [
        [small.instance_id], [big.instance_id], [tail.instance_id]]


def test_the_assembler_applies_a_snapshot_only_when_complete() -> None:
    found = instances(30, methods=20)
    parts = snapshot_parts(9, True, [encode_instance(i) for i in found], budget=8 * 1024)
    assert len(parts) > 3
    assembler = SnapshotAssembler()
    results = [assembler.feed(Event.from_proto(e)) for e in parse(parts)]
    assert results[:-1] == [None] * (len(parts) - 1)
    assert results[-1] == Event(EventType.SNAPSHOT, 9, tuple(found), partial=True)
    assert assembler.pending == 0
    upsert = Event(EventType.UPSERT, 10, (found[0],), "registered")
    assert assembler.feed(upsert) is upsert  # other events pass through
    whole = Event(EventType.SNAPSHOT, 11, tuple(found[:2]))
    assert assembler.feed(whole) is whole  # a snapshot in one part too


@pytest.mark.parametrize("intruder", [
    Event(EventType.UPSERT, 6, tuple(instances(1))),
    Event(EventType.SNAPSHOT, 6, tuple(instances(1))),  # another revision
    Event(EventType.SNAPSHOT, 5, tuple(instances(1)), partial=True),
])
def test_anything_but_the_next_part_in_the_middle_of_a_snapshot_is_an_error(
        intruder: Event) -> None:
    assembler = SnapshotAssembler()
    assert assembler.feed(Event(EventType.SNAPSHOT, 5, tuple(instances(2)), more=True)) is None
    with pytest.raises(SnapshotError) as err:
        assembler.feed(intruder)
    assert "before the last part of the snapshot at revision 5 (1 parts received)" in str(
        err.value)
