"""Typed reads of YAML nodes that collect errors instead of stopping at the first.

Each read returns the value, or None after recording a Problem with the node's line and the
key path. The validator (validate.py) goes on after a None, so one run reports every error.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from grpcmesh.config.durations import Duration
from grpcmesh.config.problems import Problem, key_part, show
from grpcmesh.config.yamlnodes import Map, Node, Scalar, Seq

T = TypeVar("T")
Number = int | float


def join(path: str, key: str) -> str:
    part = key_part(key)
    return f"{path}.{part}" if path else part


def describe(node: Node) -> str:
    if isinstance(node, Map):
        return "a map"
    if isinstance(node, Seq):
        return "a list"
    if node.value is None:
        return "an empty value" if node.text in ("", "~", "null") else show(node.text)
    return show(node.value)


class Reader:
    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, node: Node | None, path: str, message: str) -> None:
        self.errors.append(Problem(node.line if node is not None else None, path, message))

    def warn(self, node: Node | None, path: str, message: str) -> None:
        self.warnings.append(Problem(node.line if node is not None else None, path, message))

    # -- shapes ---------------------------------------------------------------------------------

    def map(self, node: Node, path: str, what: str = "a map") -> Map | None:
        if isinstance(node, Map):
            return node
        self.error(node, path, f"expected {what}, got {describe(node)}")
        return None

    def seq(self, node: Node, path: str, what: str = "a list") -> Seq | None:
        if isinstance(node, Seq):
            return node
        self.error(node, path, f"expected {what}, got {describe(node)}")
        return None

    def fields(self, node: Map, path: str, known: Sequence[str],
               reserved: Mapping[str, str] | None = None) -> dict[str, Node]:
        """The map's known keys and their values; other keys are errors (with a suggestion)."""
        out: dict[str, Node] = {}
        for key, value in node.items:
            if key.text in known:
                out[key.text] = value
            elif reserved and key.text in reserved:
                self.error(key, join(path, key.text), reserved[key.text])
            else:
                close = difflib.get_close_matches(key.text[:64], known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.error(key, path, f"unknown key {show(key.text)}{hint}: expected "
                                      f"{_one_of(known)}")
        return out

    def require(self, fields: Mapping[str, Node], key: str, node: Map, path: str
                ) -> Node | None:
        value = fields.get(key)
        if value is None:
            self.error(node, path, f"missing key {key!r}")
        return value

    # -- scalars --------------------------------------------------------------------------------

    def text(self, node: Node, path: str, what: str = "a string") -> str | None:
        """A scalar as written: `1.10` is "1.10", `true` is "true". Null is an error."""
        if isinstance(node, Scalar) and node.value is not None:
            return node.text
        self.error(node, path, f"expected {what}, got {describe(node)}")
        return None

    def number(self, node: Node, path: str, what: str = "a number") -> Number | None:
        """An int or a finite float (not a quoted string, not true/false); whole floats -> int."""
        value = node.value if isinstance(node, Scalar) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not math.isfinite(value)):
            self.error(node, path, f"expected {what}, got {describe(node)}")
            return None
        return int(value) if isinstance(value, float) and value.is_integer() else value

    def duration(self, node: Node, path: str) -> Duration | None:
        text = self.text(node, path, "a duration such as 250ms, 2s or 1m")
        return None if text is None else self.check(Duration.parse, text, node, path)

    def choice(self, node: Node, path: str, choices: Sequence[str], what: str) -> str | None:
        text = self.text(node, path, what)
        if text is not None and text not in choices:
            self.error(node, path, f"{what} {show(text)} is unknown: expected {_one_of(choices)}")
            return None
        return text

    def check(self, fn: Callable[[str, str], T], value: str, node: Node, path: str,
              field: str | None = None) -> T | None:
        """Run a names.* style check(value, field); its ValueError becomes an error here."""
        try:
            return fn(value, field or path.rpartition(".")[2])
        except ValueError as err:
            self.error(node, path, str(err))
            return None


def _one_of(choices: Sequence[str]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
