"""A real Prometheus (Debian's package; CI installs it) scrapes a sidecar's /metrics, and its
HTTP API gives back the calls the test made: their count, their success ratio, a rate."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from tests.conftest import Mesh
from tests.integration.test_rules import apply, running

pytestmark = pytest.mark.timeout(60)

PROMETHEUS = shutil.which("prometheus")
if PROMETHEUS is None and os.environ.get("GRPCMESH_CI"):  # CI installs it: never skip there
    raise RuntimeError("prometheus is not installed; .ci/run installs Debian's package")
SELECTOR = 'grpcmesh_calls_total{direction="outbound",service="echo"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def query(base: str, expr: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as answer:
        body = json.loads(answer.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def value(base: str, expr: str) -> float | None:
    result = query(base, expr)
    return float(result[0]["value"][1]) if result else None  # type: ignore[index]


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed "
                                               "(apt-get install -y prometheus)")
@pytest.mark.asyncio
async def test_prometheus_scrapes_the_calls_a_sidecar_counted(mesh: Mesh,
                                                              tmp_path: Path) -> None:
    good = await mesh.app("good")
    bad = await mesh.app("bad", fail_code=grpc.StatusCode.INTERNAL.value[0])
    for app in (good, bad):
        await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 2)
    await running(mesh.sidecars, await apply(
        mesh.registry, "services:\n  echo:\n    balancer: round_robin\n"))
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: grpcmesh
    metrics_path: /metrics
    static_configs: [{{targets: ["{client.admin.address}"]}}]
""")
    assert PROMETHEUS is not None
    proc = await asyncio.create_subprocess_exec(
        PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async def up() -> bool:
            try:
                return await asyncio.to_thread(value, base, 'up{job="grpcmesh"}') == 1.0
            except OSError:
                return False
        for _ in range(150):  # Prometheus starting, then its first scrape
            if await up():
                break
            assert proc.returncode is None, f"prometheus exited: {proc.returncode}"
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("Prometheus did not scrape the sidecar within 15 s")
        ok = failed = 0
        async with grpc.aio.insecure_channel(client.outbound_address) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            for _ in range(60):  # about 3 s of calls, half to each instance
                try:
                    await stub.Unary(pb.EchoRequest(), timeout=5)
                    ok += 1
                except grpc.aio.AioRpcError:
                    failed += 1
                await asyncio.sleep(0.05)
        assert ok and failed
        total = float(ok + failed)

        async def counted() -> bool:
            return await asyncio.to_thread(value, base, f"sum({SELECTOR})") == total
        deadline = asyncio.get_running_loop().time() + 10
        while not await counted():
            assert asyncio.get_running_loop().time() < deadline, "not scraped within 10 s"
            await asyncio.sleep(0.2)
        ratio = await asyncio.to_thread(
            value, base, f'sum({SELECTOR[:-1]},code="OK"}}) / sum({SELECTOR})')
        assert ratio == pytest.approx(ok / total)
        rate = await asyncio.to_thread(value, base, f"sum(rate({SELECTOR}[10s]))")
        assert rate is not None and rate > 0
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
