"""`grpcmesh sidecar --workers N`: N processes share each listening port (SO_REUSEPORT).

One process is one core (the GIL), so a sidecar uses more cores by running more processes. The
primary binds the ports first (which resolves port 0), then starts N-1 secondary workers that
bind the same ports; each has its own registry watch, pool and balancer state. The primary alone
registers the app, follows its health and serves the admin port; each secondary serves its own
admin port on 127.0.0.1 (port 0), which the primary's /endpoints asks so that it can show every
process's view. The kernel spreads *connections* across processes, not calls: one client
connection stays on one worker.

Shutdown: the primary deregisters, signals the workers, and every process waits the drain
delay, then finishes its calls in flight within the grace period. A worker that dies on its own
ends the primary too, so that a supervisor sees the failure.
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


class Workers:
    def __init__(self, on_failure: Callable[[str], None]) -> None:
        self._procs: list[asyncio.subprocess.Process] = []
        self.admins: list[tuple[int, str]] = []  # (pid, admin address) of each worker
        self._watchers: list[asyncio.Task[None]] = []
        self._on_failure = on_failure
        self._stopping = False

    async def start(self, count: int, argv: Sequence[str], timeout: float = 30.0) -> None:
        """Start count secondary workers: `grpcmesh ARGV --secondary` (stderr is inherited)."""
        for i in range(count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "grpcmesh", *argv, "--secondary",
                stdout=asyncio.subprocess.PIPE)
            self._procs.append(proc)
            assert proc.stdout is not None
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), timeout)
                self.admins.append((proc.pid, json.loads(line)["admin"]))
            except (TimeoutError, ValueError, KeyError):
                raise RuntimeError(f"sidecar worker {i + 1} did not start") from None
            self._watchers.append(asyncio.get_running_loop().create_task(self._watch(i, proc)))
        log.info("started %d secondary workers (pids %s)", count,
                 ", ".join(str(p.pid) for p in self._procs))

    async def _watch(self, i: int, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if not self._stopping:
            self._on_failure(f"sidecar worker {i + 1} (pid {proc.pid}) exited with {code}")

    def signal_stop(self) -> None:
        """Tell every worker to drain and stop (they deregister nothing: the primary does)."""
        self._stopping = True
        for proc in self._procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float) -> None:
        self.signal_stop()
        for proc in self._procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("sidecar worker %d did not stop in %.0fs; killing it", proc.pid,
                            timeout)
                proc.kill()
                await proc.wait()
        for task in self._watchers:
            task.cancel()
