"""The registry with a large state and many watchers, over real gRPC on 127.0.0.1 port 0.

A state larger than gRPC's default 4 MiB message limit used to lock every new sidecar out (its
SNAPSHOT was one message), and serializing the state for each of many watchers starved Register
and KeepAlive."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from generated.grpcmesh.registry.v1 import registry_pb2_grpc
from grpcmesh import procs
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.registry.model import Event, EventType
from grpcmesh.registry.server import RegistryServer
from grpcmesh.registry.snapshot import PART_BYTES, SnapshotAssembler
from tests.conftest import Mesh

GRPC_DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
PROTO = "shop.v1.Orders"
LEASE = 60


def big_instance(i: int, methods: int = 900) -> pb.Instance:
    """An instance of about 58 KB, under the default 64 KiB limit: 900 methods of 60 chars."""
    prefix = f"/{PROTO}/M"
    inst = pb.Instance(service="big", instance_id=f"b{i:03d}", address=f"127.0.0.1:{20000 + i}",
                       proto_services=[PROTO], health=pb.SERVING)
    inst.methods.extend(pb.Method(path=f"{prefix}{m:0{60 - len(prefix)}d}")
                        for m in range(methods))
    return inst


async def register(stub: registry_pb2_grpc.RegistryStub, count: int,
                   methods: int = 900) -> list[pb.RegisterResponse]:
    return list(await asyncio.gather(*(stub.Register(pb.RegisterRequest(
        instance=big_instance(i, methods), ttl_seconds=LEASE), timeout=10)
        for i in range(count))))


@pytest_asyncio.fixture
async def stub(registry: RegistryServer) -> AsyncIterator[registry_pb2_grpc.RegistryStub]:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        yield registry_pb2_grpc.RegistryStub(channel)


async def read_snapshot(call: grpc.aio.UnaryStreamCall, timeout: float = 10.0
                        ) -> tuple[list[pb.WatchEvent], Event]:
    """The parts of the first snapshot on a Watch stream, and the snapshot they make."""
    assembler = SnapshotAssembler()
    parts: list[pb.WatchEvent] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await call.read()
            assert msg is not grpc.aio.EOF, "the registry ended the watch"
            parts.append(msg)
            event = assembler.feed(Event.from_proto(msg))
            if event is not None:
                return parts, event


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_a_snapshot_over_4_mib_reaches_new_watchers_and_sidecars_intact(
        mesh: Mesh, stub: registry_pb2_grpc.RegistryStub) -> None:
    registered = await register(stub, 85)
    state = sum(big_instance(i).ByteSize() for i in range(85))
    assert state > GRPC_DEFAULT_MAX_MESSAGE

    call = stub.Watch(pb.WatchRequest())  # a client with grpc's default 4 MiB receive limit
    try:
        parts, snapshot = await read_snapshot(call)
    finally:
        call.cancel()
    assert len(parts) > GRPC_DEFAULT_MAX_MESSAGE // PART_BYTES
    assert all(p.ByteSize() <= PART_BYTES for p in parts)
    assert [p.more for p in parts] == [True] * (len(parts) - 1) + [False]
    revision = max(r.revision for r in registered)
    assert {(p.type, p.revision, p.partial) for p in parts} == {(pb.WatchEvent.SNAPSHOT,
                                                                 revision, True)}  # warm-up
    assert snapshot.type == EventType.SNAPSHOT
    assert sorted(i.instance_id for i in snapshot.instances) == [f"b{i:03d}" for i in range(85)]
    assert all(len(i.methods) == 900 for i in snapshot.instances)

    sidecar = await mesh.sidecar("client")  # a new sidecar: its watch assembles the parts
    await mesh.serving(sidecar, "big", 85, timeout=10)
    # the snapshot's revision, or one more once the sidecar's own announcement (client-only)
    # has reached it
    assert sidecar.routes.revision in (revision, revision + 1)
    assert sidecar.registry_up


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_register_and_keepalive_answer_promptly_while_200_watchers_take_snapshots(
        ) -> None:
    """The registry runs as `grpcmesh registry` (on uvloop, as deployed) and the watchers in a
    process of their own (tests/watchers.py), so that the latencies are the registry's."""
    daemon = await procs.start("registry-watchers", "registry", "--listen", "127.0.0.1:0",
                               "--warmup", "0")
    address = daemon.addresses["registry"]
    stop = asyncio.Event()
    prober: asyncio.Task[None] | None = None
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            await register(stub, 40)  # about 2.3 MB: 19 parts per watcher, 460 MB sent in all
            lease = (await stub.Register(pb.RegisterRequest(instance=pb.Instance(
                service="probe", instance_id="p0", address="127.0.0.1:9999"),
                ttl_seconds=LEASE), timeout=5)).lease_id
            before = peak_rss_mb(daemon.proc.pid)
            latencies: list[float] = []

            async def probe() -> None:
                """Register (a new instance each time) and KeepAlive, one after the other."""
                n = 0
                while not stop.is_set():
                    n += 1
                    start = time.monotonic()
                    await stub.Register(pb.RegisterRequest(instance=pb.Instance(
                        service="probe", instance_id=f"p{n}",
                        address=f"127.0.0.1:{10000 + n}"), ttl_seconds=LEASE), timeout=5)
                    await stub.KeepAlive(pb.KeepAliveRequest(lease_id=lease), timeout=5)
                    latencies.append(time.monotonic() - start)
                    await asyncio.sleep(0.01)

            prober = asyncio.get_running_loop().create_task(probe())
            watchers = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.watchers", address, "200",
                stdout=subprocess.PIPE)
            try:
                out, _ = await asyncio.wait_for(watchers.communicate(), 45)
            finally:
                if watchers.returncode is None:
                    watchers.kill()
                    await watchers.wait()
            stop.set()
            await prober
        counts = json.loads(out)["counts"]
        # Every watcher got a whole snapshot: the 40 large instances and the probe's so far.
        assert len(counts) == 200 and all(count >= 41 for count in counts), counts
        assert latencies, "no Register/KeepAlive finished while the watchers were served"
        assert max(latencies) < 1.0, sorted(latencies)[-5:]
        grown = peak_rss_mb(daemon.proc.pid) - before
        # Serializing for each watcher would be 200 x 2.3 MB of bytes, and more in objects.
        assert grown < 150, f"the registry's peak memory grew by {grown:.0f} MB"
        print(f"{len(latencies)} Register+KeepAlive, slowest {max(latencies) * 1000:.0f} ms; "
              f"peak memory {before:.0f} MB -> +{grown:.0f} MB")
    finally:
        stop.set()
        if prober is not None:
            prober.cancel()
            await asyncio.gather(prober, return_exceptions=True)
        await procs.stop_all([daemon], timeout=10)


