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


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_release_does_not_hold_up_a_stop_while_etcd_does_not_answer() -> None:
    """release() revoked the lease through EtcdStore._call: with etcd not answering (a member
    cut off, not dead) that is 3 tries of 5 s, and a registry's stop() waited for all of them.
    The lease runs out on its own within the TTL, so release gives up after RELEASE_SECONDS."""
    from grpcmesh.registry import etcd_store

    class Silent(Hanging):
        _channel = object()

        async def _revoke(self, lease_id: int) -> None:
            await asyncio.sleep(3600)

    leadership = EtcdLeadership(Silent(), b"/t/leader/checker", ttl=5)  # type: ignore[arg-type]
    leadership._lease_id = 7
    started = time.monotonic()
    await asyncio.wait_for(leadership.release(), 5)
    assert time.monotonic() - started <= etcd_store.RELEASE_SECONDS + 0.5
