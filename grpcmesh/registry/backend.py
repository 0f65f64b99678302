"""Where the registry's state lives, behind one asynchronous interface (Store), and the store
of one process (LocalStore: memory, or memory with a SQLite file).

A registry replica reads a store twice over: a listing (every instance and the config, at one
revision), then every change after that revision (changes()). Writes (register, keep alive,
health, deregister, config) go to the store, and come back to every replica through changes().
LocalStore keeps its state in this process, so only one registry can use it; EtcdStore
(etcd_store.py) keeps it in etcd, shared by any number of replicas. The same conformance tests
(tests/registry/test_store_conformance.py) run on all of them.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from grpcmesh.clock import Clock
from grpcmesh.registry.config_store import Applied, ConfigStore, Prepared
from grpcmesh.registry.history import HISTORY_LIMIT, Change, History
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.registry.model import Event, EventType, Health, Instance, Lease, PushedConfig
from grpcmesh.registry.store import Registration, RegistryStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listing:
    """A store's whole state at one revision."""

    revision: int
    instances: tuple[Instance, ...]
    config: PushedConfig
    partial: bool = False  # still warming up: leased instances may not have re-registered


class Compacted(Exception):
    """The changes after the asked revision are no longer held: list again."""


class StoreUnavailable(Exception):
    """The store cannot be reached now; the message says which and why."""


class Leadership(Protocol):
    """One replica at a time does a job (the health checks of registry-checked instances)."""

    async def acquire(self) -> None:
        """Return once this replica holds the job."""

    async def lost(self) -> None:
        """Return when this replica no longer holds it (another may take it over)."""

    async def release(self) -> None: ...


class Store(Protocol):
    limits: RegistryLimits
    # Whether several registry replicas share the store, and its leases can outlive their
    # instances (etcd: a key deleted by hand, a replica's own lease): KeepAlive then renews only
    # a lease the replica's view holds an instance under.
    shared: bool

    @property
    def store_id(self) -> str:
        """Names the revision sequence: equal only for replicas of the same store."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def register(self, instance: Instance, ttl_seconds: float) -> Registration: ...
    async def keep_alive(self, lease_id: int) -> Lease: ...
    async def set_health(self, lease_id: int, health: Health) -> int: ...
    async def set_checked_health(self, key: tuple[str, str], health: Health) -> int: ...
    async def deregister(self, service: str, instance_id: str, owner: str) -> int: ...
    async def apply_config(self, prepared: Prepared, now: float) -> Applied: ...
    async def listing(self) -> Listing: ...

    def changes(self, after: int) -> AsyncGenerator[Change, None]:
        """First a RESUMED marker at revision `after` once the store is watched, then every
        change after `after`, then each as it happens, until cancelled. Raises Compacted if
        some are gone, StoreUnavailable if the store cannot be reached."""

    def request_progress(self) -> None:
        """Ask changes() for a RESUMED marker at the store's revision now, once every change
        up to it has come: the revision moves with writes that are not the registry's."""

    def leadership(self, name: str) -> Leadership: ...


class Always:
    """The Leadership of a store only one replica uses: it always leads."""

    async def acquire(self) -> None:
        return None

    async def lost(self) -> None:
        await asyncio.Event().wait()

    async def release(self) -> None:
        return None


class LocalStore:
    """The state in this process: a RegistryStore (instances and leases; with a Persistence,
    registry-checked instances are also written to SQLite) and a ConfigStore. Leases expire on
    a task of open()'s, as etcd expires its own."""

    shared = False

    def __init__(self, state: RegistryStore, configs: ConfigStore, clock: Clock,
                 history_limit: int = HISTORY_LIMIT, on_close: Callable[[], None] | None = None,
                 ) -> None:
        self.state = state
        self.configs = configs
        self.limits = state.limits
        self._clock = clock
        self._id = "local-" + secrets.token_hex(8)
        self._history = History(state.revision, history_limit)
        self._changed = asyncio.Event()
        self._expiry: asyncio.Task[None] | None = None
        self._on_close = on_close
        state.subscribe(self._on_event)
        configs.subscribe(self._on_config)

    @property
    def store_id(self) -> str:
        return self._id

    def _record(self, change: Change) -> None:
        self._history.add(change)
        self._changed.set()

    def _on_event(self, event: Event, previous: Instance | None) -> None:
        self._record(Change(event, previous))

    def _on_config(self, config: PushedConfig) -> None:
        revision = self.state.bump()  # a config change is a write, as it is in etcd
        self._record(Change(Event(EventType.CONFIG, revision, config=config)))

    async def open(self) -> None:
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().create_task(self._expire_leases())

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    async def _expire_leases(self) -> None:
        while True:
            try:
                self.state.expire()
                if self.state.finish_warmup():
                    log.info("warm-up over: watchers now get the complete state")
            except Exception:  # a bug in one listener must not stop lease expiry for good
                log.exception("lease expiry failed; trying again")
            due = self.state.next_expiry()
            wait = 1.0 if due is None else min(1.0, max(0.01, due - self._clock.now()))
            await asyncio.sleep(wait)

    async def register(self, instance: Instance, ttl_seconds: float) -> Registration:
        return self.state.register(instance, ttl_seconds)

    async def keep_alive(self, lease_id: int) -> Lease:
        return self.state.keep_alive(lease_id)

    async def set_health(self, lease_id: int, health: Health) -> int:
        return self.state.set_health(lease_id, health)

    async def set_checked_health(self, key: tuple[str, str], health: Health) -> int:
        return self.state.set_checked_health(key, health)

    async def deregister(self, service: str, instance_id: str, owner: str) -> int:
        return self.state.deregister(service, instance_id, owner)

    async def apply_config(self, prepared: Prepared, now: float) -> Applied:
        applied = self.configs.apply(prepared, now)
        # _on_config gave the change its revision
        return replace(applied, revision=self.state.revision) if applied.changed else applied

    async def listing(self) -> Listing:
        return Listing(self.state.revision, tuple(self.state.instances()),
                       self.configs.current, self.state.warm_until is not None)

    async def changes(self, after: int) -> AsyncGenerator[Change, None]:
        if self._history.since(after) is not None:
            yield Change(Event(EventType.RESUMED, after))
        while True:
            self._changed.clear()
            held = self._history.since(after)
            if held is None:
                raise Compacted(f"changes after revision {after} are no longer held "
                                f"(held: after {self._history.start})")
            for change in held:
                yield change
                after = change.revision
            if not held:
                await self._changed.wait()

    def request_progress(self) -> None:
        return None  # the revision counts only the registry's own writes: changes() has them

    def leadership(self, name: str) -> Leadership:
        return Always()
