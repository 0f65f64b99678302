"""The line-keeping YAML composer: SafeLoader values, lines, and what it refuses."""
from __future__ import annotations

from textwrap import dedent

import pytest

from grpcmesh.config.yamlnodes import MAX_DEPTH, Map, Scalar, Seq, from_data, parse_yaml


def test_nodes_keep_lines_values_and_text() -> None:
    parsed = parse_yaml("a: 1\nb:\n  - x\n  - 1.10\n  - yes\nc: ~\n")
    assert not parsed.errors
    root = parsed.root
    assert isinstance(root, Map) and root.line == 1
    (ka, a), (_kb, b), (_kc, c) = root.items
    assert (ka.text, ka.line, a) == ("a", 1, Scalar(1, "1", 1))
    assert isinstance(b, Seq) and b.line == 3
    assert b.items == (Scalar("x", "x", 3), Scalar(1.1, "1.10", 4), Scalar(True, "yes", 5))
    assert c == Scalar(None, "~", 6)


def test_quoted_scalars_stay_strings() -> None:
    root = parse_yaml('a: "1"\nb: \'true\'\n').root
    assert isinstance(root, Map)
    assert [v for _, v in root.items] == [Scalar("1", "1", 1), Scalar("true", "true", 2)]


def test_empty_text_is_no_document() -> None:
    assert parse_yaml("").root is None
    assert parse_yaml("# only a comment\n").errors == ()


def test_duplicate_keys_are_errors_at_the_second() -> None:
    parsed = parse_yaml(dedent("""\
        a:
          x: 1
          y: 2
          x: 3
        a: 4
        """))
    assert [p.format("f") for p in parsed.errors] == [
        "f:4: a: duplicate key 'x' (first at line 2)",
        "f:5: duplicate key 'a' (first at line 1)",
    ]


def test_keys_compare_as_written() -> None:
    parsed = parse_yaml('1: a\n"1": b\n')
    assert [p.message for p in parsed.errors] == ["duplicate key '1' (first at line 1)"]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("a: !!python/object:os.system x\n", 1, "tag '!!python/object:os.system' is not allowed"),
    ("a:\n  b: !custom 1\n", 2, "tag '!custom' is not allowed"),
    ("a: !!binary aGk=\n", 1, "tag '!!binary' is not allowed"),
    ("a: !!set {x}\n", 1, "tag '!!set' is not allowed"),
    ("a: &x 1\nb: *x\n", 2, "aliases (*x) are not supported: write the value out"),
    ("a: !!int x\n", 1, "'x' cannot be read as !!int"),
    ("? [a]\n: 1\n", 1, "a key must be a plain value, not a map or a list"),
])
def test_refused(text: str, line: int, message: str) -> None:
    errors = parse_yaml(text).errors
    assert [(p.line, p.message[:len(message)]) for p in errors] == [(line, message)]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("a: [1, 2\nb: 3\n", 2, "YAML syntax error: "),
    ("a: 1\n b: 2\n", 2, "YAML syntax error: mapping values are not allowed"),
    ("a:\n\t- 1\n", 2, "YAML syntax error: "),
    ("a: 'open\n", 2, "YAML syntax error: "),
    ("a: 1\n---\nb: 2\n", 2, "a config file holds one YAML document"),
    ("a: 1\nb: \x07\n", 2, "YAML error: control characters are not allowed"),
])
def test_syntax_errors_have_their_line(text: str, line: int, message: str) -> None:
    errors = parse_yaml(text).errors
    assert len(errors) == 1
    assert errors[0].line == line
    assert errors[0].message.startswith(message)


def test_nesting_is_bounded() -> None:
    text = "a: " + "{a: " * (MAX_DEPTH + 5) + "1" + "}" * (MAX_DEPTH + 5)
    parsed = parse_yaml(text)
    assert parsed.root is None
    assert parsed.errors[-1].message == f"nested more than {MAX_DEPTH} levels deep"


def test_from_data_gives_the_text_yaml_would() -> None:
    node = from_data({"a": [1, 1.5, True, None, "x"]})
    assert isinstance(node, Map) and node.line is None
    seq = node.items[0][1]
    assert isinstance(seq, Seq)
    assert [s.text for s in seq.items if isinstance(s, Scalar)] == ["1", "1.5", "true", "null",
                                                                   "x"]
    with pytest.raises(TypeError, match="keys must be strings"):
        from_data({1: 2})
