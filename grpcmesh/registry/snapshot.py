"""Watch snapshots in parts, serialized once and shared by every watcher. Pure: no sockets.

A SNAPSHOT used to be one message holding the whole state: once the state passed the 4 MiB a
gRPC client accepts by default, every new or restarted sidecar failed its Watch with
RESOURCE_EXHAUSTED. Now the registry sends it in parts of at most PART_BYTES, each marked
`more` but the last, and the watcher applies it only when the last part has arrived
(SnapshotAssembler), so what it routes on is always a whole snapshot.

The registry serializes each instance once (encode_instance) and a snapshot once per revision
(snapshot_parts: a small header joined with the instances' bytes), and every watcher sends the
same bytes objects: serializing the state again for each of 1,000 watchers took its memory from
64 MB to 1.25 GB and stalled Register and KeepAlive.
"""
from __future__ import annotations

from collections.abc import Sequence

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.registry.model import Event, EventType, Instance

# Small enough that a watcher that reads slowly holds little of the registry's memory in its
# unsent part, large enough that a 10 MB state takes only 80 messages. One instance (at most
# limits.INSTANCE_BYTES_CEILING, 1 MiB) that is larger gets a part of its own.
PART_BYTES = 128 * 1024
_INSTANCES_TAG = bytes([(3 << 3) | 2])  # WatchEvent.instances: field 3, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_instance(instance: Instance) -> bytes:
    """instance as one WatchEvent.instances entry. A WatchEvent's bytes are its other fields'
    bytes followed by such entries, so a part is a header joined with its instances' bytes."""
    body: bytes = instance.to_proto().SerializeToString()
    return _INSTANCES_TAG + _varint(len(body)) + body


def plan_parts(sizes: Sequence[int], budget: int) -> list[range]:
    """Consecutive runs of items whose sizes add up to at most budget each, in order. An item
    larger than budget gets a run of its own. No items: one empty run (an empty snapshot is
    still a message)."""
    runs: list[range] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > budget:
            runs.append(range(start, i))
            start, total = i, 0
        total += size
    runs.append(range(start, len(sizes)))
    return runs


def _header(revision: int, partial: bool, more: bool, store_id: str) -> bytes:
    header: bytes = pb.WatchEvent(type=pb.WatchEvent.SNAPSHOT, revision=revision,
                                  partial=partial, more=more,
                                  store_id=store_id).SerializeToString()
    return header


def snapshot_parts(revision: int, partial: bool, encoded: Sequence[bytes],
                   budget: int = PART_BYTES, store_id: str = "") -> list[bytes]:
    """The serialized SNAPSHOT messages for instances already encoded (encode_instance), each
    at most budget bytes unless one instance alone is larger; `more` on all but the last."""
    header_allowance = len(_header(revision, partial, True, store_id))
    runs = plan_parts([len(e) for e in encoded], budget - header_allowance)
    return [_header(revision, partial, i < len(runs) - 1, store_id)
            + b"".join(encoded[run.start:run.stop]) for i, run in enumerate(runs)]


class SnapshotError(Exception):
    """The registry broke the protocol: the watch is restarted."""


class SnapshotAssembler:
    """Collects a SNAPSHOT's parts and hands on the whole snapshot once its last part arrived;
    other events pass through. One per Watch stream: parts of a broken stream are dropped."""

    def __init__(self) -> None:
        self._parts: list[Event] = []

    @property
    def pending(self) -> int:
        """Parts received of a snapshot not complete yet."""
        return len(self._parts)

    def feed(self, event: Event) -> Event | None:
        """The event to apply, or None while a snapshot is incomplete."""
        if self._parts:
            first = self._parts[0]
            if event.type != EventType.SNAPSHOT or (event.revision, event.partial) != (
                    first.revision, first.partial):
                raise SnapshotError(
                    f"the registry sent a {event.type.name} at revision {event.revision} "
                    f"before the last part of the snapshot at revision {first.revision} "
                    f"({len(self._parts)} parts received)")
        if event.type != EventType.SNAPSHOT:
            return event
        if event.more:
            self._parts.append(event)
            return None
        if not self._parts:
            return event
        parts, self._parts = [*self._parts, event], []
        return Event(EventType.SNAPSHOT, event.revision,
                     tuple(i for part in parts for i in part.instances), partial=event.partial,
                     store_id=event.store_id)
