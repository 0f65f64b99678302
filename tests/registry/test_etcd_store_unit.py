"""EtcdStore's writes with etcd scripted: what each does when a call fails half way."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from grpcmesh.registry.backend import StoreUnavailable
from grpcmesh.registry.etcd_store import EtcdStore, parse_etcd_url
from grpcmesh.registry.model import Instance


def test_a_lease_granted_for_a_registration_that_failed_is_revoked() -> None:
    """register() grants the lease before its compare-and-swap: when the swap failed (etcd
    unavailable through its retries) the lease was left to run out its TTL (up to an hour),
    one per failed attempt of every sidecar while etcd was away."""
    store = EtcdStore(parse_etcd_url("etcd://127.0.0.1:1/t"))
    revoked: list[int] = []

    async def grant(request: Any, timeout: float) -> Any:
        return SimpleNamespace(ID=42, TTL=request.TTL)

    async def call(method: Any, request: Any) -> Any:
        return await method(request, timeout=1)

    async def read(key: Any) -> tuple[None, int, int]:
        return None, 0, 7

    async def count() -> int:
        return 0

    async def swap(key: Any, mod: int, ops: Any) -> int:
        raise StoreUnavailable("etcd at etcd://127.0.0.1:1/t: UNAVAILABLE: no leader")

    async def revoke(lease_id: int) -> None:
        revoked.append(lease_id)

    store._lease = SimpleNamespace(LeaseGrant=grant)
    store._call = call  # type: ignore[method-assign]
    store._read = read  # type: ignore[method-assign]
    store._count = count  # type: ignore[method-assign]
    store._swap = swap  # type: ignore[method-assign]
    store._revoke = revoke  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.register(Instance("orders", "o1", "10.0.0.1:80"), 30))
    assert revoked == [42]
