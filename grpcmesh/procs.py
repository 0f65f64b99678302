"""Starting grpcmesh daemons as child processes (the demo and the end-to-end tests).

Each daemon prints one JSON line with its bound addresses to stdout when it is ready; its logs go
to stderr, which is kept in a file so a failure can be shown.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from typing import Any


class Daemon:
    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: str) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.addresses: dict[str, str] = {}

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within timeout; then delete the log."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        assert self.proc.returncode is not None
        self.remove_log()
        return self.proc.returncode

    def remove_log(self) -> None:
        try:
            os.unlink(self.log_path)
        except FileNotFoundError:
            pass

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def start(name: str, *args: str, timeout: float = 20.0,
                env: dict[str, str] | None = None) -> Daemon:
    """Run `python -m grpcmesh ARGS...` and wait for its ready line."""
    fd, log_path = tempfile.mkstemp(prefix=f"grpcmesh-{name}-", suffix=".log")
    with os.fdopen(fd, "wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "grpcmesh", *args, stdout=asyncio.subprocess.PIPE,
            stderr=log_file, env={**os.environ, **(env or {})})
    daemon = Daemon(name, proc, log_path)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except TimeoutError:
        line = b""
    if not line:
        daemon.kill()
        await proc.wait()
        tail = daemon.log_tail()
        daemon.remove_log()
        raise RuntimeError(f"{name} did not start (exit {proc.returncode}):\n{tail}")
    daemon.addresses = json.loads(line)
    return daemon


async def stop_all(daemons: list[Daemon], timeout: float = 15.0) -> Any:
    return await asyncio.gather(*(d.stop(timeout) for d in reversed(daemons)),
                                return_exceptions=True)
