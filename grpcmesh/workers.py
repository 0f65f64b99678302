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
ends the primary too, so that a supervisor sees the failure. A primary that dies (even by
SIGKILL, or a SIGTERM during start-up) closes its end of each worker's stdin, and the workers
drain and stop on that EOF, so none lives on as an orphan holding the ports.

Workers are spawned with subprocess.Popen, not the event loop's subprocess support: CPython
starts the child with vfork, so no pthread_atfork handler runs in it. uvloop's spawn (libuv)
forks, which runs grpc-core's fork handlers in the child while the primary's channels are busy;
about one start in ten then died in the child (`ares_resolver.cc: Check failed: channel_ !=
nullptr`) before it could exec.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


class Workers:
    def __init__(self, on_failure: Callable[[str], None]) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._exits: list[asyncio.Future[int]] = []  # each worker's exit status, when it exits
        self.admins: list[tuple[int, str]] = []  # (pid, admin address) of each worker
        self._watchers: list[asyncio.Task[None]] = []
        self._on_failure = on_failure
        self._stopping = False
        # The blocking waits run here: one thread per worker waits for its exit, one reads
        # the ready lines.
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self, count: int, argv: Sequence[str], timeout: float = 30.0) -> None:
        """Start count secondary workers: `grpcmesh ARGV --secondary` (stderr is inherited)."""
        loop = asyncio.get_running_loop()
        threads = self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=count + 1, thread_name_prefix="grpcmesh-workers")
        for i in range(count):
            # Popen on purpose (see the module docstring); it returns as soon as vfork does.
            proc = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "grpcmesh", *argv, "--secondary"], stdout=subprocess.PIPE,
                stdin=subprocess.PIPE)  # its lifeline: EOF when this process is gone
            self._procs.append(proc)
            self._exits.append(loop.run_in_executor(threads, proc.wait))
            stdout = proc.stdout
            assert stdout is not None
            try:
                line = await asyncio.wait_for(loop.run_in_executor(threads, stdout.readline),
                                              timeout)
                self.admins.append((proc.pid, json.loads(line)["admin"]))
            except (TimeoutError, ValueError, KeyError):
                raise RuntimeError(f"sidecar worker {i + 1} did not start") from None
            self._watchers.append(loop.create_task(self._watch(i, proc, self._exits[i])))
        log.info("started %d secondary workers (pids %s)", count,
                 ", ".join(str(p.pid) for p in self._procs))

    async def _watch(self, i: int, proc: subprocess.Popen[bytes], exited: asyncio.Future[int]
                     ) -> None:
        code = await asyncio.shield(exited)
        if not self._stopping:
            self._on_failure(f"sidecar worker {i + 1} (pid {proc.pid}) exited with {code}")

    def signal_stop(self) -> None:
        """Tell every worker to drain and stop (they deregister nothing: the primary does)."""
        self._stopping = True
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float) -> None:
        self.signal_stop()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        for proc, exited in zip(self._procs, self._exits):
            try:
                await asyncio.wait_for(asyncio.shield(exited), max(0.0, give_up - loop.time()))
            except TimeoutError:
                log.warning("sidecar worker %d did not stop in %.0fs; killing it", proc.pid,
                            timeout)
                proc.kill()
                await exited
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        for task in self._watchers:
            task.cancel()
        if self._threads is not None:
            self._threads.shutdown(wait=False)
