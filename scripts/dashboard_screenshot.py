"""Take the README's dashboard screenshot (docs/dashboard.png) from a real run.

Starts, in this process, a registry, two mesh services of the example app (echo: three
instances, one of them slow; search: three, one failing 3% of its calls and one 60%, which
the outlier rule ejects, balanced round robin by a mesh config) each with its sidecar, and a client sidecar; calls them at a
rate that rises and falls; runs `grpcmesh dashboard` as a process of its own; and after
--duration seconds saves what headless Chromium shows (Debian's chromium and
chromium-driver).

    python scripts/dashboard_screenshot.py [--duration 150] [--out docs/dashboard.png]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from generated.grpcmesh.example.v1 import echo_pb2, echo_pb2_grpc
from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh.example.server import EchoBehaviour, EchoServer
from grpcmesh.registry.server import RegistryServer
from grpcmesh.sidecar import Sidecar, SidecarSettings
from tests.integration.browser import chromium

CONFIG = """
services:
  search:
    balancer: round_robin
    timeout: 2s
    outlier: {consecutive_failures: 3, interval: 1s, base_ejection: 30s,
              max_ejection_percent: 50}
"""
WIDTH = 1400
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
INSTANCES = [  # service, name, delay ms, failure code, failure %
    ("echo", "echo-1", 3.0, 0, 0.0), ("echo", "echo-2", 4.0, 0, 0.0),
    ("echo", "echo-3", 25.0, 0, 0.0),
    ("search", "search-1", 8.0, 0, 0.0), ("search", "search-2", 12.0, UNAVAILABLE, 3.0),
    ("search", "search-3", 10.0, UNAVAILABLE, 60.0)]


async def _calls(outbound: str, service: str, pause: float, started: float,
                 stop: asyncio.Event) -> None:
    """Calls to service, one after another, with a pause that swings over two minutes."""
    async with grpc.aio.insecure_channel(outbound) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        while not stop.is_set():
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Unary(echo_pb2.EchoRequest(message="hi"), timeout=5,
                                 metadata=(("grpcmesh-service", service),))
            swing = 1.6 + math.sin(2 * math.pi * (time.monotonic() - started) / 120)
            await asyncio.sleep(pause * swing)


def _fit(driver: Any) -> None:
    """Make the window as tall as the page, so that the screenshot holds all of it."""
    chrome = driver.execute_script("return window.outerHeight - window.innerHeight")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, int(height) + int(chrome))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=150.0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" /
                                              "dashboard.png"))
    args = parser.parse_args()
    registry = RegistryServer("127.0.0.1:0", check_interval=0.5)
    await registry.start()
    apps: list[EchoServer] = []
    sidecars: list[Sidecar] = []
    stop = asyncio.Event()
    dashboard = None
    try:
        for service, name, delay, code, percent in INSTANCES:
            app = EchoServer("127.0.0.1:0", EchoBehaviour(
                name, delay, code, fail_percent=percent or 100.0, rng=random.Random(name)))
            await app.start()
            apps.append(app)
            sidecar = Sidecar(SidecarSettings(
                service=service, registry=(registry.address,), app=app.address,
                outbound="127.0.0.1:0", inbound="127.0.0.1:0", admin="127.0.0.1:0",
                instance_id=name))
            await sidecar.start()
            sidecars.append(sidecar)
        client = Sidecar(SidecarSettings(service="web", registry=(registry.address,),
                                         outbound="127.0.0.1:0", admin="127.0.0.1:0"))
        await client.start()
        sidecars.append(client)
        async with grpc.aio.insecure_channel(registry.address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            await stub.ApplyConfig(pb.ApplyConfigRequest(text=CONFIG.encode(),
                                                         source="mesh.yaml"), timeout=10)
        await asyncio.sleep(2)
        dashboard = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "grpcmesh", "dashboard", "--listen", "127.0.0.1:0",
            "--registry", registry.address, stdout=subprocess.PIPE)
        assert dashboard.stdout is not None
        url = json.loads(await dashboard.stdout.readline())["dashboard"]
        driver = await asyncio.to_thread(chromium, WIDTH, 1200)
        try:
            await asyncio.to_thread(driver.get, url)
            started = time.monotonic()
            load = [asyncio.ensure_future(_calls(client.outbound_address, "echo", 0.012,
                                                 started, stop)) for _ in range(3)]
            load += [asyncio.ensure_future(_calls(client.outbound_address, "search", 0.03,
                                                  started, stop)) for _ in range(2)]
            print(f"{url}: calling for {args.duration:g} s...", flush=True)
            await asyncio.sleep(args.duration)
            await asyncio.to_thread(_fit, driver)
            await asyncio.sleep(1.5)  # (redrawn at the new size)
            await asyncio.to_thread(driver.save_screenshot, args.out)
            stop.set()
            await asyncio.gather(*load)
        finally:
            await asyncio.to_thread(driver.quit)
        print(f"saved {args.out}")
        return 0
    finally:
        stop.set()
        if dashboard is not None and dashboard.returncode is None:
            dashboard.terminate()
            await dashboard.wait()
        for sidecar in reversed(sidecars):
            await sidecar.shutdown()
        for app in apps:
            await app.stop(0)
        await registry.stop(0)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
