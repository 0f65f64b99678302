"""EtcdLeadership with a scripted store: a leader that cannot renew its lease must stop leading
before the lease can have expired in etcd, when another replica may take the job over."""
from __future__ import annotations

import asyncio
import time

import pytest

from grpcmesh.registry.etcd_store import EtcdLeadership
from grpcmesh.registry.model import Lease


class Hanging:
    """A store whose keep-alives get no answer: etcd's leader is gone, or a partition, and each
    call waits out its timeouts and retries (EtcdStore._call: up to about 16 s)."""

    def __init__(self) -> None:
        self.calls = 0

    async def keep_alive(self, lease_id: int) -> Lease:
        self.calls += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_a_leader_whose_keep_alive_hangs_stops_leading_within_the_ttl() -> None:
    """_keep checked the lease's age only after a keep-alive returned: one that took longer
    than the TTL left this replica leading while etcd had expired the lease and another replica
    ran the same job (two health checkers writing at once)."""
    store = Hanging()
    leadership = EtcdLeadership(store, b"/t/leader/checker", ttl=1)  # type: ignore[arg-type]
    leadership._lease_id = 7
    started = time.monotonic()
    keeper = asyncio.create_task(leadership._keep())
    try:
        await asyncio.wait_for(leadership.lost(), 3)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    assert store.calls >= 1 and time.monotonic() - started <= 1.2
