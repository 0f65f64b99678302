"""The tap hub (pure): observers only while someone watches, filters, bounded queues."""
from __future__ import annotations

import json

import grpc
import pytest

from grpcmesh.relay.record import CallRecord, Observer
from grpcmesh.telemetry.access_log import Stamp
from grpcmesh.telemetry.tap import MAX_WATCHERS, QUEUE, Tap


def call(method: str = "/p.S/Get", service: str = "echo") -> CallRecord:
    return CallRecord(method, "c", service, "a:1", grpc.StatusCode.OK, "app", "", 0.0, 0.002,
                      None, 1, 1, 1)


def test_relays_are_observed_only_while_someone_watches() -> None:
    observers: list[Observer] = []
    tap = Tap(Stamp(0.0))
    tap.relay(observers, "outbound")
    assert observers == []
    watcher = tap.watch()
    assert len(observers) == 1
    observers[0](call())
    [line] = watcher.take()
    assert json.loads(line)["direction"] == "outbound" and not watcher.wake.is_set()
    tap.leave(watcher)
    assert observers == []


def test_filters_pick_the_service_and_the_method() -> None:
    observers: list[Observer] = []
    tap = Tap(Stamp(0.0))
    tap.relay(observers, "inbound")
    get = tap.watch("echo", "Get")
    full = tap.watch(None, "/p.S/Put")
    for record in (call(), call("/p.S/Put"), call(service="other")):
        observers[0](record)
    assert [json.loads(x)["method"] for x in get.take()] == ["/p.S/Get"]
    assert [json.loads(x)["method"] for x in full.take()] == ["/p.S/Put"]


def test_a_slow_watcher_loses_the_oldest_lines_and_watchers_are_bounded() -> None:
    observers: list[Observer] = []
    tap = Tap(Stamp(0.0))
    tap.relay(observers, "outbound")
    watcher = tap.watch()
    for _ in range(QUEUE + 5):
        observers[0](call())
    assert len(watcher.take()) == QUEUE and watcher.dropped == 5
    for _ in range(MAX_WATCHERS - 1):
        tap.watch()
    with pytest.raises(ValueError, match="watchers are tapping"):
        tap.watch()
