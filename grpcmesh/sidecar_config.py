"""The mesh config a sidecar runs: what the registry pushed last that it could read.

The registry sends the config in force on every Watch that asks for it (CONFIG events: after
the snapshot, and on every change). The sidecar parses it again (check_data: the same
validation as `grpcmesh config check`) and puts it in force only if it is valid: a config it
cannot read, for example one from a newer registry with rules this sidecar does not know, is
logged and ignored, and the old one stays. A bad config never replaces a good one.

The data path reads `current` (or the Sidecar's mesh_config / config_version), and may add
callbacks to `listeners`: each is called on the event loop with the new ConfigInForce after it
has taken effect. A callback that raises is logged; the others still run.

LiveConfig's decisions are pure; follow() is the thin asyncio shell: parsing a 1 MiB config
takes most of a second, so it runs in a thread, and only the latest push is parsed.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grpcmesh.clock import iso_utc
from grpcmesh.config import MeshConfig, check_data
from grpcmesh.registry.model import PushedConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfigInForce:
    version: int  # 0: no config, no rules
    config: MeshConfig
    digest: str  # sha256 of the canonical JSON the registry sent
    applied_at: float | None = None  # Unix time it took effect in this sidecar; None: never

    def to_json(self) -> dict[str, Any]:
        """The admin port's /config."""
        return {"version": self.version,
                "applied_at": None if self.applied_at is None else iso_utc(self.applied_at),
                "digest": self.digest, "config": self.config.to_dict()}


ConfigCallback = Callable[[ConfigInForce], None]


def digest_of(canonical_json: str) -> str:
    return hashlib.sha256(canonical_json.encode()).hexdigest()


def read_pushed(pushed: PushedConfig) -> MeshConfig:
    """The config in a CONFIG event; ValueError (ConfigInvalid) naming what is wrong."""
    try:
        data = json.loads(pushed.canonical_json)
    except ValueError as err:
        raise ValueError(f"not JSON: {err}") from None
    return check_data(data, f"config version {pushed.version}").unwrap()


class LiveConfig:
    def __init__(self) -> None:
        self.current = ConfigInForce(0, MeshConfig(), digest_of("{}"))
        self.listeners: list[ConfigCallback] = []
        self._pushed: PushedConfig | None = None
        self._refused: tuple[int, str] | None = None  # the last push that could not be read
        self._wakeup = asyncio.Event()

    def is_new(self, pushed: PushedConfig) -> bool:
        """Worth parsing: not the config in force, nor one already refused. Versions are not
        compared by size: a registry whose memory store restarted counts from 0 again, and
        the registry's config is the one to run."""
        key = (pushed.version, digest_of(pushed.canonical_json))
        return key != (self.current.version, self.current.digest) and key != self._refused

    def take(self, pushed: PushedConfig, config: MeshConfig, now: float) -> ConfigInForce:
        """Put a parsed config in force and tell the listeners."""
        self.current = ConfigInForce(pushed.version, config, digest_of(pushed.canonical_json),
                                     now)
        log.info("mesh config version %d in force: %s", pushed.version, config.summary())
        for callback in list(self.listeners):
            try:
                callback(self.current)
            except Exception:  # one broken hook must not keep the config from the others
                log.exception("an on_config callback failed for config version %d",
                              pushed.version)
        return self.current

    def refuse(self, pushed: PushedConfig, err: Exception) -> None:
        self._refused = (pushed.version, digest_of(pushed.canonical_json))
        log.warning("ignoring mesh config version %d from the registry, which this sidecar "
                    "cannot read (keeping version %d): %s", pushed.version,
                    self.current.version, str(err).replace("\n", "; "))

    # -- the shell ----------------------------------------------------------------------------

    def push(self, pushed: PushedConfig) -> None:
        """A CONFIG event arrived (called from the watch); follow() takes it from here."""
        self._pushed = pushed
        self._wakeup.set()

    async def follow(self) -> None:
        """Parse each new push (the latest only, if several came meanwhile) and put it in
        force. Runs until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            pushed = self._pushed
            if pushed is None or not self.is_new(pushed):
                continue
            try:
                config = await asyncio.to_thread(read_pushed, pushed)
            except ValueError as err:
                self.refuse(pushed, err)
                continue
            self.take(pushed, config, time.time())  # a newer push, if any, is parsed next
