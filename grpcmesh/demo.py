"""`grpcmesh demo`: a whole mesh on one machine, and a client calling through it.

A registry, three Echo instances (with different artificial delays) each behind a sidecar, and a
client-only sidecar; an in-process client sends calls to that sidecar's outbound port, exactly as
an unmodified gRPC app would, and prints calls per instance, latency and errors every 5 seconds.
Halfway through, a mesh config is applied that splits the calls 50/50 between the stable
instances (echo-1, echo-2: version v1) and the canary (echo-3: version v2), and the table shows
the sidecar following it.
"""
from __future__ import annotations

import asyncio
import collections
import signal
import time

import grpc

from generated.grpcmesh.example.v1 import echo_pb2, echo_pb2_grpc
from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh import procs
from grpcmesh.admin import admin_get
from grpcmesh.output import table
from grpcmesh.registry.client import RegistryClient

INSTANCE_DELAYS_MS = (1.0, 3.0, 6.0)
INSTANCE_VERSIONS = ("v1", "v1", "v2")
CANARY_SPLIT = """\
services:
  echo:
    subsets:
      stable: {version: v1}
      canary: {version: v2}
    routes:
      - to: {stable: 50, canary: 50}
"""


class Stats:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter[str] = collections.Counter()
        self.last_error: dict[str, str] = {}  # code -> the latest message with it
        self.since = 0.0  # seconds into the run when counting (re)started

    def report(self, elapsed: float) -> str:
        total = sum(len(v) for v in self.latencies.values())
        rows = []
        for name, lat in sorted(self.latencies.items()):
            lat = sorted(lat)
            rows.append([name, len(lat), f"{100 * len(lat) / max(total, 1):.0f}%",
                         f"{lat[len(lat) // 2] * 1000:.1f}",
                         f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000:.1f}"])
        window = elapsed - self.since
        counted = f" (since {self.since:.0f}s)" if self.since else ""
        lines = [f"after {elapsed:.0f}s: {total} calls{counted}, {total / max(window, 1e-9):.0f}/s, "
                 f"{sum(self.errors.values())} errors"
                 + (f" {dict(self.errors)}" if self.errors else "")]
        lines += [f"  last {code}: {message}" for code, message in sorted(self.last_error.items())]
        lines.append(table(["INSTANCE", "CALLS", "SHARE", "P50 MS", "P99 MS"], rows))
        return "\n".join(lines)


async def _client(target: str, stats: Stats, stop: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        while not stop.is_set():
            start = time.perf_counter()
            try:
                resp = await stub.Unary(echo_pb2.EchoRequest(message="hello"), timeout=5)
                stats.latencies[resp.instance].append(time.perf_counter() - start)
            except grpc.aio.AioRpcError as err:
                stats.errors[err.code().name] += 1
                stats.last_error[err.code().name] = err.details() or ""
                await asyncio.sleep(0.1)


async def _wait_serving(registry: str, service: str, count: int, timeout: float) -> None:
    client = RegistryClient([registry])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                resp = await client.call("Resolve", pb.ResolveRequest(service=service))
                if sum(1 for i in resp.instances if i.health == pb.SERVING) >= count:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{count} instances of {service} did not become SERVING "
                           f"within {timeout:.0f}s")
    finally:
        await client.close()


async def _apply(registry: str, text: str) -> int:
    """Apply a mesh config, as `grpcmesh config apply` does; its version."""
    client = RegistryClient([registry])
    try:
        resp = await client.call("ApplyConfig", pb.ApplyConfigRequest(
            text=text.encode(), source="demo canary split"))
        return int(resp.config.version)
    finally:
        await client.close()


def _reset(stats: Stats, elapsed: float) -> None:
    """Count calls afresh from now on (the clients keep adding to the same Stats)."""
    stats.latencies.clear()
    stats.since = elapsed


async def _wait_ready(admin: str, timeout: float) -> None:
    """Until the sidecar has its routes (a 503 from /ready until then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await admin_get(admin, "/ready")
            return
        except (OSError, ValueError, TimeoutError):
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the client sidecar was not ready within {timeout:.0f}s")


async def _start_all(daemons: list[procs.Daemon], specs: list[tuple[str, ...]]
                     ) -> list[procs.Daemon]:
    """Start daemons in parallel; every one that started is in daemons, even if another failed."""
    results = await asyncio.gather(*(procs.start(name, *args) for name, *args in specs),
                                   return_exceptions=True)
    started = [r for r in results if isinstance(r, procs.Daemon)]
    daemons += started
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return started


async def run_demo(duration: float, concurrency: int) -> int:
    daemons: list[procs.Daemon] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print("starting a registry, 3 echo instances with sidecars, and a client sidecar...",
              flush=True)
        registry = await procs.start("registry", "registry", "--listen", "127.0.0.1:0")
        daemons.append(registry)
        reg = registry.addresses["registry"]
        apps = await _start_all(daemons, [
            (f"echo-{n}", "example-server", "--listen", "127.0.0.1:0", "--name", f"echo-{n}",
             "--delay-ms", str(delay))
            for n, delay in enumerate(INSTANCE_DELAYS_MS, 1)])
        await _start_all(daemons, [
            (f"sidecar-{app.name}", "sidecar", "--service", "echo", "--app",
             app.addresses["app"], "--registry", reg, "--inbound", "127.0.0.1:0",
             "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
             "--label", f"version={version}")
            for app, version in zip(apps, INSTANCE_VERSIONS, strict=True)])
        client_sidecar = await procs.start(
            "client-sidecar", "sidecar", "--service", "demo-client", "--registry", reg,
            "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            "--workers", "1")  # one balancer, so `grpcmesh endpoints` shows every call
        daemons.append(client_sidecar)
        await _wait_serving(reg, "echo", len(apps), timeout=20)
        await _wait_ready(client_sidecar.addresses["admin"], timeout=20)
        outbound = client_sidecar.addresses["outbound"]
        print(f"registry {reg}; client calls grpcmesh.example.v1.Echo/Unary through its "
              f"sidecar at {outbound} with {concurrency} calls in flight")
        delays = ", ".join(f"{d:g}" for d in INSTANCE_DELAYS_MS)
        print(f"instances answer with extra delays of {delays} ms: the peak-EWMA "
              "balancer sends most calls to the fastest. In another terminal try\n"
              f"  grpcmesh services --registry {reg}\n"
              f"  grpcmesh endpoints --admin {client_sidecar.addresses['admin']}\n"
              "Ctrl-C stops.\n", flush=True)
        stats = Stats()
        started = time.monotonic()
        split_at = duration / 2 if duration else 10.0
        clients = [loop.create_task(_client(outbound, stats, stop)) for _ in range(concurrency)]
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
            elapsed = time.monotonic() - started
            if split_at and elapsed >= split_at:
                split_at = 0.0
                version = await _apply(reg, CANARY_SPLIT)
                print(f"after {elapsed:.0f}s: applied a canary split as mesh config version "
                      f"{version}: half the calls to the stable instances (version v1: echo-1, "
                      "echo-2), half to the canary (v2: echo-3). The next tables show it.\n",
                      flush=True)
                _reset(stats, elapsed)
            if duration and elapsed >= duration:
                stop.set()
            if stop.is_set() or int(elapsed) % 5 == 0:
                print(stats.report(elapsed) + "\n", flush=True)
        await asyncio.gather(*clients)
        print("stopping...", flush=True)
        return 0 if not stats.errors else 1
    finally:
        await procs.stop_all(daemons)
