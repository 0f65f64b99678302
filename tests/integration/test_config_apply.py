"""The mesh config over real gRPC: ApplyConfig and GetConfig on a registry on 127.0.0.1 port 0,
the CONFIG event on Watch, and in-process sidecars that put each new version in force."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh.admin import admin_get
from grpcmesh.config import parse_text
from grpcmesh.registry.config_store import Prepared
from grpcmesh.registry.model import PushedConfig
from grpcmesh.registry.server import RegistryServer
from grpcmesh.registry.sqlite_store import SqlitePersistence
from grpcmesh.sidecar import Sidecar
from tests.config.support import EXAMPLE
from tests.conftest import Mesh, wait_for
from tests.integration.test_registry_service import Watch, rpc_error

CONFIG = pb.WatchEvent.CONFIG
CHANGED = EXAMPLE.replace("timeout: 2s", "timeout: 3s")
BAD = "services:\n  orders:\n    timeout: 2\n    balancer: fastest\n"


@pytest_asyncio.fixture
async def stub(registry: RegistryServer) -> AsyncIterator[registry_pb2_grpc.RegistryStub]:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        yield registry_pb2_grpc.RegistryStub(channel)


async def apply(stub: registry_pb2_grpc.RegistryStub, text: str,
                source: str = "mesh.yaml") -> pb.ApplyConfigResponse:
    resp: pb.ApplyConfigResponse = await stub.ApplyConfig(
        pb.ApplyConfigRequest(text=text.encode(), source=source), timeout=10)
    return resp


async def in_force(stub: registry_pb2_grpc.RegistryStub) -> pb.AppliedConfig:
    resp = await stub.GetConfig(pb.GetConfigRequest(), timeout=5)
    config: pb.AppliedConfig = resp.config
    return config


@pytest.mark.asyncio
@pytest.mark.timeout(20)
async def test_apply_versions_unchanged_and_invalid(stub: registry_pb2_grpc.RegistryStub) -> None:
    none = await in_force(stub)
    assert (none.version, none.canonical_json, none.HasField("applied_at")) == (0, "{}", False)

    before = time.time()
    first = await apply(stub, EXAMPLE)
    assert (first.changed, first.config.version) == (True, 1)
    assert first.config.canonical_json == parse_text(EXAMPLE).canonical_json()
    assert before - 1 <= first.config.applied_at.ToNanoseconds() / 1e9 <= time.time() + 1
    # The registry knows no instance of orders: both subsets select none today.
    assert list(first.warnings) == [
        ("mesh.yaml:7: warning: services.orders.subsets.stable: selects no instance of orders "
        "today (labels version=v1)"),
        ("mesh.yaml:8: warning: services.orders.subsets.canary: selects no instance of orders "
        "today (labels version=v2)")]

    again = await apply(stub, "# same rules\n" + EXAMPLE, "copy.yaml")
    assert (again.changed, again.config) == (False, first.config)
    second = await apply(stub, CHANGED)
    assert (second.changed, second.config.version) == (True, 2)

    err = await rpc_error(apply(stub, BAD, "bad.yaml"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").splitlines() == [
        ("bad.yaml:3: services.orders.timeout: timeout '2' is not a duration: expected a number "
        "and a unit: ms, s, m or h (e.g. 250ms, 1.5s, 2m); a bare number has no unit: write 2s "
        "or 2ms"),
        ("bad.yaml:4: services.orders.balancer: balancer 'fastest' is unknown: expected "
        "peak_ewma, least_request, round_robin or random")]
    assert await in_force(stub) == second.config  # nothing applied


@pytest.mark.asyncio
@pytest.mark.timeout(20)
async def test_many_errors_are_cut_to_fit_a_default_client(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    text = "services:\n" + "".join(f"  s{i}: {{timeout: {i}}}\n" for i in range(2000))
    err = await rpc_error(apply(stub, text))  # a default channel: 8 KiB of trailers at most
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    lines = (err.details() or "").splitlines()
    assert lines[0].startswith("mesh.yaml:2: services.s0.timeout: timeout '0' is not a duration")
    assert lines[-1] == (f"... and {2000 - len(lines) + 1} more errors (grpcmesh config check "
                         "FILE lists them all)")
    assert (await in_force(stub)).version == 0


@pytest.mark.asyncio
@pytest.mark.timeout(20)
async def test_a_watcher_that_connects_after_apply_gets_the_config_at_once(
        stub: registry_pb2_grpc.RegistryStub) -> None:
    await apply(stub, EXAMPLE)
    old = Watch(stub)  # does not ask for the config: an older watcher
    watch = Watch(stub, include_config=True)  # type: ignore[arg-type]
    try:
        snapshot = await watch.next()
        assert (snapshot.type, snapshot.more) == (pb.WatchEvent.SNAPSHOT, False)
        config = await watch.next(timeout=1.0)
        assert (config.type, config.config.version) == (CONFIG, 1)
        assert config.config.canonical_json == parse_text(EXAMPLE).canonical_json()
        await apply(stub, CHANGED)
        pushed = await watch.next(timeout=1.0)
        assert (pushed.type, pushed.config.version) == (CONFIG, 2)
        assert (await old.next()).type == pb.WatchEvent.SNAPSHOT
        await old.nothing_for(0.3)
    finally:
        watch.cancel()
        old.cancel()


async def sidecar_config(sidecar: Sidecar) -> dict[str, object]:
    body: dict[str, object] = await admin_get(sidecar.admin.address, "/config", timeout=2.0)
    return body


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_every_sidecar_runs_the_new_version_within_a_second_of_apply(
        mesh: Mesh, stub: registry_pb2_grpc.RegistryStub) -> None:
    app = await mesh.app("orders-1")
    sidecars = [await mesh.sidecar("orders", app), await mesh.sidecar("client"),
                await mesh.sidecar("client")]
    heard: list[int] = []
    sidecars[1].on_config.append(lambda c: heard.append(c.version))
    for sidecar in sidecars:
        await wait_for(lambda s=sidecar: s.routes.synced, what="the sidecar's first snapshot")
        body = await sidecar_config(sidecar)
        assert body == {"version": 0, "applied_at": None, "digest": body["digest"],
                        "config": {}}
    for text, version in ((EXAMPLE, 1), (CHANGED, 2)):
        applied = await apply(stub, text)
        started = time.monotonic()
        for sidecar in sidecars:
            while (await sidecar_config(sidecar))["version"] != version:
                assert time.monotonic() - started < 1.0, f"version {version} not in force " \
                                                         f"within 1 s at {sidecar.admin.address}"
                await asyncio.sleep(0.02)
            body = await sidecar_config(sidecar)
            assert body["config"] == parse_text(text).to_dict()
            assert body["digest"] == parse_text(text).digest()
            assert isinstance(body["applied_at"], str) and body["applied_at"].endswith("Z")
            assert sidecar.config_version == version
            assert sidecar.mesh_config == parse_text(text)
        assert applied.config.version == version
    assert heard == [1, 2]


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_push_the_sidecar_cannot_read_leaves_the_old_config_in_force(
        mesh: Mesh, stub: registry_pb2_grpc.RegistryStub) -> None:
    sidecar = await mesh.sidecar("client")
    await apply(stub, EXAMPLE)
    await wait_for(lambda: sidecar.config_version == 1, 2.0, "version 1 in the sidecar")
    # As from a newer registry: version 2 has a rule this sidecar does not know.
    newer = '{"services":{"orders":{"mirror":{"percent":5}}}}'
    await mesh.registry.store.apply_config(Prepared(parse_text(EXAMPLE), newer), time.time())
    await wait_for(lambda: not sidecar.config.is_new(PushedConfig(2, newer)), 2.0,
                   "the sidecar to refuse version 2")
    body = await sidecar_config(sidecar)
    assert body["version"] == 1 and body["config"] == parse_text(EXAMPLE).to_dict()
    assert sidecar.mesh_config == parse_text(EXAMPLE)
    await apply(stub, "services: {}\n")  # version 3, readable: taken
    await wait_for(lambda: sidecar.config_version == 3, 2.0, "version 3 in the sidecar")
    assert (await sidecar_config(sidecar))["config"] == {}


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_sqlite_keeps_the_config_and_its_version_across_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    # (in force after the restart, what to apply, the version then, changed?)
    runs = [(0, EXAMPLE, 1, True), (1, EXAMPLE, 1, False), (1, CHANGED, 2, True),
            (2, None, 2, False)]
    first: pb.AppliedConfig | None = None
    for kept, text, version, changed in runs:
        server = RegistryServer("127.0.0.1:0", SqlitePersistence(db), warmup=0)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = registry_pb2_grpc.RegistryStub(channel)
                restarted = await in_force(stub)
                assert restarted.version == kept
                if kept == 1:
                    assert restarted == first  # the same content and time it was applied
                if text is not None:
                    resp = await apply(stub, text)
                    assert (resp.config.version, resp.changed) == (version, changed)
                    first = first or resp.config
        finally:
            await server.stop(0)
