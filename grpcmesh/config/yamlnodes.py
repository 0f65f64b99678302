"""YAML text to nodes that keep their line, so every error can name the line it is about.

PyYAML's constructors drop positions, and its composer silently keeps the last of duplicate
keys. This composes PyYAML's event stream (libyaml's parser when present) into our own nodes:

- SafeLoader semantics: scalars resolve as yaml.safe_load resolves them (YAML 1.1: `yes` is
  true, `1.10` is the float 1.1); the node also keeps the scalar's text as written, which is
  what string fields use, so `version: 1.10` means the label value "1.10".
- Only plain YAML: explicit tags other than the standard str/int/float/bool/null/map/seq
  (`!!python/object`, `!custom`, `!!binary`, `!!set`) are errors.
- Duplicate keys are errors (at the second occurrence), as are aliases (`*name`): expanding
  aliases can cost exponential time ("billion laughs"), and a config needs none.
- One document per file; at most MAX_DEPTH levels of nesting.

The composer is a loop over events with an explicit stack, so its cost is linear in the text.
A YAML syntax error stops the parse (nothing after it can be trusted); the other problems are
collected and the parse goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from grpcmesh.config.problems import Problem, key_part, show

MAX_DEPTH = 32
TAG = "tag:yaml.org,2002:"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CONSTRUCT = {f"{TAG}{name}": getattr(SafeConstructor, f"construct_yaml_{name}")
              for name in ("int", "float", "bool", "null")}
_TEXT_TAGS = {f"{TAG}str", f"{TAG}timestamp"}  # a date stays the text it was written as

ScalarValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Scalar:
    value: ScalarValue  # as yaml.safe_load reads it
    text: str  # as written ("" for null written as nothing)
    line: int | None  # 1-based; None for nodes made from data (from_data)


@dataclass(frozen=True, slots=True)
class Map:
    items: tuple[tuple[Scalar, Node], ...]  # in the file's order, without duplicate keys
    line: int | None


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Node, ...]
    line: int | None


Node = Scalar | Map | Seq


@dataclass(frozen=True)
class Parsed:
    root: Node | None  # None for an empty file or a syntax error
    errors: tuple[Problem, ...]


@dataclass
class _Open:
    """A map or list being composed."""

    is_map: bool
    line: int
    path: str
    items: list[tuple[Scalar, Node]] | list[Node] = field(default_factory=list)
    key: Scalar | None = None  # a map's key waiting for its value
    skip: bool = False  # the waiting key was a duplicate: drop its value
    seen: dict[str, int] = field(default_factory=dict)  # key text -> line

    def child_path(self) -> str:
        if not self.is_map:
            return f"{self.path}[{len(self.items)}]"
        if self.key is None:
            return self.path
        part = key_part(self.key.text)
        return f"{self.path}.{part}" if self.path else part


def parse_yaml(text: str) -> Parsed:
    errors: list[Problem] = []
    stack: list[_Open] = []
    root: list[Node] = []
    resolver = Resolver()
    constructor = SafeConstructor()
    documents = 0

    def path() -> str:
        return stack[-1].child_path() if stack else ""

    def add(node: Node) -> None:
        if not stack:
            root.append(node)
            return
        top = stack[-1]
        if not top.is_map:
            top.items.append(node)  # type: ignore[arg-type]
        elif top.key is None:
            if not isinstance(node, Scalar):
                errors.append(Problem(node.line, top.path, "a key must be a plain value, not a "
                                      "map or a list"))
                node = Scalar(None, "?", node.line)
            first = top.seen.get(node.text)
            top.key, top.skip = node, first is not None
            if first is not None:
                errors.append(Problem(node.line, top.path, f"duplicate key {show(node.text)} "
                                      f"(first at line {first})"))
            else:
                top.seen[node.text] = node.line or 0
        else:
            if not top.skip:
                top.items.append((top.key, node))  # type: ignore[arg-type]
            top.key = None

    try:
        for event in yaml.parse(text, Loader=_LOADER):
            line = event.start_mark.line + 1 if event.start_mark else 0
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    errors.append(Problem(line, "", "a config file holds one YAML document; "
                                          "a second one starts here"))
                    break
            elif isinstance(event, yaml.ScalarEvent):
                add(_scalar(event, line, resolver, constructor, path(), errors))
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                is_map = isinstance(event, yaml.MappingStartEvent)
                if event.tag not in (None, "!", f"{TAG}{'map' if is_map else 'seq'}"):
                    errors.append(Problem(line, path(), _tag_error(event.tag)))
                if len(stack) >= MAX_DEPTH:
                    return Parsed(None, (*errors, Problem(line, path(), "nested more than "
                                                          f"{MAX_DEPTH} levels deep")))
                stack.append(_Open(is_map, line, path()))
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                done = stack.pop()
                add(Map(tuple(done.items), done.line) if done.is_map  # type: ignore[arg-type]
                    else Seq(tuple(done.items), done.line))  # type: ignore[arg-type]
            elif isinstance(event, yaml.AliasEvent):
                errors.append(Problem(line, path(), f"aliases (*{event.anchor}) are not "
                                      "supported: write the value out"))
                add(Scalar(None, "", line))
    except yaml.YAMLError as err:
        return Parsed(None, (*errors, _syntax_problem(err, text)))
    return Parsed(root[0] if root else None, tuple(errors))


def _scalar(event: yaml.ScalarEvent, line: int, resolver: Resolver,
            constructor: SafeConstructor, path: str, errors: list[Problem]) -> Scalar:
    tag = event.tag
    if tag is None or tag == "!":
        tag = resolver.resolve(yaml.ScalarNode, event.value,  # type: ignore[no-untyped-call]
                               event.implicit)
    if tag in _TEXT_TAGS:
        return Scalar(event.value, event.value, line)
    construct = _CONSTRUCT.get(tag)
    if construct is None:
        errors.append(Problem(line, path, _tag_error(tag)))
        return Scalar(None, event.value, line)
    try:
        value = construct(constructor, yaml.ScalarNode(tag, event.value))
    except (ValueError, yaml.YAMLError):  # !!int "x", or more digits than Python converts
        errors.append(Problem(line, path, f"{show(event.value)} cannot be read as "
                              f"!!{tag.removeprefix(TAG)}"))
        return Scalar(None, event.value, line)
    return Scalar(value, event.value, line)


def _tag_error(tag: str | None) -> str:
    short = f"!!{tag[len(TAG):]}" if tag and tag.startswith(TAG) else str(tag)
    return (f"tag {show(short)} is not allowed: a config is plain YAML (strings, numbers, "
            "true/false, maps and lists)")


def _syntax_problem(err: yaml.YAMLError, text: str) -> Problem:
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        what = err.problem or err.context or "invalid YAML"
        if err.context and err.problem:
            what = f"{err.problem} ({err.context})"
        return Problem(mark.line + 1 if mark else None, "", f"YAML syntax error: {what}")
    position = getattr(err, "position", None)
    line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
    reason = getattr(err, "reason", None) or str(err)
    return Problem(line, "", f"YAML error: {reason}")


def from_data(data: object, depth: int = 0) -> Node:
    """Nodes (without lines) from plain data such as parsed JSON: dicts with string keys,
    lists, strings, numbers, booleans and None. Scalars get the text YAML would print."""
    if depth > MAX_DEPTH:
        raise ValueError(f"data nested more than {MAX_DEPTH} levels deep")
    if isinstance(data, dict):
        items: list[tuple[Scalar, Node]] = []
        for key, value in data.items():
            if not isinstance(key, str):
                raise TypeError(f"keys must be strings, got {show(key)}")
            items.append((Scalar(key, key, None), from_data(value, depth + 1)))
        return Map(tuple(items), None)
    if isinstance(data, (list, tuple)):
        return Seq(tuple(from_data(item, depth + 1) for item in data), None)
    if data is None:
        return Scalar(None, "null", None)
    if isinstance(data, bool):
        return Scalar(data, "true" if data else "false", None)
    if isinstance(data, (str, int, float)):
        return Scalar(data, data if isinstance(data, str) else repr(data), None)
    raise TypeError(f"unsupported value {show(data)} of type {type(data).__name__}")
