"""A replica's View of its store, and follow(): after a break, the changes after the last
revision seen, none lost and none twice; a new listing when they are gone. The store here is
scripted: what follow() does with each answer is the point."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from grpcmesh.registry.backend import Always, Compacted, Leadership, Listing, StoreUnavailable
from grpcmesh.registry.history import Change, History
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.registry.model import Event, EventType, Health, Instance, PushedConfig
from grpcmesh.registry.view import View, follow


def inst(instance_id: str, health: Health = Health.SERVING, service: str = "orders") -> Instance:
    return Instance(service, instance_id, "10.0.0.1:80", ("shop.v1.Orders",), health=health)


def upsert(revision: int, instance: Instance) -> Change:
    return Change(Event(EventType.UPSERT, revision, (instance,)))


def delete(revision: int, instance_id: str) -> Change:
    return Change(Event(EventType.DELETE, revision, (Instance("orders", instance_id, ""),)))


def test_history_holds_what_came_after_a_revision_and_says_when_it_does_not() -> None:
    history = History(start=10, limit=3)
    for revision in (12, 13, 13, 15, 18, 19, 20):
        history.add(upsert(revision, inst(f"o{revision}")))
    assert history.since(30) is None  # never seen
    held = history.since(history.start)
    assert held is not None and len(held) >= 3
    assert history.since(history.start - 1) is None  # some are gone
    assert [c.revision for c in history.since(18) or []] == [19, 20]
    assert history.since(20) == []
    with pytest.raises(ValueError):
        history.add(upsert(19, inst("late")))


def test_a_view_applies_each_change_once_and_fills_in_what_a_delete_removed() -> None:
    view = View("s")
    seen: list[tuple[str, str, int]] = []
    view.subscribe(lambda event, previous: seen.append(
        (event.type.name, event.instances[0].instance_id if event.instances else "",
         event.revision)))
    view.reset(Listing(5, (inst("o1"),), PushedConfig(0)))
    view.apply(upsert(6, inst("o2")))
    view.apply(upsert(6, inst("o2")))  # again, as a resumed store may send it
    view.apply(upsert(4, inst("old")))  # older than the view
    view.apply(delete(8, "o1"))
    view.apply(delete(9, "nobody"))  # nothing to remove: no event
    assert seen == [("UPSERT", "o2", 6), ("DELETE", "o1", 8)]
    assert [i.instance_id for i in view.instances()] == ["o2"] and view.revision == 9
    held = view.since(5)
    assert held is not None and [c.event.instances[0].address for c in held] == [
        "10.0.0.1:80", "10.0.0.1:80"]  # the DELETE carries the whole instance
    # A config change is applied once per version.
    versions: list[int] = []
    view.subscribe_config(lambda config: versions.append(config.version))
    view.apply(Change(Event(EventType.CONFIG, 10, config=PushedConfig(1, "{}", 1.0))))
    view.apply(Change(Event(EventType.CONFIG, 10, config=PushedConfig(1, "{}", 1.0))))
    assert versions == [1] and view.config.version == 1
    # A new listing starts over: listeners get a SNAPSHOT; the history begins again.
    view.reset(Listing(20, (inst("o3"),), PushedConfig(1, "{}", 1.0)))
    assert seen[-1] == ("SNAPSHOT", "o3", 20) and view.since(9) is None


class Scripted:
    """A store whose changes() follows a script, one entry per call: changes to yield, then
    an exception to raise (or None: wait for cancellation)."""

    store_id = "scripted"

    def __init__(self, listings: list[Listing],
                 script: list[tuple[list[Change], BaseException | None]]) -> None:
        self.listings = listings
        self.script = script
        self.asked: list[int] = []
        self.listed = 0

    async def listing(self) -> Listing:
        self.listed += 1
        return self.listings.pop(0)

    async def changes(self, after: int) -> AsyncIterator[Change]:
        self.asked.append(after)
        changes, error = self.script.pop(0)
        for change in changes:
            if change.revision > after:
                yield change
        if error is not None:
            raise error
        await asyncio.Event().wait()

    def leadership(self, name: str) -> Leadership:
        return Always()


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_follow_resumes_after_the_last_revision_and_lists_again_when_compacted() -> None:
    store = Scripted(
        [Listing(5, (inst("o1"),), PushedConfig(0)),
         Listing(40, (inst("o9"),), PushedConfig(2, "{}", 2.0))],
        [([upsert(6, inst("o2")), upsert(7, inst("o3"))], StoreUnavailable("etcd restarting")),
         # The store resends 7 (it resumed a little early): applied once.
         ([upsert(7, inst("o3")), delete(9, "o1")], StoreUnavailable("again")),
         ([], Compacted("gone")),
         ([upsert(41, inst("o10"))], None)])
    view = View("scripted")
    events: list[tuple[str, int]] = []
    view.subscribe(lambda event, previous: events.append((event.type.name, event.revision)))
    ready = asyncio.Event()
    task = asyncio.create_task(follow(store, view, ready))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(ready.wait(), 2)
        assert await view.wait_for(41, 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert store.asked == [5, 7, 9, 40] and store.listed == 2
    assert events == [("UPSERT", 6), ("UPSERT", 7), ("DELETE", 9), ("SNAPSHOT", 40),
                      ("UPSERT", 41)]
    assert [i.instance_id for i in view.instances()] == ["o10", "o9"]
    assert view.config.version == 2


@pytest.mark.asyncio
@pytest.mark.timeout(5)
async def test_wait_for_a_revision_the_view_never_reaches_gives_up() -> None:
    view = View("s")
    view.reset(Listing(3, (), PushedConfig(0)))
    assert await view.wait_for(3, 0.01)
    assert not await view.wait_for(4, 0.05)
    waiting = asyncio.create_task(view.wait_for(5, 2))
    await asyncio.sleep(0)
    view.apply(upsert(5, inst("o1")))
    assert await waiting


def test_every_change_that_shares_a_revision_is_applied() -> None:
    """etcd gives every key that one transaction touches the same revision (a DeleteRange over
    a service's keys, say, by an operator's etcdctl): each is a change of its own. The view
    applied only the first, and kept the others' instances for good."""
    view = View("s")
    seen: list[tuple[str, str]] = []
    view.subscribe(lambda event, previous: seen.append(
        (event.type.name, event.instances[0].instance_id)))
    view.reset(Listing(5, (inst("o1"), inst("o2")), PushedConfig(0)))
    view.apply(delete(6, "o1"))
    view.apply(delete(6, "o2"))
    view.apply(upsert(7, inst("o3")))
    view.apply(upsert(7, inst("o4")))
    assert [i.instance_id for i in view.instances()] == ["o3", "o4"]
    assert seen == [("DELETE", "o1"), ("DELETE", "o2"), ("UPSERT", "o3"), ("UPSERT", "o4")]
    assert len(view.since(5) or []) == 4
    # The same change again is still applied once, and so is one the listing held.
    view.apply(upsert(7, inst("o4")))
    view.reset(Listing(9, (inst("o5"),), PushedConfig(0)))
    view.apply(upsert(9, inst("o5")))
    assert len(seen) == 5 and view.since(9) == []


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_follow_goes_on_when_a_listing_fails_unexpectedly() -> None:
    """A listing that raises something follow() does not expect (an etcd config key it cannot
    read: a ValueError) ended follow() for good: the replica's start() waited for its first
    listing forever, or a running replica stopped following its store and stayed SERVING."""

    class Failing(Scripted):
        async def listing(self) -> Listing:
            self.listed += 1
            if self.listed == 1:
                raise ValueError("etcd key /grpcmesh/config does not hold a mesh config")
            return self.listings.pop(0)

    store = Failing([Listing(5, (inst("o1"),), PushedConfig(0))], [([], None)])
    states: list[bool] = []
    view = View("scripted")
    ready = asyncio.Event()
    task = asyncio.create_task(follow(store, view, ready, states.append))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(ready.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert store.listed == 2 and states == [False, True]


def test_a_store_that_says_how_far_it_reached_moves_resumes_not_what_is_applied() -> None:
    """A RESUMED marker from the store (its writes to keys the registry ignores, or a progress
    notification) lets a watcher that saw a later revision through another replica resume
    here. It does not make a change that comes late look old: etcd before 3.4.24 could send a
    requested progress notification ahead of events (etcd-io/etcd#15220)."""
    view = View("s")
    view.reset(Listing(5, (), PushedConfig(0)))
    view.apply(Change(Event(EventType.RESUMED, 10)))
    assert view.reached == 10 and view.revision == 5 and view.since(10) == []
    view.apply(upsert(8, inst("late")))
    assert [i.instance_id for i in view.instances()] == ["late"]
    assert [c.revision for c in view.since(5) or []] == [8]


class Unlistable(Scripted):
    """A store that opens but whose listing always fails (etcd without a quorum)."""

    limits = RegistryLimits()
    shared = False
    closed = False

    def __init__(self) -> None:
        super().__init__([], [])

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True

    async def listing(self) -> Listing:
        raise StoreUnavailable("etcd at etcd://127.0.0.1:1: UNAVAILABLE: no leader")


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_a_registry_that_cannot_list_its_store_says_so_instead_of_waiting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from grpcmesh.registry import server as server_module

    monkeypatch.setattr(server_module, "FIRST_LISTING_SECONDS", 0.3)
    store = Unlistable()
    registry = server_module.RegistryServer("127.0.0.1:0", store=store)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="could not read the store within 0.3 s"):
        await registry.start()
    assert store.closed
