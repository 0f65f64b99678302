"""The last changes a registry saw, so that a watch that broke can be resumed: everything after
a revision, or word that some of it is gone (the caller then starts over from a snapshot).
Pure: no sockets, no asyncio.

Revisions only grow, but not always by one (an etcd revision counts every write to etcd, not
only ours), and several changes may share one (a CONFIG change rides on the revision of the
write that stored it). `start` is the revision after which every change is still held: the
revision the history began at, or the newest one it has dropped for room.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from grpcmesh.registry.model import Event, Instance

# Changes held: a watcher that was away for fewer changes than this resumes without a snapshot.
HISTORY_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Change:
    """One change, as a store reports it and a registry fans it out: an UPSERT or DELETE of one
    instance (previous: the instance before it, for filtered watchers), a CONFIG, or a SNAPSHOT
    (start over: the store cannot say what changed, only what there is)."""

    event: Event
    previous: Instance | None = None

    @property
    def revision(self) -> int:
        return self.event.revision


class History:
    def __init__(self, start: int = 0, limit: int = HISTORY_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"history limit {limit} must be at least 1")
        self.limit = limit
        self.start = start
        self._changes: list[Change] = []
        self._revisions: list[int] = []
        self._reached = start  # the store said nothing else changed up to here

    def __len__(self) -> int:
        return len(self._changes)

    @property
    def newest(self) -> int:
        return self._revisions[-1] if self._revisions else self.start

    @property
    def reached(self) -> int:
        """The revision up to which the store said every change has come: the newest change
        held, or later if the store wrote other keys since."""
        return max(self.newest, self._reached)

    def reach(self, revision: int) -> None:
        """Nothing else changed up to revision (the store's writes to other keys)."""
        self._reached = max(self._reached, revision)

    def reset(self, start: int) -> None:
        """Forget everything: only changes after start will be held."""
        self.start = self._reached = start
        self._changes.clear()
        self._revisions.clear()

    def add(self, change: Change) -> None:
        if change.revision < self.newest:
            raise ValueError(f"change at revision {change.revision} is older than the newest "
                             f"held, {self.newest}")
        self._changes.append(change)
        self._revisions.append(change.revision)
        if len(self._changes) >= 2 * self.limit:  # trim in batches: amortised O(1) per add
            cut = len(self._changes) - self.limit
            # Changes that share the revision of the last one dropped go too: start must be a
            # revision after which everything is held.
            self.start = self._revisions[cut - 1]
            cut = bisect_right(self._revisions, self.start)
            del self._changes[:cut]
            del self._revisions[:cut]

    def at(self, revision: int) -> list[Change]:
        """The changes held at exactly this revision (several share one in etcd)."""
        return self._changes[bisect_left(self._revisions, revision):
                             bisect_right(self._revisions, revision)]

    def since(self, after: int) -> list[Change] | None:
        """Every change after revision `after`, oldest first; None if some are no longer held
        (after is older than start) or were never seen (after is newer than reached)."""
        if after < self.start or after > self.reached:
            return None
        return self._changes[bisect_right(self._revisions, after):]
