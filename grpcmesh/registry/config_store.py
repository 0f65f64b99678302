"""The mesh config the registry holds: its version, what applying a file does, and what is
kept across restarts. Pure: no sockets, no asyncio; time is passed in.

Applying is two steps, so that the slow one can run off the event loop:
- prepare() validates the file's text as `grpcmesh config check` does (the registry does not
  trust the client's check: an older CLI must not push a config this registry cannot read),
  with the registry's instances for the warnings about empty subsets and about external
  services that take the calls of mesh services, and bounds the
  canonical form. It raises RegistryError(INVALID_ARGUMENT) with every error, and changes
  nothing.
- ConfigStore.apply() makes the prepared config the one in force: version + 1 if its content
  differs from the current one, otherwise nothing at all (same version, "unchanged").
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import grpc

from grpcmesh.config import MeshConfig, Report, check_data, check_text
from grpcmesh.registry.model import Instance, PushedConfig, RegistryError

# The canonical JSON is sent whole in one CONFIG event. A 1 MiB file can expand past 1 MiB
# (defaults are filled in, every string quoted): capped here, a CONFIG event stays far below
# the 4 MiB a gRPC client accepts by default.
MAX_CANONICAL_BYTES = 1024 * 1024
# grpc-message travels in the trailers, which gRPC clients accept up to 8 KiB by default
# (beyond it they fail the call with RESOURCE_EXHAUSTED instead of showing the status): the
# error list is cut to fit, and says how many errors it left out.
MAX_ERROR_BYTES = 6 * 1024
MAX_WARNINGS = 1000
MAX_SOURCE_CHARS = 256

NO_CONFIG = PushedConfig(0)


@dataclass(frozen=True)
class Prepared:
    """A valid config, ready to apply."""

    config: MeshConfig
    canonical_json: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Applied:
    """The outcome of apply(): the config in force, and whether it is a new version."""

    current: PushedConfig
    changed: bool
    warnings: tuple[str, ...] = ()
    revision: int = 0  # the store's revision of the write (0: nothing written)


@runtime_checkable
class ConfigPersistence(Protocol):
    def load_config(self) -> PushedConfig | None: ...
    def save_config(self, config: PushedConfig) -> None: ...


ConfigListener = Callable[[PushedConfig], None]


def known_instances(instances: Iterable[Instance]) -> dict[str, list[dict[str, str]]]:
    """service -> its instances' labels, for check_text's empty-subset warnings (client-only
    sidecars' announcements are no endpoints a subset could select)."""
    known: dict[str, list[dict[str, str]]] = {}
    for inst in instances:
        if not inst.is_client:
            known.setdefault(inst.service, []).append(dict(inst.labels))
    return known


def serving_protos(instances: Iterable[Instance]) -> dict[str, list[str]]:
    """proto service -> the mesh services that serve it, for check_text's warnings about
    external services that take their calls."""
    serving: dict[str, set[str]] = {}
    for inst in instances:
        for proto in inst.proto_services:
            serving.setdefault(proto, set()).add(inst.service)
    return {proto: sorted(services) for proto, services in serving.items()}


def clean_source(source: str) -> str:
    """The client's file name as it may appear in messages: one printable line, not huge."""
    text = "".join(c if c.isprintable() else "?" for c in source) or "config"
    return text if len(text) <= MAX_SOURCE_CHARS else "..." + text[-(MAX_SOURCE_CHARS - 3):]


def prepare(text: str | bytes, source: str = "config",
            known: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
            serving: Mapping[str, Sequence[str]] | None = None) -> Prepared:
    """Validate a config file's text; raises RegistryError(INVALID_ARGUMENT) with its errors."""
    return prepared(check_text(text, clean_source(source), known, serving))


def prepared(report: Report) -> Prepared:
    """A checked config, bounded; raises RegistryError(INVALID_ARGUMENT) with its errors."""
    if report.config is None:
        lines = [p.format(report.source) for p in report.errors]
        raise RegistryError(grpc.StatusCode.INVALID_ARGUMENT, error_details(lines))
    canonical = report.config.canonical_json()
    size = len(canonical.encode())
    if size > MAX_CANONICAL_BYTES:
        raise RegistryError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{report.source}: the config's canonical form (JSON, defaults filled in) has "
            f"{size} bytes, more than the {MAX_CANONICAL_BYTES} bytes (1 MiB) the registry "
            "sends to sidecars in one message: split rules that repeat, or remove some")
    warnings = [p.format(report.source, warning=True) for p in report.warnings]
    if len(warnings) > MAX_WARNINGS:
        more = (f"{report.source}: warning: ... and {len(warnings) - MAX_WARNINGS} more "
                "warnings (grpcmesh config check --registry lists them all)")
        warnings = [*warnings[:MAX_WARNINGS], more]
    return Prepared(report.config, canonical, tuple(warnings))


def error_details(lines: Sequence[str], budget: int = MAX_ERROR_BYTES) -> str:
    """The errors, one per line, as many as fit in budget bytes once percent-encoded as
    grpc-message is; then how many were left out."""
    kept: list[str] = []
    used = 0
    for line in lines:
        cost = _encoded_size(line) + 3  # the newline, as %0A
        if used + cost > budget - 120:  # room for the last line
            kept.append(f"... and {len(lines) - len(kept)} more errors (grpcmesh config check "
                        "FILE lists them all)")
            break
        kept.append(line)
        used += cost
    return "\n".join(kept)


def _encoded_size(text: str) -> int:
    return sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in text.encode())


def next_version(current: PushedConfig, prepared: Prepared, now: float) -> PushedConfig | None:
    """The config to put in force, or None when prepared has the current content (a no-op:
    applying the same file twice keeps its version). An empty config equals version 0's."""
    if prepared.canonical_json == current.canonical_json:
        return None
    return PushedConfig(current.version + 1, prepared.canonical_json, now)


class ConfigStore:
    """The config in force, kept by the persistence if there is one (sqlite: across restarts;
    without one, for the process's life). Listeners hear of every new version."""

    def __init__(self, persistence: ConfigPersistence | None = None) -> None:
        self._persistence = persistence
        self._listeners: list[ConfigListener] = []
        self.current = NO_CONFIG
        self.config = MeshConfig()
        stored = persistence.load_config() if persistence is not None else None
        if stored is not None:
            self.config = read_stored(stored)
            self.current = stored

    def subscribe(self, listener: ConfigListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def apply(self, prepared: Prepared, now: float) -> Applied:
        new = next_version(self.current, prepared, now)
        if new is None:
            return Applied(self.current, False, prepared.warnings)
        if self._persistence is not None:  # stored first: a failed write changes nothing
            self._persistence.save_config(new)
        self.current, self.config = new, prepared.config
        for listener in list(self._listeners):
            listener(new)
        return Applied(new, True, prepared.warnings)


def read_stored(stored: PushedConfig) -> MeshConfig:
    """A stored config, checked again as any config is; ValueError if it cannot be read (for
    example, written by a newer registry with rules this one does not know)."""
    try:
        data = json.loads(stored.canonical_json)
    except ValueError as err:
        raise ValueError(f"the stored config (version {stored.version}) is not JSON: "
                         f"{err}") from None
    report = check_data(data, f"stored config version {stored.version}")
    if report.config is None:
        raise ValueError("the stored config cannot be read by this registry: "
                         + "; ".join(p.format(report.source) for p in report.errors[:3]))
    return report.config
