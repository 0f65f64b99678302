"""`grpcmesh dashboard`'s HTTP server: the page (static/, shipped in the package) and
/api/summary, on the admin port's server (admin.AdminServer: GET only, its limits on the
request head and on a route's time).

/api/summary asks, on demand, the sidecars `grpcmesh stat` asks (commands.sidecar_admins:
--admin, or every sidecar the registry knows), at most max_sidecars of them, each for /stat
and /endpoints with a timeout; one that does not answer is listed as unreachable, never a
500. Answers are kept for a moment (CACHE_S) and shared by concurrent requests, so any
number of open pages costs the sidecars one round a second.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.admin import AdminServer, Raw
from grpcmesh.clock import iso_utc
from grpcmesh.commands import CliError, _registry_call, read_admins, sidecar_admins
from grpcmesh.dashboard.summary import summary
from grpcmesh.registry.client import RegistryClient
from grpcmesh.registry.model import PushedConfig

CACHE_S = 0.5  # how long one round of answers serves further requests
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
          "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}


@dataclass(frozen=True)
class DashboardSettings:
    listen: str = "127.0.0.1:7800"
    registry: tuple[str, ...] = ("127.0.0.1:7700",)
    admin: tuple[str, ...] = ()  # sidecars to ask; none: every one the registry knows
    window: int = 10  # seconds of /stat the figures cover (1..60)
    max_sidecars: int = 50  # sidecars asked at most, per round
    timeout: float = 2.0  # per sidecar answer, and per registry call

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 60:
            raise ValueError(f"--window {self.window}: expected 1s to 60s")
        if self.max_sidecars < 1:
            raise ValueError(f"--max-sidecars {self.max_sidecars} must be at least 1")
        if not self.timeout > 0:
            raise ValueError(f"--timeout {self.timeout:g} must be positive")


class Dashboard:
    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self._args = argparse.Namespace(admin=list(settings.admin),
                                        registry=list(settings.registry))
        self._client = RegistryClient(list(settings.registry), timeout=settings.timeout)
        files = resources.files("grpcmesh.dashboard") / "static"
        routes: dict[str, Any] = {path: _static(kind, (files / name).read_bytes())
                                  for path, (name, kind) in STATIC.items()}
        routes["/api/summary"] = self.summary
        self.server = AdminServer(settings.listen, routes, purpose="the dashboard")
        self._last: tuple[float, int, dict[str, Any]] | None = None
        self._pending: dict[int, asyncio.Task[dict[str, Any]]] = {}

    async def start(self) -> str:
        return await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
        for task in list(self._pending.values()):
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
        await self._client.close()

    async def summary(self, query: dict[str, str]) -> tuple[int, Any]:
        """?window=S (1..60; default --window)."""
        text = query.get("window", str(self.settings.window)).removesuffix("s")
        if not text.isdigit() or not 1 <= int(text) <= 60:
            return 400, {"error": f"window {text!r}: expected whole seconds from 1 to 60"}
        window = int(text)
        if self._last and self._last[1] == window and time.monotonic() - self._last[0] < CACHE_S:
            return 200, self._last[2]
        task = self._pending.get(window)
        if task is None:
            task = self._pending[window] = asyncio.ensure_future(self._round(window))
            task.add_done_callback(lambda _: self._pending.pop(window, None))
        body = await asyncio.shield(task)
        self._last = (time.monotonic(), window, body)
        return 200, body

    async def _round(self, window: int) -> dict[str, Any]:
        s = self.settings
        registry: dict[str, Any] = {"addresses": list(s.registry), "ok": True, "error": None}
        config = None
        admins: list[str] = []
        try:
            async with asyncio.timeout(s.timeout * 2):
                admins = await sidecar_admins(self._args, self._client)
        except (CliError, TimeoutError) as err:
            if not s.admin:
                registry.update(ok=False, error=str(err) or "no answer in time")
        try:
            pushed = PushedConfig.from_proto((await _registry_call(
                self._args, "GetConfig", pb.GetConfigRequest(), self._client)).config)
            config = {"version": pushed.version, "applied_at": None if pushed.applied_at is None
                      else iso_utc(pushed.applied_at)}
        except CliError as err:
            registry.update(ok=False, error=registry["error"] or str(err))
        asked = admins[:s.max_sidecars]
        stats, views = await asyncio.gather(
            read_admins(asked, f"/stat?window={window}", s.timeout),
            read_admins(asked, "/endpoints", s.timeout))
        body = summary(asked, list(zip(stats, views, strict=True)), window=window,
                       not_asked=len(admins) - len(asked), registry=registry, config=config)
        body["time"] = iso_utc(time.time())
        return body


def _static(content_type: str, body: bytes) -> Callable[[], tuple[int, Raw]]:
    """A route serving one of the page's files (read once, at start)."""
    return lambda: (200, Raw(content_type, body))
