"""The thin asyncio shell around the external services' DNS: it asks getaddrinfo for each
address that is due (dns.py decides when) and hands the answer to the table. One per sidecar
process, so each --workers process resolves for its own table."""
from __future__ import annotations

import asyncio
import logging
import socket

from grpcmesh.clock import Clock
from grpcmesh.external.dns import answers_of, split
from grpcmesh.external.table import ExternalTable

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 10.0  # seconds one resolution may take before it counts as failed


class Resolver:
    def __init__(self, table: ExternalTable, clock: Clock) -> None:
        self.table = table
        self.clock = clock
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """The configured addresses changed: resolve the new ones now."""
        self._wakeup.set()

    async def run(self) -> None:
        """Until cancelled: resolve whatever is due, then wait until the next is."""
        try:
            while True:
                self._wakeup.clear()
                resolutions = self.table.resolutions
                for address in resolutions.due(self.clock.now()):
                    task = asyncio.get_running_loop().create_task(self._resolve(address))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                due = resolutions.next_due()
                wait = None if due is None else max(0.0, due - self.clock.now())
                try:
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                except TimeoutError:
                    pass
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def _resolve(self, address: str) -> None:
        host, port = split(address)
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
        except (OSError, TimeoutError, UnicodeError) as err:
            reason = f"no answer within {RESOLVE_TIMEOUT:g} s" if isinstance(
                err, TimeoutError) else str(err) or repr(err)
            known = self.table.resolutions.known.get(address)
            if known is not None and known.error != reason:  # once per new error
                log.warning("cannot resolve %s (an external service's address): %s%s", address,
                            reason, "; keeping its last answer" if known.answers else "")
            self.table.failed(address, reason, self.clock.now())
        else:
            self.table.answered(address, answers_of(infos, port), self.clock.now())
        self.wake()  # its next turn is due at a new time
