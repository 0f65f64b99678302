"""`grpcmesh config apply | show` and `grpcmesh registry --config` as users run them: real
subprocesses, each test with registries of its own (the config is registry-wide state)."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from grpcmesh import procs
from grpcmesh.config import parse_text
from tests.config.support import EXAMPLE
from tests.integration.test_cli import arun, assert_one_line_error, run, stop

CHANGED = EXAMPLE.replace("timeout: 2s", "timeout: 3s")
BAD = EXAMPLE.replace("to: {stable: 90, canary: 10}", "to: {stable: -5}").replace(
    "UNAVAILABLE", "UNAVAILABLE_")


@pytest_asyncio.fixture
async def daemons() -> AsyncIterator[list[procs.Daemon]]:
    started: list[procs.Daemon] = []
    yield started
    await stop(started)


async def registry(daemons: list[procs.Daemon], *args: str) -> tuple[str, str]:
    daemon = await procs.start("registry", "registry", "--listen", "127.0.0.1:0", *args)
    daemons.append(daemon)
    return "--registry", daemon.addresses["registry"]


async def show_json(reg: tuple[str, str]) -> dict[str, object]:
    result = await arun("config", "show", "--json", *reg)
    assert (result.code, result.err) == (0, ""), str(result)
    body: dict[str, object] = json.loads(result.out)
    return body


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_apply_unchanged_changed_invalid_and_show(
        daemons: list[procs.Daemon], tmp_path: Path) -> None:
    reg = await registry(daemons)
    empty = await arun("config", "show", *reg)
    assert (empty.code, empty.out) == (0, "# mesh config version 0: none applied, no rules\n{}\n")
    assert await show_json(reg) == {"version": 0, "applied_at": None,
                                    "digest": parse_text("").digest(), "config": {}}

    mesh, bad = tmp_path / "mesh.yaml", tmp_path / "bad.yaml"
    mesh.write_text(EXAMPLE)
    bad.write_text(BAD)
    summary = "1 service, 1 external service, 2 subsets, 2 routes, 1 fault, 1 rate limit"
    first = await arun("config", "apply", str(mesh), *reg)
    assert first.code == 0, str(first)
    assert first.out == f"{mesh}: applied: version 1: {summary}; 2 warnings\n"
    assert first.err.splitlines() == [  # from the registry, which knows no orders instance
        (f"{mesh}:7: warning: services.orders.subsets.stable: selects no instance of orders "
        "today (labels version=v1)"),
        (f"{mesh}:8: warning: services.orders.subsets.canary: selects no instance of orders "
        "today (labels version=v2)")]
    again = await arun("config", "apply", str(mesh), *reg)
    assert again.out == f"{mesh}: unchanged: version 1 already has this content; 2 warnings\n"
    mesh.write_text(CHANGED)
    second = await arun("config", "apply", str(mesh), *reg)
    assert second.out.startswith(f"{mesh}: applied: version 2: "), str(second)

    refused = await arun("config", "apply", str(bad), *reg)
    assert (refused.code, refused.out) == (1, ""), str(refused)
    lines = refused.err.splitlines()
    assert lines[0] == (f"{bad}:13: services.orders.routes[1].to: weights must be positive "
                        "numbers, got -5 for 'stable'")
    assert lines[1].startswith(f"{bad}:17: services.orders.faults[0].abort.code: "
                               "'UNAVAILABLE_' is not a gRPC status name")
    assert len(lines) == 2
    shown = await show_json(reg)
    assert shown["version"] == 2 and shown["config"] == parse_text(CHANGED).to_dict()
    assert isinstance(shown["applied_at"], str) and shown["applied_at"].endswith("Z")

    # `config show` prints YAML that applies as is, to the same version.
    text = await arun("config", "show", *reg)
    assert text.out.startswith("# mesh config version 2, applied ")
    assert "    timeout: 3s\n" in text.out
    shown_file = tmp_path / "shown.yaml"
    shown_file.write_text(text.out)
    same = await arun("config", "apply", str(shown_file), *reg)
    assert same.out.startswith(f"{shown_file}: unchanged: version 2 "), str(same)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_errors_only_the_registry_finds_are_printed_one_per_line(
        daemons: list[procs.Daemon], tmp_path: Path) -> None:
    reg = await registry(daemons)
    # Valid here, but its canonical form passes the 1 MiB the registry pushes in one message.
    big = tmp_path / "big.yaml"
    big.write_text("services:\n  orders:\n    faults:\n"
                   + "      - delay: {duration: 1s}\n" * 30_000)
    result = await arun("config", "apply", str(big), *reg, timeout=40)
    assert (result.code, result.out) == (1, ""), str(result)
    assert result.err.splitlines() == [
        (f"{big}: the config's canonical form (JSON, defaults filled in) has 1260036 bytes, "
        "more than the 1048576 bytes (1 MiB) the registry sends to sidecars in one message: "
        "split rules that repeat, or remove some"),
        f"grpcmesh config: the registry refused {big}; the config in force is unchanged"]
    assert (await show_json(reg))["version"] == 0


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_registry_config_good_bad_and_kept_by_sqlite_across_restarts(
        daemons: list[procs.Daemon], tmp_path: Path) -> None:
    mesh, changed, bad = tmp_path / "mesh.yaml", tmp_path / "changed.yaml", tmp_path / "bad.yaml"
    mesh.write_text(EXAMPLE)
    changed.write_text(CHANGED)
    bad.write_text(BAD)
    refused = run("registry", "--listen", "127.0.0.1:0", "--config", str(bad))
    assert (refused.code, refused.out) == (1, ""), str(refused)
    assert refused.err.splitlines()[0].startswith(f"{bad}:13: services.orders.routes[1].to:")
    assert refused.err.splitlines()[2:] == [
        f"grpcmesh registry: --config {bad} has 2 errors: the registry does not start"]

    store = ("--store", f"sqlite:{tmp_path / 'registry.db'}")
    reg = await registry(daemons, *store, "--config", str(mesh))
    first = await show_json(reg)
    assert first["version"] == 1 and first["config"] == parse_text(EXAMPLE).to_dict()
    await stop(daemons)
    daemons.clear()
    reg = await registry(daemons, *store)  # no --config: the stored one, same version
    assert await show_json(reg) == first
    await stop(daemons)
    daemons.clear()
    reg = await registry(daemons, *store, "--config", str(mesh))  # the same content
    assert await show_json(reg) == first
    await stop(daemons)
    daemons.clear()
    reg = await registry(daemons, *store, "--config", str(changed))
    assert (await show_json(reg))["version"] == 2


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    assert_one_line_error(run("config", "apply"), "required: FILE")
    assert_one_line_error(run("config", "show", "--registry", "nonsense"),
                          "'nonsense' is not HOST:PORT")
    missing = run("registry", "--listen", "127.0.0.1:0", "--config", str(tmp_path / "no.yaml"))
    assert_one_line_error(missing, f"--config {tmp_path / 'no.yaml'}: cannot read it: No such "
                                   "file or directory")
    path = tmp_path / "mesh.yaml"
    path.write_text(EXAMPLE)
    assert_one_line_error(run("config", "apply", str(path), "--registry", "127.0.0.1:1"),
                          "grpcmesh config: cannot reach the registry at 127.0.0.1:1")
