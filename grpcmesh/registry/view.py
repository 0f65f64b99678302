"""What one registry replica knows of its store: every instance, the config in force, the
revision, and the recent changes (for watchers that resume). follow() keeps it current: a
listing, then the store's changes; after a break, the changes after the last revision it saw
(none lost, none twice), or a new listing if those are gone.

The registry answers reads (Resolve, ListServices, Watch snapshots) from here, and fans each
change out to its watchers through the listeners. Pure apart from follow() and wait_for().
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace

from grpcmesh.registry.backend import Compacted, Listing, Store, StoreUnavailable
from grpcmesh.registry.client import Backoff
from grpcmesh.registry.history import HISTORY_LIMIT, Change, History
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.registry.model import Event, EventType, Instance, PushedConfig
from grpcmesh.registry.store import InstanceReads

log = logging.getLogger(__name__)

Listener = Callable[[Event, "Instance | None"], None]
ConfigListener = Callable[[PushedConfig], None]


class View(InstanceReads):
    def __init__(self, store_id: str = "", limits: RegistryLimits = RegistryLimits(),
                 history_limit: int = HISTORY_LIMIT, lease_index: bool = False) -> None:
        """lease_index: keep which lease each instance is under (holds_lease), for a store
        whose leases can outlive their instances (etcd's); about 50 bytes an instance."""
        self.store_id = store_id
        self._lease_index = lease_index
        self.limits = limits
        self.revision = 0  # of the last change applied (or the listing)
        # The store's revision the view is known to have caught up with: at least revision,
        # more when the store wrote other keys since (resumed watches go by it).
        self.reached = 0
        self.partial = False
        self.loaded = False
        self.config = PushedConfig(0)
        self._instances: dict[tuple[str, str], Instance] = {}
        self._leases: dict[int, tuple[str, str]] = {}  # lease id -> the instance under it
        self._history = History(0, history_limit)
        self._listeners: list[Listener] = []
        self._config_listeners: list[ConfigListener] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    # -- reading (instances, get, resolve, list_services: InstanceReads) -----------------

    def holds_lease(self, lease_id: int) -> bool:
        """Whether an instance this view holds is registered under lease_id (with the lease
        index; without it, always True: the store's own leases go with their instances).
        KeepAlive renews only those: not a replica's own leader lease, nor a lease whose key
        is gone."""
        return not self._lease_index or lease_id in self._leases

    def snapshot(self) -> Event:
        return Event(EventType.SNAPSHOT, self.revision, tuple(self.instances()),
                     partial=self.partial, store_id=self.store_id)

    def since(self, after: int) -> list[Change] | None:
        """The changes after revision `after`, if all are held (see History.since)."""
        return self._history.since(after)

    def at(self, revision: int) -> list[Change]:
        """The changes held at exactly this revision."""
        return self._history.at(revision)

    # -- listening ----------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """listener(event, previous) after every change; a SNAPSHOT means start over."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def subscribe_config(self, listener: ConfigListener) -> Callable[[], None]:
        self._config_listeners.append(listener)
        return lambda: self._config_listeners.remove(listener)

    # -- changing -----------------------------------------------------------------------------

    def reset(self, listing: Listing) -> None:
        """Take a whole new state; listeners get a SNAPSHOT (and the config, if it changed)."""
        self._instances = {i.key: i for i in listing.instances}
        self._leases = {i.lease_id: i.key for i in listing.instances
                        if i.lease_id} if self._lease_index else {}
        self.revision, self.partial = listing.revision, listing.partial
        self.reached = listing.revision
        self._history.reset(listing.revision)
        was_loaded, self.loaded = self.loaded, True
        if was_loaded:
            self._tell(self.snapshot(), None)
        self._set_config(listing.config)
        self._notify()

    def apply(self, change: Change) -> None:
        event = change.event
        if event.type == EventType.RESUMED:  # a store saying its changes reach this revision
            if event.revision > self.reached:  # (none of them ours): the view does too
                self.reached = event.revision
                self._history.reach(event.revision)
                self._notify()
            return  # revision stays: a change etcd sends late (before 3.4.24) still counts
        if event.revision < self.revision or (
                event.revision == self.revision and self._seen(event)):
            return  # seen already (a watch resumed from an older revision than needed)
        if event.type == EventType.SNAPSHOT:
            self.reset(Listing(event.revision, event.instances, self.config, event.partial))
            return
        self.revision = event.revision
        self.reached = max(self.reached, event.revision)
        if event.type == EventType.CONFIG:
            assert event.config is not None
            self._history.add(change)
            self._set_config(event.config)
        else:
            inst = event.instances[0]
            previous = self._instances.get(inst.key)
            if event.type == EventType.DELETE:
                if previous is None:
                    self._notify()
                    return
                # A store may know only the key of what it deleted: watchers get it whole.
                event = replace(event, instances=(previous,))
                self._instances.pop(inst.key)
                self._leases.pop(previous.lease_id, None)
            else:
                self._instances[inst.key] = inst
                if self._lease_index:
                    if previous is not None and previous.lease_id != inst.lease_id:
                        self._leases.pop(previous.lease_id, None)
                    if inst.lease_id:
                        self._leases[inst.lease_id] = inst.key
            change = Change(event, previous if previous is not None else change.previous)
            self._history.add(change)
            self._tell(event, change.previous)
        self._notify()

    def _seen(self, event: Event) -> bool:
        """Whether a change at the view's own revision is one it has: the listing's (all of
        that revision), or one held. Several changes share a revision in etcd (the keys of one
        transaction), so the revision alone does not say."""
        if event.revision == self._history.start:
            return True
        if event.type == EventType.CONFIG:
            return any(c.event.type == EventType.CONFIG and c.event.config == event.config
                       for c in self._history.at(event.revision))
        if event.type == EventType.SNAPSHOT:
            return True
        key = event.instances[0].key
        return any(c.event.type == event.type and c.event.instances
                   and c.event.instances[0].key == key
                   for c in self._history.at(event.revision))

    def _set_config(self, config: PushedConfig) -> None:
        if config.version == self.config.version:
            return
        self.config = config
        for listener in list(self._config_listeners):
            listener(config)

    def _tell(self, event: Event, previous: Instance | None) -> None:
        for listener in list(self._listeners):
            listener(event, previous)

    def _notify(self) -> None:
        if not self._waiters:
            return
        waiting = []
        for revision, future in self._waiters:
            if revision <= self.reached:
                if not future.done():
                    future.set_result(None)
            elif not future.done():
                waiting.append((revision, future))
        self._waiters = waiting

    async def wait_for(self, revision: int, timeout: float = 5.0) -> bool:
        """Wait until this view has seen revision (a write's, so that the writer reads its
        write back here); False if it has not within timeout."""
        if self.reached >= revision:
            return True
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._waiters = [w for w in self._waiters if w[1] is not future]
            return False
        return True


async def follow(store: Store, view: View, ready: asyncio.Event | None = None,
                 on_state: Callable[[bool], None] = lambda up: None) -> None:
    """Keep view current with store until cancelled. on_state(False) when the store cannot be
    reached, on_state(True) once it answers again (a listing, or its changes' first item: a
    store starts them with a RESUMED marker once its watch is in place)."""
    backoff = Backoff(0.05, 2.0)
    listed = False
    up: bool | None = None

    def state(now: bool) -> None:
        nonlocal up
        if now != up:
            up = now
            on_state(now)

    while True:
        try:
            if not listed:
                view.reset(await store.listing())
                listed = True
                state(True)
                if ready is not None:
                    ready.set()
            async with contextlib.aclosing(store.changes(view.revision)) as changes:
                async for change in changes:
                    if not up:
                        log.info("following the store again after revision %d",
                                 view.revision)
                        state(True)
                    backoff.reset()
                    view.apply(change)
        except Compacted as err:
            log.warning("%s: listing the store again", err)
            listed = False
        except StoreUnavailable as err:
            log.log(logging.DEBUG if up is False else logging.WARNING,
                    "%s; keeping what is known (revision %d) and trying again", err,
                    view.revision)
            state(False)
            await asyncio.sleep(backoff.next())
        except Exception as err:  # noqa: BLE001 - following must outlive what it cannot read
            log.error("following the store failed (%s: %s); keeping what is known (revision "
                      "%d), listing it again", type(err).__name__, err, view.revision)
            listed = False
            state(False)
            await asyncio.sleep(backoff.next())
