"""The `grpcmesh` command as users run it: real subprocesses, real registry, real sidecars.

Every subprocess runs with a timeout and is stopped by the end of its test (or module, for the
shared registry and example app).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from generated.grpcmesh.example.v1 import echo_pb2, echo_pb2_grpc
from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh import procs
from grpcmesh.admin import admin_get
from grpcmesh.registry.client import RegistryClient, watch_forever
from grpcmesh.registry.model import Idempotency, is_idempotent
from grpcmesh.routing import RouteTable

ECHO = "grpcmesh.example.v1.Echo"
GRPCMESH = (sys.executable, "-m", "grpcmesh")
module_loop = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


def run(*args: str, timeout: float = 15.0) -> Result:
    done = subprocess.run([*GRPCMESH, *args], check=False, capture_output=True, text=True,
                          timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


async def arun(*args: str, timeout: float = 15.0) -> Result:
    """Like run(), without blocking the event loop the daemons' pipes live on."""
    proc = await asyncio.create_subprocess_exec(*GRPCMESH, *args, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise AssertionError(f"grpcmesh {' '.join(args)} did not finish in {timeout}s") from None
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.code != 0, str(result)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, str(result)
    assert "Traceback" not in result.err, str(result)
    for fragment in fragments:
        assert fragment in lines[0], str(result)


async def stop(daemons: list[procs.Daemon]) -> None:
    await procs.stop_all(daemons, timeout=10)
    for daemon in daemons:
        assert not os.path.exists(daemon.log_path), "Daemon.stop leaves its log behind"


# -- help and bad input: no daemons -------------------------------------------------------------

HELP = {
    "registry": "Run the registry",
    "sidecar": "Run a sidecar",
    "register": "Register an instance the registry health-checks itself",
    "deregister": "Remove a registered instance",
    "services": "List services",
    "resolve": "List the instances of a mesh service",
    "endpoints": "Show, per service, each endpoint's health",
    "example-server": f"Run {ECHO}",
    "config": "The mesh config: per-service rules",
    "demo": "Start a registry, three Echo instances",
}


def test_top_level_help_lists_every_command() -> None:
    result = run("--help")
    assert result.code == 0, str(result)
    assert result.out.startswith("usage: grpcmesh")
    assert "A gRPC-native service mesh." in result.out
    for command in HELP:
        assert command in result.out


@pytest.mark.parametrize("command", sorted(HELP))
def test_subcommand_help_explains_it(command: str) -> None:
    result = run(command, "--help")
    assert result.code == 0, str(result)
    assert result.out.startswith(f"usage: grpcmesh {command}")
    assert HELP[command] in " ".join(result.out.split())
    assert result.err == ""


@pytest.mark.parametrize(("args", "fragments"), [
    ((), ["required: COMMAND"]),
    (("frobnicate",), ["invalid choice: 'frobnicate'"]),
    (("sidecar", "--registry", "127.0.0.1:7700"), ["--service"]),
    (("sidecar", "--service", "echo"), ["--registry"]),
    (("sidecar", "--service", "echo", "--registry", "nonsense"),
     ["--registry", "'nonsense' is not HOST:PORT"]),
    (("sidecar", "--service", "echo", "--registry", "127.0.0.1:7700",
      "--outbound", "127.0.0.1:99999"), ["--outbound", "'99999'"]),
    (("sidecar", "--service", "Echo!", "--registry", "127.0.0.1:7700"),
     ["'Echo!' is not a valid mesh service name"]),
    (("sidecar", "--service", "echo", "--registry", "127.0.0.1:7700",
      "--grace-period", "-1"), ["--grace-period", "must not be negative"]),
    (("sidecar", "--service", "echo", "--registry", "127.0.0.1:7700",
      "--inbound", "127.0.0.1:0"), ["need --app"]),
    (("sidecar", "--service", "echo", "--registry", "127.0.0.1:7700", "--ttl", "0"),
     ["--ttl 0 is out of range: expected 1-3600 seconds"]),
    (("sidecar", "--service", "echo", "--registry", "127.0.0.1:7700",
      "--instance-id", "bad id"), ["--instance-id", "'bad id'"]),
    (("resolve", "Bad Name!"), ["'Bad Name!' is neither a mesh service name"]),
    (("register", "--service", "echo"), ["--address"]),
    (("register", "--service", "echo", "--address", "127.0.0.1:1", "--label", "novalue"),
     ["--label", "'novalue' is not KEY=VALUE"]),
    (("deregister", "--service", "echo"), ["give --instance-id or --address"]),
    (("deregister", "--service", "echo", "--instance-id", "e1"), ["give --owner", "--address"]),
    (("registry", "--listen", "localhost"), ["--listen", "'localhost' is not HOST:PORT"]),
    (("registry", "--store", "bogus"), ["--store", "'bogus' is not 'memory', 'sqlite:PATH' or 'etcd:"]),
    (("registry", "--max-watchers", "0"), ["--max-watchers", "'0' is not a whole number"]),
    (("registry", "--max-instance-bytes", "2000000"),
     ["--max-instance-bytes 2000000 is too large: at most 1048576"]),
    (("--log-level", "LOUD", "services"), ["--log-level", "'LOUD'"]),
    (("config",), ["required: COMMAND"]),
    (("config", "check"), ["required: FILE"]),
    (("example-server", "--fail-code", "14", "--fail-percent", "130"),
     ["--fail-percent", "'130' is not a percentage (0-100)"]),
    (("example-server", "--slow-percent", "x", "--slow-ms", "200"),
     ["--slow-percent", "'x' is not a number"]),
    (("example-server", "--fail-percent", "30"), ["--fail-percent needs --fail-code"]),
    (("example-server", "--slow-percent", "5"), ["--slow-percent and --slow-ms go together"]),
    (("example-server", "--slow-ms", "-1", "--slow-percent", "5"),
     ["--slow-ms", "must not be negative"]),
    (("example-server", "--seed", "one"), ["--seed", "invalid int value: 'one'"]),
])
def test_bad_input_is_one_line_naming_the_problem(args: tuple[str, ...],
                                                   fragments: list[str]) -> None:
    result = run(*args)
    assert_one_line_error(result, *fragments)
    assert result.code == 2, str(result)  # every usage error, as the README says
    if args and args[0] in HELP:
        assert result.err.startswith(f"grpcmesh {args[0]}")


def test_unreachable_registry_fails_fast_with_one_line() -> None:
    started = time.monotonic()
    result = run("services", "--registry", "127.0.0.1:1", timeout=15)
    elapsed = time.monotonic() - started
    assert result.code == 1, str(result)
    assert_one_line_error(result, "grpcmesh services: cannot reach the registry at 127.0.0.1:1")
    assert elapsed < 10, f"took {elapsed:.1f}s"


def test_registry_descriptor_set_that_is_missing_is_named() -> None:
    result = run("registry", "--listen", "127.0.0.1:0", "--descriptor-set", "/nonexistent.pb")
    assert result.code == 1, str(result)
    assert_one_line_error(result, "cannot read descriptor set /nonexistent.pb")


def test_example_server_counts_file_in_missing_directory_names_the_path() -> None:
    result = run("example-server", "--listen", "127.0.0.1:0",
                 "--counts-file", "/nonexistent/dir/counts.json")
    assert result.code == 1, str(result)
    assert_one_line_error(result, "cannot write --counts-file /nonexistent/dir/counts.json: "
                                  "No such file or directory")


def test_registry_store_in_missing_directory_names_the_path() -> None:
    result = run("registry", "--listen", "127.0.0.1:0", "--store", "sqlite:/nonexistent/dir/x.db")
    assert result.code == 1, str(result)
    assert_one_line_error(result, "/nonexistent/dir/x.db")


# -- a registry and an example app, shared by the module ----------------------------------------


@dataclass
class Shared:
    registry: str
    app: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared() -> AsyncIterator[Shared]:
    started = await asyncio.gather(
        procs.start("registry", "registry", "--listen", "127.0.0.1:0"),
        procs.start("app", "example-server", "--listen", "127.0.0.1:0", "--name", "app-1"),
        return_exceptions=True)
    daemons = [d for d in started if isinstance(d, procs.Daemon)]
    try:
        for item in started:
            if isinstance(item, BaseException):
                raise item
        registry, app = daemons
        yield Shared(registry.addresses["registry"], app.addresses["app"])
    finally:
        await stop(daemons)


async def poll(args: tuple[str, ...], check: Any, timeout: float = 10.0) -> Any:
    """Run a --json query until check(parsed output) is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await arun(*args)
        assert result.code == 0, str(result)
        parsed = json.loads(result.out)
        if check(parsed):
            return parsed
        if time.monotonic() > deadline:
            raise AssertionError(f"grpcmesh {' '.join(args)} never satisfied the check:\n"
                                 f"{result.out}")
        await asyncio.sleep(0.1)


@module_loop
async def test_register_resolve_services_deregister(shared: Shared) -> None:
    reg = ("--registry", shared.registry)
    result = await arun("register", "--service", "echo", "--address", shared.app, *reg)
    assert result.code == 0, str(result)
    assert f"registered echo/{shared.app} at {shared.app} serving {ECHO}" in result.out

    def serving(resp: dict[str, Any]) -> bool:
        return [i["health"] for i in resp["instances"]] == ["SERVING"]

    resolved = await poll(("resolve", "echo", "--json", *reg), serving)
    [instance] = resolved["instances"]
    assert instance["service"] == "echo"
    assert instance["address"] == instance["instanceId"] == shared.app
    assert instance["protoServices"] == [ECHO]
    assert instance["leaseId"] == "0"  # registry-checked (int64 is a JSON string)

    by_proto = await arun("resolve", ECHO, "--json", *reg)
    assert by_proto.code == 0, str(by_proto)
    assert json.loads(by_proto.out)["instances"] == resolved["instances"]

    services = await arun("services", "--json", *reg)
    assert services.code == 0, str(services)
    assert json.loads(services.out)["services"] == [
        {"service": "echo", "protoServices": [ECHO], "instances": 1, "serving": 1}]

    table = await arun("services", *reg)
    assert table.code == 0, str(table)
    header, row = table.out.strip().splitlines()
    assert header.split() == ["SERVICE", "INSTANCES", "SERVING", "PROTO", "SERVICES"]
    assert row.split() == ["echo", "1", "1", ECHO]
    table = await arun("resolve", "echo", *reg)
    assert table.code == 0, str(table)
    assert "registry-checked" in table.out and "SERVING" in table.out

    result = await arun("deregister", "--service", "echo", "--address", shared.app, *reg)
    assert result.code == 0, str(result)
    assert f"deregistered echo/{shared.app}" in result.out
    gone = await arun("resolve", "echo", "--json", *reg)
    assert gone.code == 1, str(gone)
    assert_one_line_error(gone, "NOT_FOUND: no instance of service 'echo' is registered")
    services = await arun("services", *reg)
    assert services.out.strip() == "no services registered"


@module_loop
async def test_deregister_passes_the_owner_which_defaults_to_the_address(
        shared: Shared) -> None:
    reg = ("--registry", shared.registry)
    result = await arun("register", "--service", "owned", "--address", shared.app,
                        "--owner", "ops", *reg)
    assert result.code == 0, str(result)
    refused = await arun("deregister", "--service", "owned", "--address", shared.app, *reg)
    assert_one_line_error(refused, "grpcmesh deregister: PERMISSION_DENIED:",
                          f"instance_id '{shared.app}' of service 'owned' is not owned by "
                          f"'{shared.app}'")
    result = await arun("deregister", "--service", "owned", "--address", shared.app,
                        "--owner", "ops", *reg)
    assert result.code == 0, str(result)
    assert f"deregistered owned/{shared.app}" in result.out


@module_loop
async def test_register_an_unreachable_address_says_to_pass_proto_service(
        shared: Shared) -> None:
    result = await arun("register", "--service", "ghost", "--address", "127.0.0.1:1",
                        "--registry", shared.registry)
    assert_one_line_error(result, "cannot ask 127.0.0.1:1", "--proto-service")


@module_loop
async def test_resolve_unknown_names_is_one_line(shared: Shared) -> None:
    result = await arun("resolve", "ghost", "--registry", shared.registry)
    assert_one_line_error(result, "grpcmesh resolve: NOT_FOUND:",
                          "no instance of service 'ghost' is registered")
    result = await arun("resolve", "shop.v1.Ghost", "--registry", shared.registry)
    assert_one_line_error(result, "no instance of proto service 'shop.v1.Ghost' is registered")


@module_loop
async def test_deregister_unknown_instance_is_one_line(shared: Shared) -> None:
    result = await arun("deregister", "--service", "ghost", "--instance-id", "nope",
                        "--owner", "ops", "--registry", shared.registry)
    assert result.code == 1, str(result)
    assert_one_line_error(result, "grpcmesh deregister:", "NOT_FOUND")


# -- a sidecar drains on SIGTERM ----------------------------------------------------------------


async def instances(client: RegistryClient, service: str) -> list[Any]:
    try:
        resp = await client.call("Resolve", pb.ResolveRequest(service=service))
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return []
    return list(resp.instances)


async def routed_to_echo(sidecar: procs.Daemon) -> None:
    """Until sidecar routes to one serving instance of echo."""
    async def routed() -> bool:
        body = await admin_get(sidecar.addresses["admin"], "/endpoints")
        echo = body["services"].get("echo", {"endpoints": []})
        return [e["health"] for e in echo["endpoints"]] == ["SERVING"]

    await wait_for(routed, 10, "the client sidecar to route to echo")


async def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@module_loop
async def test_sidecar_deregisters_then_finishes_calls_in_flight_on_sigterm(
        shared: Shared) -> None:
    daemons: list[procs.Daemon] = []
    client = None
    try:
        registry = await procs.start("registry-2", "registry", "--listen", "127.0.0.1:0")
        daemons.append(registry)
        reg = registry.addresses["registry"]
        app_sidecar, client_sidecar = await asyncio.gather(
            procs.start("app-sidecar", "sidecar", "--service", "echo", "--app", shared.app,
                        "--registry", reg, "--inbound", "127.0.0.1:0",
                        "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                        "--grace-period", "5"),
            procs.start("client-sidecar", "sidecar", "--service", "client", "--registry", reg,
                        "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                        # one process: the test reads its call state on the admin port, which
                        # shows the primary worker's view only
                        "--workers", "1"))
        daemons += [app_sidecar, client_sidecar]
        client = RegistryClient([reg])

        async def registered() -> bool:
            return [i.health for i in await instances(client, "echo")] == [pb.SERVING]

        await wait_for(registered, 10, "the app's sidecar to register it as SERVING")
        [instance] = await instances(client, "echo")
        assert instance.address == app_sidecar.addresses["inbound"]
        assert instance.lease_id != 0
        assert instance.admin_address == app_sidecar.addresses["admin"]

        await routed_to_echo(client_sidecar)

        async with grpc.aio.insecure_channel(client_sidecar.addresses["outbound"]) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            quick = await stub.Unary(echo_pb2.EchoRequest(message="warm"), timeout=5)
            assert quick.instance == "app-1"
            slow = asyncio.ensure_future(
                stub.Unary(echo_pb2.EchoRequest(message="slow", delay_ms=1500), timeout=15))

            async def in_flight() -> bool:
                body = await admin_get(client_sidecar.addresses["admin"], "/endpoints")
                return body["services"]["echo"]["endpoints"][0]["in_flight"] == 1

            await wait_for(in_flight, 5, "the slow call to be in flight")
            await asyncio.sleep(0.2)  # through the app's sidecar to the app
            sent = time.monotonic()
            app_sidecar.proc.send_signal(signal.SIGTERM)

            async def deregistered() -> bool:
                return await instances(client, "echo") == []

            await wait_for(deregistered, 2, "the instance to leave the registry")
            assert time.monotonic() - sent < 1.0
            assert app_sidecar.proc.returncode is None, "exited before the call finished"
            assert not slow.done()

            resp = await asyncio.wait_for(slow, 10)
            assert (resp.message, resp.instance) == ("slow", "app-1")
        code = await asyncio.wait_for(app_sidecar.proc.wait(), 10)
        assert code == 0, app_sidecar.log_tail()
        assert "Traceback" not in app_sidecar.log_tail(200)
    finally:
        if client is not None:
            await client.close()
        await stop(daemons)


# -- method kinds and idempotency levels from reflection ----------------------------------------

UNKNOWN, NO_SIDE_EFFECTS = pb.Method.IDEMPOTENCY_UNKNOWN, pb.Method.NO_SIDE_EFFECTS
ECHO_KINDS = [(f"/{ECHO}/BidiStream", True, True, UNKNOWN),
              (f"/{ECHO}/ClientStream", True, False, UNKNOWN),
              (f"/{ECHO}/Get", False, False, NO_SIDE_EFFECTS),  # its option in echo.proto
              (f"/{ECHO}/ServerStream", False, True, UNKNOWN),
              (f"/{ECHO}/Unary", False, False, UNKNOWN)]


async def method_kinds(registry: str, service: str) -> list[tuple[str, bool, bool, int]]:
    client = RegistryClient([registry])
    try:
        [instance] = await instances(client, service)
    finally:
        await client.close()
    return [(m.path, m.client_streaming, m.server_streaming, m.idempotency_level)
            for m in instance.methods]


@pytest.mark.parametrize("flags", [(), ("--proto-service", ECHO)], ids=["reflection", "given"])
@module_loop
async def test_register_publishes_method_kinds_from_reflection(
        shared: Shared, flags: tuple[str, ...]) -> None:
    reg = ("--registry", shared.registry)
    result = await arun("register", "--service", "kinds", "--address", shared.app, *flags, *reg)
    try:
        assert result.code == 0, str(result)
        assert f"serving {ECHO} (5 methods described, 1 idempotent)" in result.out, str(result)
        assert await method_kinds(shared.registry, "kinds") == ECHO_KINDS
    finally:
        gone = await arun("deregister", "--service", "kinds", "--address", shared.app, *reg)
        assert gone.code == 0, str(gone)


@module_loop
async def test_register_with_proto_service_needs_no_reflection(shared: Shared) -> None:
    bare = grpc.aio.server()  # serves nothing: no reflection, no health
    port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    address = f"127.0.0.1:{port}"
    reg = ("--registry", shared.registry)
    try:
        result = await arun("register", "--service", "bare", "--address", address,
                            "--proto-service", "shop.v1.Bare", *reg)
        assert result.code == 0, str(result)
        unknown = "no methods described: none is known to be idempotent"
        assert f"serving shop.v1.Bare ({unknown})" in result.out, str(result)
        assert await method_kinds(shared.registry, "bare") == []
        gone = await arun("deregister", "--service", "bare", "--address", address, *reg)
        assert gone.code == 0, str(gone)
    finally:
        await bare.stop(0)


@module_loop
async def test_method_kinds_survive_a_sqlite_registry_restart(
        shared: Shared, tmp_path: Path) -> None:
    store = ("--store", f"sqlite:{tmp_path / 'registry.db'}")
    daemons: list[procs.Daemon] = []
    try:
        first = await procs.start("registry-sqlite", "registry", "--listen", "127.0.0.1:0",
                                  *store)
        daemons.append(first)
        result = await arun("register", "--service", "kinds", "--address", shared.app,
                            "--registry", first.addresses["registry"])
        assert result.code == 0, str(result)
        await stop(daemons)
        daemons.clear()
        second = await procs.start("registry-sqlite-2", "registry", "--listen", "127.0.0.1:0",
                                   *store)
        daemons.append(second)
        assert await method_kinds(second.addresses["registry"], "kinds") == ECHO_KINDS
    finally:
        await stop(daemons)


@module_loop
async def test_idempotency_level_read_from_a_real_proto_through_reflection(
        shared: Shared) -> None:
    """echo.proto declares Get NO_SIDE_EFFECTS: the app's sidecar reads it from the app's
    reflection and registers it; Resolve (`grpcmesh resolve --json`) shows it, and a route
    table fed by the registry's Watch says Get is idempotent and Unary is not."""
    daemons: list[procs.Daemon] = []
    client = None
    watching = None
    try:
        registry = await procs.start("registry-idem", "registry", "--listen", "127.0.0.1:0")
        daemons.append(registry)
        reg = registry.addresses["registry"]
        daemons.append(await procs.start(
            "idem-sidecar", "sidecar", "--service", "echo", "--app", shared.app,
            "--registry", reg, "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            "--workers", "1"))
        client = RegistryClient([reg])

        async def registered() -> bool:
            return bool(await instances(client, "echo"))

        await wait_for(registered, 10, "the app's sidecar to register it")
        result = await arun("resolve", "echo", "--json", "--registry", reg)
        assert result.code == 0, str(result)
        [instance] = json.loads(result.out)["instances"]
        levels = {m["path"]: m["idempotencyLevel"] for m in instance["methods"]}
        assert levels[f"/{ECHO}/Get"] == "NO_SIDE_EFFECTS", levels
        assert levels[f"/{ECHO}/Unary"] == "IDEMPOTENCY_UNKNOWN", levels

        table = RouteTable()
        watching = asyncio.ensure_future(watch_forever(client, table.apply))

        async def known() -> bool:
            return table.method(f"/{ECHO}/Get") is not None

        await wait_for(known, 10, "the watch to bring the methods")
        get = table.method(f"/{ECHO}/Get")
        assert get is not None and get.idempotency == Idempotency.NO_SIDE_EFFECTS
        assert is_idempotent(get)
        assert not is_idempotent(table.method(f"/{ECHO}/Unary"))
        assert not is_idempotent(table.method(f"/{ECHO}/NotAMethod"))
    finally:
        if watching is not None:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        if client is not None:
            await client.close()
        await stop(daemons)


# -- the demo -----------------------------------------------------------------------------------


def test_demo_runs_and_prints_a_table_of_the_three_instances() -> None:
    proc = subprocess.Popen([*GRPCMESH, "demo", "--duration", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the demo stops its daemons on SIGTERM
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise AssertionError(f"demo did not finish in 40s\n{out}\n{err}") from None
    assert proc.returncode == 0, f"{out}\n{err}"
    assert "INSTANCE  CALLS  SHARE  P50 MS  P99 MS" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith("echo-")}
    assert sorted(rows) == ["echo-1", "echo-2", "echo-3"]
    assert all(int(row[1]) > 0 for row in rows.values()), out
    assert " 0 errors" in out


@module_loop
async def test_config_check_with_a_registry_warns_about_empty_subsets_and_overlaps(
        shared: Shared, tmp_path: Path) -> None:
    reg = ("--registry", shared.registry)
    result = await arun("register", "--service", "cfg", "--address", shared.app,
                        "--instance-id", "cfg-1", "--label", "version=v1", *reg)
    assert result.code == 0, str(result)
    try:
        path = tmp_path / "mesh.yaml"
        path.write_text("services:\n"
                        "  cfg:\n"
                        "    subsets: {stable: {version: v1}, canary: {version: v2}}\n"
                        "  nobody:\n"
                        "    subsets: {all: {}}\n"
                        "external:\n"
                        "  outside:\n"
                        "    addresses: [localhost:1]\n"
                        "    proto_services: [grpcmesh.example.v1.Echo]\n")
        offline = await arun("config", "check", str(path))
        assert (offline.code, offline.err) == (0, ""), str(offline)
        checked = await arun("config", "check", str(path), *reg)
        assert checked.code == 0, str(checked)
        assert checked.out.endswith("; 3 warnings\n")
        lines = checked.err.splitlines()
        assert lines[:2] == [
            (f"{path}:3: warning: services.cfg.subsets.canary: selects no instance of cfg "
            "today (labels version=v2)"),
            (f"{path}:5: warning: services.nobody.subsets.all: selects no instance of nobody "
            "today (labels none)")]
        # The registered cfg instance serves Echo, which the external service takes.
        assert lines[2].startswith(f"{path}:9: warning: external.outside.proto_services: "
                                   "grpcmesh.example.v1.Echo is also served by mesh service ")
        assert "cfg" in lines[2] and "its calls go to external service outside" in lines[2]
    finally:
        await arun("deregister", "--service", "cfg", "--instance-id", "cfg-1", *reg)


def test_config_check_with_an_unreachable_registry_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("services: {orders: {}}\n")
    result = run("config", "check", str(path), "--registry", "127.0.0.1:1")
    assert result.code == 1, str(result)
    assert_one_line_error(result, "cannot reach the registry at 127.0.0.1:1")


@module_loop
async def test_the_api_key_example_loaded_with_interceptor(shared: Shared) -> None:
    """docs/interceptors.md's example, as a user runs it: the app's sidecar loads it with
    --interceptor; calls without the key get UNAUTHENTICATED from the sidecar."""
    daemons: list[procs.Daemon] = []
    try:
        registry = await procs.start("registry-keys", "registry", "--listen", "127.0.0.1:0")
        daemons.append(registry)
        reg = registry.addresses["registry"]
        app_sidecar, client_sidecar = await asyncio.gather(
            procs.start("keys-sidecar", "sidecar", "--service", "echo", "--app", shared.app,
                        "--registry", reg, "--inbound", "127.0.0.1:0",
                        "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1",
                        "--interceptor", "grpcmesh.example.apikey:factory",
                        env={"GRPCMESH_API_KEYS": "k1,k2"}),
            procs.start("keys-client", "sidecar", "--service", "client", "--registry", reg,
                        "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1"))
        daemons += [app_sidecar, client_sidecar]

        await routed_to_echo(client_sidecar)
        async with grpc.aio.insecure_channel(client_sidecar.addresses["outbound"]) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.Unary(echo_pb2.EchoRequest(message="no key"), timeout=5)
            assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "needs an x-api-key" in (missing.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await stub.Unary(echo_pb2.EchoRequest(message="bad"), timeout=5,
                                 metadata=(("x-api-key", "nope"),))
            assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = await stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=5,
                                     metadata=(("x-api-key", "k2"),))
            assert reply.message == "hi"
    finally:
        await procs.stop_all(daemons)


# -- the example server's knobs and counts, as the benchmark uses them ---------------------------

@module_loop
async def test_example_server_counts_file_on_start_sigusr2_and_exit(tmp_path: Path) -> None:
    path = tmp_path / "counts.json"
    app = await procs.start("counted", "example-server", "--listen", "127.0.0.1:0",
                            "--name", "counted", "--fail-code", "14", "--fail-percent", "50",
                            "--seed", "3", "--counts-file", str(path))
    try:
        start = json.loads(path.read_text())  # written before the ready line
        assert start["seq"] == 0 and start["instance"] == "counted"
        assert start["methods"]["Get"]["calls"] == 0
        failed = 0
        async with grpc.aio.insecure_channel(app.addresses["app"]) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            for method in ("Get", "Unary") * 20:
                try:
                    await getattr(stub, method)(echo_pb2.EchoRequest(message="x"), timeout=5)
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE
                    failed += 1
        assert 0 < failed < 40  # some of each, from the 50% draw
        app.proc.send_signal(signal.SIGUSR2)

        async def fresh() -> dict[str, Any] | None:
            body: dict[str, Any] = json.loads(path.read_text())
            return body if body["seq"] >= 1 else None
        body = await wait_for(fresh, 5, "the counts written on SIGUSR2")
        assert body["methods"]["Get"]["calls"] == body["methods"]["Unary"]["calls"] == 20
        assert body["methods"]["Get"]["failed"] + body["methods"]["Unary"]["failed"] == failed
        app.proc.send_signal(signal.SIGUSR1)  # recovers: no failure after it
        await asyncio.sleep(0.2)
        async with grpc.aio.insecure_channel(app.addresses["app"]) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            for _ in range(10):
                await stub.Get(echo_pb2.EchoRequest(message="x"), timeout=5)
        assert await app.stop(10) == 0
        final = json.loads(path.read_text())  # written again at exit
        assert final["seq"] == body["seq"] + 1 and final["methods"]["Get"]["calls"] == 30
        assert final["methods"]["Get"]["failed"] == body["methods"]["Get"]["failed"]
        assert [p.name for p in tmp_path.iterdir()] == ["counts.json"]
    finally:
        await procs.stop_all([app])
