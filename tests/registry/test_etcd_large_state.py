"""A registry replica that starts on an etcd prefix holding more than gRPC's default 4 MiB
receive limit: its listing (one Range of every instance) used to fail with RESOURCE_EXHAUSTED,
over and over, and the replica never started (found by scripts/bench_registry.py's sizing,
docs/scaling.md)."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from grpcmesh.registry.etcd_store import EtcdStore, parse_etcd_url
from grpcmesh.registry.model import Health, Instance, Method
from tests.etcd import ETCD, MISSING, EtcdCluster

GRPC_DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    if ETCD is None:
        pytest.skip(MISSING)
    cluster = EtcdCluster(tmp_path / "etcd").start()
    try:
        yield cluster
    finally:
        cluster.stop()


def big(i: int) -> Instance:
    """About 58 KB: 900 methods of 60 characters (under the 64 KiB registration limit)."""
    prefix = "/shop.v1.Orders/M"
    return Instance("big", f"b{i:03d}", f"10.0.0.{i}:8080", ("shop.v1.Orders",),
                    health=Health.SERVING,
                    methods=tuple(Method(f"{prefix}{m:0{60 - len(prefix)}d}")
                                  for m in range(900)))


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_replica_lists_a_state_larger_than_4_mib(etcd: EtcdCluster) -> None:
    target = parse_etcd_url(etcd.url("/large"))
    writer, reader = EtcdStore(target), EtcdStore(target)
    await writer.open()
    try:
        await asyncio.gather(*(writer.register(big(i), 3600) for i in range(80)))
    finally:
        await writer.close()
    assert sum(len(big(i).to_proto().SerializeToString()) for i in range(80)) \
        > GRPC_DEFAULT_MAX_MESSAGE
    await reader.open()
    try:
        listing = await asyncio.wait_for(reader.listing(), 20)
    finally:
        await reader.close()
    assert sorted(i.instance_id for i in listing.instances) == [f"b{i:03d}" for i in range(80)]
    assert all(len(i.methods) == 900 for i in listing.instances)
