"""The Watch fan-out of RegistryService without a server: every watcher gets the same bytes."""
from __future__ import annotations

import random

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh.clock import FakeClock
from grpcmesh.registry.backend import Listing, LocalStore
from grpcmesh.registry.config_store import ConfigStore, prepare
from grpcmesh.registry.history import Change
from grpcmesh.registry.model import Event, EventType, Instance, PushedConfig
from grpcmesh.registry.service import RegistryService, _Watcher
from grpcmesh.registry.store import RegistryStore
from grpcmesh.registry.view import View


def served(store: RegistryStore, configs: ConfigStore | None = None) -> RegistryService:
    """A RegistryService whose view hears of store's changes at once (follow() without a
    loop: these tests look at what is queued for each watcher, not at sockets)."""
    configs = configs or ConfigStore()
    view = View("test")
    view.reset(Listing(store.revision, tuple(store.instances()), PushedConfig(0)))
    store.subscribe(lambda event, previous: view.apply(Change(event, previous)))
    configs.subscribe(lambda config: view.apply(Change(Event(
        EventType.CONFIG, store.bump(), config=config))))
    return RegistryService(LocalStore(store, configs, FakeClock()), view)


def orders(i: int) -> Instance:
    return Instance("orders", f"o{i}", f"10.0.0.{i}:8080", ("shop.v1.Orders",))


def test_a_snapshot_is_serialized_once_per_revision_and_shared() -> None:
    store = RegistryStore(FakeClock(), random.Random(1))
    service = served(store)
    for i in range(1, 4):
        store.register(orders(i), 0)
    parts = service.snapshot()
    assert service.snapshot() is parts
    assert service.snapshot("payments") is not parts  # another filter, its own parts
    store.register(orders(4), 0)
    again = service.snapshot()
    assert again is not parts
    assert [i.instance_id for i in pb.WatchEvent.FromString(again[0]).instances] == [
        "o1", "o2", "o3", "o4"]
    # Unchanged instances keep their bytes: the new revision joined them again.
    assert service._encode(store.get("orders", "o1")) is service._encode(  # type: ignore[arg-type]
        store.get("orders", "o1"))  # type: ignore[arg-type]


def test_each_change_is_serialized_once_for_every_watcher() -> None:
    store = RegistryStore(FakeClock(), random.Random(1))
    service = served(store)
    watchers = [_Watcher("", ""), _Watcher("orders", ""), _Watcher("payments", "")]
    service._watchers.update(watchers)
    store.register(orders(1), 0)
    everyone, same_service, other = watchers
    assert len(everyone.pending) == len(same_service.pending) == 1
    assert everyone.pending[0] is same_service.pending[0]
    assert not other.pending
    event = pb.WatchEvent.FromString(everyone.pending[0])
    assert (event.type, event.instances[0].instance_id) == (pb.WatchEvent.UPSERT, "o1")


def test_a_config_is_serialized_once_per_version_for_the_watchers_that_asked() -> None:
    store = RegistryStore(FakeClock(), random.Random(1))
    configs = ConfigStore()
    service = served(store, configs)
    asked = [_Watcher("", "", include_config=True), _Watcher("orders", "", include_config=True)]
    old = _Watcher("", "")  # a watcher from before CONFIG existed: never sent one
    service._watchers.update([*asked, old])
    configs.apply(prepare("services: {orders: {timeout: 2s}}\n"), 1000.0)
    assert asked[0].pending[0] is asked[1].pending[0]
    assert not old.pending
    event = pb.WatchEvent.FromString(asked[0].pending[0])
    assert (event.type, event.revision, event.config.version) == (pb.WatchEvent.CONFIG, 0, 1)
    assert event.config.canonical_json == '{"services":{"orders":{"timeout":"2s"}}}'
    assert event.config.applied_at.ToSeconds() == 1000
    # A new watcher (or one starting over) gets the snapshot, then these same bytes.
    start = service._start(_Watcher("", "", include_config=True))
    assert start[:-1] == service.snapshot() and start[-1] is asked[0].pending[0]
    assert service._start(_Watcher("", "")) == service.snapshot()


def test_a_watch_that_broke_inside_a_revision_resumes_with_all_of_it() -> None:
    """Several changes share an etcd revision (the keys of one transaction), and each goes to a
    watcher as a message of its own. A stream that broke between two of them left the client at
    that revision (WatchPosition), and a resume after it skipped the rest of the revision for
    good. Now a resume after a revision that holds several changes sends them all again: an
    UPSERT or DELETE applied twice leaves the same state, one never applied does not."""
    store = RegistryStore(FakeClock(), random.Random(1))
    service = served(store)
    view = service.view
    view.reset(Listing(5, (orders(1), orders(2)), PushedConfig(0)))
    for n in (1, 2):
        view.apply(Change(Event(EventType.DELETE, 6, (Instance("orders", f"o{n}", ""),))))
    view.apply(Change(Event(EventType.UPSERT, 7, (orders(3),))))

    def resumed(after: int) -> list[tuple[str, str, int]]:
        parts = service._resume(_Watcher("", ""), after) or []
        events = [pb.WatchEvent.FromString(p) for p in parts]
        return [(pb.WatchEvent.Type.Name(e.type),
                 e.instances[0].instance_id if e.instances else "", e.revision)
                for e in events]

    # The client got the DELETE of o1 at 6, and the stream broke.
    assert resumed(6) == [("RESUMED", "", 6), ("DELETE", "o1", 6), ("DELETE", "o2", 6),
                          ("UPSERT", "o3", 7)]
    assert resumed(5) == [("RESUMED", "", 5), ("DELETE", "o1", 6), ("DELETE", "o2", 6),
                          ("UPSERT", "o3", 7)]
    assert resumed(7) == [("RESUMED", "", 7)]  # one change at 7: nothing to send again


class Aborted(Exception):
    pass


class Context:
    """The part of a grpc.aio.ServicerContext that Watch uses."""

    def __init__(self) -> None:
        self.code: object = None

    async def abort(self, code: object, details: str) -> None:
        self.code = code
        raise Aborted(details)


def test_watches_waiting_to_resume_count_towards_max_watchers() -> None:
    """A Watch that resumes ahead of this replica waits up to RESUME_CATCH_UP_SECONDS before it
    joins the watchers, and max_watchers was checked before that wait: any number of resumes
    at once (a client that asks for a revision far ahead) all passed the check, then all joined."""
    import asyncio

    import grpc

    from grpcmesh.registry import service as service_module
    from grpcmesh.registry.limits import RegistryLimits

    async def run() -> list[object]:
        store = RegistryStore(FakeClock(), random.Random(1))
        registry = served(store)
        registry.view.limits = RegistryLimits(max_watchers=2)
        request = pb.WatchRequest(store_id="test", after_revision=10**12)

        async def watch() -> object:
            context = Context()
            try:
                async for _ in registry.Watch(request, context):  # type: ignore[arg-type]
                    break
            except Aborted:
                pass
            return context.code

        return list(await asyncio.gather(*(watch() for _ in range(5))))

    saved = service_module.RESUME_CATCH_UP_SECONDS
    service_module.RESUME_CATCH_UP_SECONDS = 0.1
    try:
        codes = asyncio.run(run())
    finally:
        service_module.RESUME_CATCH_UP_SECONDS = saved
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 3, codes
