"""The registry's health checks of registry-checked instances (registered without a lease).

One HealthWatcher task per instance, started and stopped as the replica's view changes; what
it sees is written to the store (one writer task, in order, the latest health per instance),
which tells every replica and so every watcher. With replicas over etcd only the replica that
leads the checks runs a HealthChecker (server.py).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from grpcmesh.health import HealthWatcher
from grpcmesh.registry.backend import Store, StoreUnavailable
from grpcmesh.registry.model import Event, EventType, Health, Instance, RegistryError
from grpcmesh.registry.view import View

log = logging.getLogger(__name__)


class HealthChecker:
    def __init__(self, store: Store, view: View, poll_interval: float = 1.0) -> None:
        self._store = store
        self._view = view
        self._poll_interval = poll_interval
        self._tasks: dict[tuple[str, str], tuple[str, asyncio.Task[None]]] = {}
        self._unsubscribe: Callable[[], None] = lambda: None
        # Health to write, per instance: at most one entry each, so it is bounded by the
        # number of instances however fast an app flaps.
        self._pending: dict[tuple[str, str], Health] = {}
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._unsubscribe = self._view.subscribe(self._on_event)
        self._writer = asyncio.get_running_loop().create_task(self._write())
        for inst in self._view.checked_instances():
            self._ensure(inst)

    async def stop(self) -> None:
        self._unsubscribe()
        self._unsubscribe = lambda: None
        tasks = [task for _, task in self._tasks.values()]
        if self._writer is not None:
            tasks.append(self._writer)
            self._writer = None
        self._tasks.clear()
        self._pending.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_event(self, event: Event, previous: Instance | None) -> None:
        if event.type == EventType.SNAPSHOT:  # start over: follow exactly what there is now
            keep = {i.key for i in event.instances if i.checked_by_registry}
            for key in [k for k in self._tasks if k not in keep]:
                self._cancel(key)
            for inst in event.instances:
                if inst.checked_by_registry:
                    self._ensure(inst)
            return
        inst = event.instances[0]
        if event.type == EventType.DELETE or not inst.checked_by_registry:
            self._cancel(inst.key)
        elif event.type == EventType.UPSERT:
            self._ensure(inst)

    def _ensure(self, inst: Instance) -> None:
        current = self._tasks.get(inst.key)
        if current is not None and current[0] == inst.address:
            return
        self._cancel(inst.key)
        key = inst.key

        def report(status: Health, why: str) -> None:
            log.info("%s/%s at %s is %s (%s)", key[0], key[1], inst.address, status.name, why)
            self._pending[key] = status
            self._wake.set()

        watcher = HealthWatcher(inst.address, report, poll_interval=self._poll_interval)
        task = asyncio.get_running_loop().create_task(watcher.run(),
                                                      name=f"health-check {key[0]}/{key[1]}")
        self._tasks[key] = (inst.address, task)

    def _cancel(self, key: tuple[str, str]) -> None:
        entry = self._tasks.pop(key, None)
        self._pending.pop(key, None)
        if entry is not None:
            entry[1].cancel()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                key = next(iter(self._pending))
                health = self._pending.pop(key)
                try:
                    await self._store.set_checked_health(key, health)
                except (StoreUnavailable, RegistryError) as err:
                    log.warning("cannot record %s/%s as %s: %s; trying again", key[0], key[1],
                                health.name, err)
                    self._pending.setdefault(key, health)  # unless a newer one came
                    await asyncio.sleep(1.0)
