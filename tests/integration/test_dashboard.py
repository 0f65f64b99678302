"""`grpcmesh dashboard` against a running mesh, loaded in headless Chromium: the numbers read
from the page are those of `grpcmesh stat --json`, the endpoints' shares of calls are the
client sidecar's own counts, and a sidecar or registry that is down shows as such."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from generated.grpcmesh.example.v1 import echo_pb2 as pb
from generated.grpcmesh.example.v1 import echo_pb2_grpc
from grpcmesh.admin import admin_get
from grpcmesh.dashboard.server import Dashboard, DashboardSettings
from tests.conftest import Mesh
from tests.integration.browser import MISSING, chromium
from tests.integration.test_rules import apply, running

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(bool(MISSING), reason="chromium and chromium-driver are not "
                                 "installed (apt-get install -y chromium chromium-driver)")]

WINDOW = 60  # the dashboard's and stat's window: it covers every call of the test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def artifact(tmp_path: Path, name: str) -> Path:
    """Where a test artifact goes: $GRPCMESH_ARTIFACTS if set, else the test's tmp_path."""
    directory = Path(os.environ.get("GRPCMESH_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


async def _load(address: str, stop: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        while not stop.is_set():
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Unary(pb.EchoRequest(message="hi"), timeout=5)
            await asyncio.sleep(0.002)


# The page redraws every second: read it in one go, in the page, from its rows' data
# attributes and text (what a person sees), so no element goes stale in between.
READ_PAGE = """
const rows = (selector, root) => [...(root || document).querySelectorAll(selector)];
return {
  services: rows("#services tr[data-service]").map((r) => ({...r.dataset, text: r.innerText})),
  endpoints: rows("#endpoints .card[data-service]").map((card) => ({
    service: card.dataset.service,
    rows: rows("tr.endpoint", card).map((r) => ({...r.dataset, text: r.innerText}))})),
  balancers: Object.fromEntries(rows("#endpoints .card[data-service]").map(
    (card) => [card.dataset.service, card.querySelector("h2").textContent])),
  config: document.body.dataset.configVersion || "",
  updates: Number(document.body.dataset.updates),
  registry: document.getElementById("registry").textContent,
  sidecars: document.getElementById("sidecars").textContent,
  down: rows("#sidecar-list li[data-ok=false]").map((li) => li.textContent)};
"""


def _read_page(driver: Any) -> dict[str, Any]:
    """The figures the page shows."""
    def number(text: str | None) -> float | None:
        return None if text in (None, "") else float(text)
    raw = driver.execute_script(READ_PAGE)
    services = {(r["service"], r["direction"]): {
        "calls": int(r["calls"]), "success": number(r["success"]), "rps": number(r["rps"]),
        **{f"{q}_ms": number(r[q]) for q in ("p50", "p95", "p99")}, "text": r["text"]}
        for r in raw["services"]}
    endpoints = {card["service"]: {r["address"]: {
        "calls": int(r["calls"]), "share": float(r["share"]), "estimate": number(r["estimate"]),
        "ejected": r["ejected"], "text": r["text"]} for r in card["rows"]}
        for card in raw["endpoints"]}
    return {**raw, "services": services, "endpoints": endpoints}


async def _page_after(driver: Any, updates: int) -> dict[str, Any]:
    """The page once it has redrawn from the API at least twice more than `updates`."""
    async def redrawn() -> dict[str, Any]:
        while True:
            page = await asyncio.to_thread(_read_page, driver)
            if page["updates"] >= updates + 2:
                return page
            await asyncio.sleep(0.2)
    return await asyncio.wait_for(redrawn(), 15)


@pytest.mark.asyncio
async def test_the_page_shows_what_grpcmesh_stat_computes(mesh: Mesh, tmp_path: Path) -> None:
    fast = await mesh.app("fast", delay_ms=2)
    flaky = await mesh.app("flaky", delay_ms=8, fail_code=grpc.StatusCode.INTERNAL.value[0],
                           fail_percent=20, seed=7)
    for app in (fast, flaky):
        await mesh.sidecar("echo", app)
    client = await mesh.sidecar("client")
    await mesh.serving(client, "echo", 2)
    version = await apply(mesh.registry,
                          "services:\n  echo:\n    balancer: round_robin\n    timeout: 2s\n")
    await running(mesh.sidecars, version)

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grpcmesh", "dashboard", "--listen", "127.0.0.1:0",
        "--registry", mesh.registry.address, "--window", f"{WINDOW}s",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    driver = None
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line, (await proc.stderr.read()).decode() if proc.stderr else ""
        url = json.loads(line)["dashboard"]
        driver = await asyncio.to_thread(chromium)
        await asyncio.to_thread(driver.get, url)
        stop = asyncio.Event()
        load = [asyncio.ensure_future(_load(client.outbound_address, stop)) for _ in range(4)]
        await asyncio.sleep(4)
        stop.set()
        await asyncio.gather(*load)
        before = await asyncio.to_thread(_read_page, driver)
        page = await _page_after(driver, before["updates"])
        run = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "grpcmesh", "stat", "--registry",
                             mesh.registry.address, "--window", f"{WINDOW}s", "--json"],
            capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        stat = {(r["service"], r["direction"]): r for r in json.loads(run.stdout)}
        shot = artifact(tmp_path, "dashboard.png")
        await asyncio.to_thread(driver.save_screenshot, str(shot))
        print(f"dashboard screenshot: {shot}")
    finally:
        if driver is not None:
            await asyncio.to_thread(driver.quit)
        proc.terminate()
        await proc.wait()

    # Services: the same rows as `grpcmesh stat --json`, the counts exactly
    assert set(page["services"]) == set(stat) == {("echo", "outbound"), ("echo", "inbound")}
    for key, row in stat.items():
        shown = page["services"][key]
        assert shown["calls"] == row["calls"] > 50
        assert shown["success"] == row["success"] < 1
        assert abs(shown["rps"] - row["rps"]) <= 1 / WINDOW  # one call's worth of the window
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            assert shown[q] == pytest.approx(row[q], abs=0.01)
        assert f"{row['success'] * 100:.2f}%" in shown["text"]
    # Endpoints: shares add up to 100% and are the client sidecar's own counts
    counts = {e["address"]: e["calls"] for e in (await admin_get(
        client.admin.address, "/endpoints"))["services"]["echo"]["endpoints"]}
    shown_endpoints = page["endpoints"]["echo"]
    assert set(shown_endpoints) == set(counts) == {s.inbound_address for s in mesh.sidecars[:2]}
    assert sum(e["share"] for e in shown_endpoints.values()) == pytest.approx(1, abs=0.002)
    total = sum(counts.values())
    assert total == stat[("echo", "outbound")]["calls"]
    for address, endpoint in shown_endpoints.items():
        assert endpoint["calls"] == counts[address]
        assert endpoint["share"] == pytest.approx(counts[address] / total, abs=0.0001)
        assert endpoint["estimate"] is not None and endpoint["ejected"] == "false"
        assert f"{endpoint['share'] * 100:.1f}%" in endpoint["text"]
    # the balancer in force: the mesh config's (each sidecar's /endpoints says so)
    assert "round_robin" in page["balancers"]["echo"]
    assert page["config"] == str(version)
    assert page["registry"] == "registry up"
    assert page["sidecars"] == "3/3 sidecars answering"
    assert shot.stat().st_size > 10_000


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.read()


@pytest.mark.asyncio
async def test_a_registry_or_sidecar_that_is_down_shows_as_such(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    alone = Dashboard(DashboardSettings(listen="127.0.0.1:0", registry=(dead,), timeout=1.0))
    pinned = Dashboard(DashboardSettings(listen="127.0.0.1:0", registry=(dead,),
                                         admin=(dead,), timeout=1.0))
    base = f"http://{await alone.start()}"
    driver = None
    try:
        status, raw = await asyncio.to_thread(_get, f"{base}/api/summary")
        body = json.loads(raw)
        assert status == 200 and body["registry"]["ok"] is False
        assert "cannot reach the registry" in body["registry"]["error"]
        assert body["sidecars"] == [] and body["services"] == [] and body["config"] is None
        pinned_base = f"http://{await pinned.start()}"
        status, raw = await asyncio.to_thread(_get, f"{pinned_base}/api/summary")
        [sidecar] = json.loads(raw)["sidecars"]
        assert status == 200 and sidecar["admin"] == dead and sidecar["ok"] is False
        assert sidecar["error"]
        # The page loads all the same, and says what is down
        driver = await asyncio.to_thread(chromium, 1200, 700)
        await asyncio.to_thread(driver.get, f"{pinned_base}/")
        page = await _page_after(driver, -1)  # (the page's own calls to this loop's server)
        assert page["registry"] == "registry unreachable"
        assert page["sidecars"] == "0/1 sidecars answering"
        [down] = page["down"]
        assert dead in down and "unreachable" in down
        await asyncio.to_thread(driver.save_screenshot,
                                str(artifact(tmp_path, "dashboard-down.png")))
        status, _ = await asyncio.to_thread(_get, f"{base}/api/summary?window=600")
    except urllib.error.HTTPError as err:
        status = err.code
    finally:
        if driver is not None:
            await asyncio.to_thread(driver.quit)
        await alone.stop()
        await pinned.stop()
    assert status == 400
