"""The registry's health checks of registry-checked instances (registered without a lease).

One HealthWatcher task per instance, started and stopped as the store changes; what it sees is
written back to the store, which tells every watcher.
"""
from __future__ import annotations

import asyncio
import logging

from grpcmesh.health import HealthWatcher
from grpcmesh.registry.model import Event, EventType, Health, Instance
from grpcmesh.registry.store import RegistryStore

log = logging.getLogger(__name__)


class HealthChecker:
    def __init__(self, store: RegistryStore, poll_interval: float = 1.0) -> None:
        self._store = store
        self._poll_interval = poll_interval
        self._tasks: dict[tuple[str, str], tuple[str, asyncio.Task[None]]] = {}
        self._unsubscribe = store.subscribe(self._on_event)

    def start(self) -> None:
        for inst in self._store.checked_instances():
            self._ensure(inst)

    async def stop(self) -> None:
        self._unsubscribe()
        self._unsubscribe = lambda: None
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_event(self, event: Event, previous: Instance | None) -> None:
        if event.type == EventType.SNAPSHOT:
            return  # the end of the warm-up re-sends the state: nothing changed
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
            self._store.set_checked_health(key, status)

        watcher = HealthWatcher(inst.address, report, poll_interval=self._poll_interval)
        task = asyncio.get_running_loop().create_task(watcher.run(),
                                                      name=f"health-check {key[0]}/{key[1]}")
        self._tasks[key] = (inst.address, task)

    def _cancel(self, key: tuple[str, str]) -> None:
        entry = self._tasks.pop(key, None)
        if entry is not None:
            entry[1].cancel()
