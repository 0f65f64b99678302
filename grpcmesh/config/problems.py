"""What a config check finds: errors and warnings, each with the line and the key path.

An error is printed as `FILE:LINE: PATH: message`, a warning as
`FILE:LINE: warning: PATH: message` (compilers' format, so editors can jump to the line).
Values quoted in messages are cut to a few dozen characters, so that output stays linear in
the file's size even when one huge value is wrong in many ways.
"""
from __future__ import annotations

from dataclasses import dataclass


def show(value: object, limit: int = 60) -> str:
    """repr() of a value for a message, cut to about `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def key_part(key: str, limit: int = 64) -> str:
    """A map key as it appears in a path (services.orders), cut if very long."""
    return key if len(key) <= limit else key[:limit] + "..."


@dataclass(frozen=True)
class Problem:
    line: int | None  # 1-based; None when the config came from data without lines
    path: str  # "services.orders.routes[1].to", "" for the whole file
    message: str

    def format(self, source: str, *, warning: bool = False) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        kind = "warning: " if warning else ""
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: {kind}{what}"


class ConfigInvalid(ValueError):
    """A config with errors, raised by the functions that return a config or nothing."""

    def __init__(self, problems: tuple[Problem, ...], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        lines = [p.format(source) for p in problems[:5]]
        more = len(problems) - len(lines)
        super().__init__("\n".join(lines + ([f"... and {more} more"] if more > 0 else [])))
