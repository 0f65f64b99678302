"""KeepAlives: renewals share one LeaseKeepAlive stream; each answer goes to the oldest renewal
of its lease still waiting; a broken stream fails those waiting, and the next one reopens."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from grpcmesh.registry.etcd_leases import KeepAlives


@dataclass
class Reply:
    ID: int
    TTL: int


class FakeEtcd:
    """Answers each request with the TTL it holds for the lease; `hold` stops answering."""

    def __init__(self) -> None:
        self.ttl: dict[int, int] = {}
        self.streams = 0
        self.hold = False
        self.break_next = False

    def open(self, requests: AsyncIterator[Any]) -> Any:
        self.streams += 1
        etcd = self

        class Call:
            def __init__(self) -> None:
                self.cancelled = False

            def cancel(self) -> None:
                self.cancelled = True

            async def __aiter__(self) -> AsyncIterator[Reply]:  # type: ignore[misc]
                async for lease_id in requests:
                    while etcd.hold:
                        await asyncio.sleep(0.01)
                    if etcd.break_next:
                        etcd.break_next = False
                        return  # the stream ends, as when a member goes away
                    yield Reply(lease_id, etcd.ttl.get(lease_id, 0))
        return Call()


@pytest.mark.asyncio
@pytest.mark.timeout(5)
async def test_renewals_share_one_stream_and_get_their_own_answers() -> None:
    etcd = FakeEtcd()
    etcd.ttl = {1: 10, 2: 20, 3: 0}
    leases = KeepAlives(etcd.open, lambda lease_id: lease_id)
    got = await asyncio.gather(*(leases.renew(i, 1.0) for i in (1, 2, 3, 1, 2)))
    assert got == [10, 20, 0, 10, 20] and etcd.streams == 1
    await leases.close()


@pytest.mark.asyncio
@pytest.mark.timeout(5)
async def test_a_broken_stream_fails_the_waiting_and_the_next_renewal_reopens() -> None:
    etcd = FakeEtcd()
    etcd.ttl = {1: 10}
    leases = KeepAlives(etcd.open, lambda lease_id: lease_id)
    assert await leases.renew(1, 1.0) == 10
    etcd.break_next = True
    with pytest.raises(ConnectionError):
        await leases.renew(1, 1.0)
    assert await leases.renew(1, 1.0) == 10 and etcd.streams == 2
    await leases.close()


@pytest.mark.asyncio
@pytest.mark.timeout(5)
async def test_a_renewal_that_gives_up_leaves_its_answer_to_the_next() -> None:
    etcd = FakeEtcd()
    etcd.ttl = {1: 10}
    leases = KeepAlives(etcd.open, lambda lease_id: lease_id)
    etcd.hold = True
    with pytest.raises(TimeoutError):
        await leases.renew(1, 0.05)
    assert leases._waiting == {}  # nothing kept for a renewal that left
    etcd.hold = False
    assert await leases.renew(1, 1.0) == 10  # (the late answer to the first is dropped)
    await leases.close()