def rss_mb(pid: int) -> float:
    """The process's resident memory now (VmRSS), in MB."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_watchers_that_stall_in_their_snapshot_cost_one_part_each_not_the_state() -> None:
    """200 watchers read the first part of a 9 MB snapshot and stop reading. Each holds what
    grpc has not sent yet of its current part (at most PART_BYTES), so the registry's memory
    does not grow with the state: a snapshot in one message, or serialized per watcher, would
    hold 200 x 9 MB."""
    daemon = await procs.start("registry-stalled", "registry", "--listen", "127.0.0.1:0",
                               "--warmup", "0")
    address = daemon.addresses["registry"]
    watchers: asyncio.subprocess.Process | None = None
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            await register(stub, 160)  # about 9 MB
            before = rss_mb(daemon.proc.pid)
            watchers = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.watchers", address, "200", "--stall",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert watchers.stdout is not None
            line = await asyncio.wait_for(watchers.stdout.readline(), 30)
            assert json.loads(line) == {"stalled": 200}
            await asyncio.sleep(0.5)  # let the registry send what flow control allows
            start = time.monotonic()
            await stub.Register(pb.RegisterRequest(instance=pb.Instance(
                service="probe", instance_id="p1", address="127.0.0.1:9999"),
                ttl_seconds=LEASE), timeout=5)
            assert time.monotonic() - start < 1.0
            grown = rss_mb(daemon.proc.pid) - before
            print(f"200 stalled watchers of a 9 MB snapshot: +{grown:.0f} MB")
            assert grown < 200 * PART_BYTES * 2 / 2**20 + 30, f"grew by {grown:.0f} MB"
    finally:
        if watchers is not None:
            assert watchers.stdin is not None
            watchers.stdin.close()
            try:
                await asyncio.wait_for(watchers.wait(), 10)
            except TimeoutError:
                watchers.kill()
                await watchers.wait()
        await procs.stop_all([daemon], timeout=10)


@pytest.mark.asyncio
@pytest.mark.timeout(15)
async def test_watchers_beyond_max_watchers_are_refused() -> None:
    server = RegistryServer("127.0.0.1:0", limits=RegistryLimits(max_watchers=3))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            calls = [stub.Watch(pb.WatchRequest()) for _ in range(3)]
            for call in calls:
                assert (await asyncio.wait_for(call.read(), 5)).type == pb.WatchEvent.SNAPSHOT
            extra = stub.Watch(pb.WatchRequest())
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(extra.read(), 5)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.value.details() == (
                "the registry serves 3 Watch streams, its limit (grpcmesh registry "
                "--max-watchers 3); try again later or another registry")
            calls[0].cancel()  # a watcher leaves: there is room again

            async def watch_again() -> tuple[grpc.aio.UnaryStreamCall, pb.WatchEvent]:
                while True:  # the cancelled stream may take a moment to end on the server
                    again = stub.Watch(pb.WatchRequest())
                    try:
                        return again, await again.read()
                    except grpc.aio.AioRpcError as refused:
                        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        await asyncio.sleep(0.05)
            again, first = await asyncio.wait_for(watch_again(), 5)
            assert first.type == pb.WatchEvent.SNAPSHOT
            for call in [*calls, again]:
                call.cancel()
    finally:
        await server.stop(0)
