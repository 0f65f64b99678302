"""Checking a config's text or file: the entry points for `config check`, the registry and
sidecars. Pure except check_file, which reads at most MAX_CONFIG_BYTES + 1 bytes."""
from __future__ import annotations

import os
from dataclasses import dataclass

from grpcmesh.config.problems import ConfigInvalid, Problem
from grpcmesh.config.reader import Reader
from grpcmesh.config.schema import MeshConfig
from grpcmesh.config.validate import KnownInstances, ServingProtos, build
from grpcmesh.config.yamlnodes import from_data as nodes_from_data
from grpcmesh.config.yamlnodes import parse_yaml

MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Report:
    """The outcome of a check: the config when there is no error, and every problem."""

    source: str  # the file name used in messages
    config: MeshConfig | None  # None if there is any error
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        """Each error, then each warning, as FILE:LINE: PATH: message."""
        return ([p.format(self.source) for p in self.errors]
                + [p.format(self.source, warning=True) for p in self.warnings])

    def unwrap(self) -> MeshConfig:
        if self.config is None:
            raise ConfigInvalid(self.errors, self.source)
        return self.config


def check_text(text: str | bytes, source: str = "config",
               known: KnownInstances | None = None,
               serving: ServingProtos | None = None) -> Report:
    """Validate YAML text. known: service -> its instances' labels, for the warnings about
    subsets that select nothing; serving: proto service -> the mesh services that serve it,
    for the warnings about external services that take their calls (None: not known, no
    such warnings)."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_CONFIG_BYTES:
        return _too_big(source, size)
    if isinstance(text, bytes):
        data = text
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = data.count(b"\n", 0, err.start) + 1
            return Report(source, None, (Problem(line, "", f"not UTF-8 text: byte "
                                                 f"0x{data[err.start]:02x} cannot be decoded"),))
    parsed = parse_yaml(text)
    if parsed.root is None and parsed.errors:
        return Report(source, None, parsed.errors)
    return _report(source, parsed.root, parsed.errors, known, serving)


def check_data(data: object, source: str = "config",
               known: KnownInstances | None = None) -> Report:
    """Validate plain data, such as the canonical form (MeshConfig.to_dict) read from JSON."""
    try:
        root = nodes_from_data(data)
    except (TypeError, ValueError) as err:
        return Report(source, None, (Problem(None, "", str(err)),))
    return _report(source, root, (), known)


def check_file(path: str, known: KnownInstances | None = None,
               serving: ServingProtos | None = None) -> Report:
    """Raises OSError if the file cannot be read."""
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            return _too_big(path, os.fstat(f.fileno()).st_size)
    return check_text(data, path, known, serving)


def parse_text(text: str | bytes, source: str = "config") -> MeshConfig:
    """The config in YAML text; raises ConfigInvalid (a ValueError) with every error."""
    return check_text(text, source).unwrap()


def from_data(data: object) -> MeshConfig:
    """The config in plain data (the canonical form); raises ConfigInvalid."""
    return check_data(data).unwrap()


def _report(source: str, root: object, errors: tuple[Problem, ...],
            known: KnownInstances | None, serving: ServingProtos | None = None) -> Report:
    r = Reader()
    config = build(root, r, known, serving)  # type: ignore[arg-type]
    problems = tuple(sorted((*errors, *r.errors), key=_order))
    return Report(source, None if problems else config, problems,
                  tuple(sorted(r.warnings, key=_order)))


def _order(p: Problem) -> int:
    return p.line or 0


def _too_big(source: str, size: int) -> Report:
    return Report(source, None, (Problem(None, "", f"the file has {size} bytes, more than the "
                                         f"{MAX_CONFIG_BYTES} bytes (1 MiB) a config may have"),))
