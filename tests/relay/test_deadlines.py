"""Deadlines: one timer for every call's deadline, on a fake schedule and clock."""
from __future__ import annotations

from collections.abc import Callable

from grpcmesh.relay.deadlines import TICK, Deadlines


class FakeCall:
    def __init__(self, name: str, expired: list[str]) -> None:
        self.name = name
        self.tick: int | None = None
        self.expired = expired

    def expire(self) -> None:
        self.expired.append(self.name)


class Timers:
    """What the relay's call_later would do, by hand: the armed timer and its delay."""

    def __init__(self) -> None:
        self.armed: list[tuple[float, Callable[[], None], list[bool]]] = []

    def schedule(self, delay: float, fn: Callable[[], None]) -> Handle:
        cancelled = [False]
        self.armed.append((delay, fn, cancelled))
        return Handle(cancelled)

    def live(self) -> list[tuple[float, Callable[[], None]]]:
        return [(d, fn) for d, fn, cancelled in self.armed if not cancelled[0]]

    def fire(self) -> None:
        """The one live timer goes off."""
        [(_delay, fn, done)] = [t for t in self.armed if not t[2][0]]
        done[0] = True
        fn()


class Handle:
    def __init__(self, cancelled: list[bool]) -> None:
        self.cancelled = cancelled

    def cancel(self) -> None:
        self.cancelled[0] = True


def test_one_timer_serves_every_deadline_and_ended_calls_leave() -> None:
    timers, expired = Timers(), []
    deadlines = Deadlines(timers.schedule, lambda: 0.0)
    a, b, c = (FakeCall(n, expired) for n in "abc")
    deadlines.add(a, 1.0)
    deadlines.add(b, 0.996)  # the same 10 ms tick
    deadlines.add(c, 2.0)
    assert [round(d, 3) for d, _ in timers.live()] == [1.0]  # one timer, for the earliest
    deadlines.remove(b)  # b ended in time
    assert b.tick is None and len(deadlines) == 2
    timers.fire()
    assert expired == ["a"]
    assert [round(d, 3) for d, _ in timers.live()] == [2.0]  # armed for the next bucket
    timers.fire()
    assert expired == ["a", "c"] and len(deadlines) == 0 and timers.live() == []


def test_buckets_emptied_by_calls_that_ended_cost_no_wakeup() -> None:
    timers, expired = Timers(), []
    deadlines = Deadlines(timers.schedule, lambda: 0.0)
    first, ended, last = (FakeCall(n, expired) for n in ("first", "ended", "last"))
    deadlines.add(first, 1.0)
    deadlines.add(ended, 1.5)
    deadlines.add(last, 3.0)
    deadlines.remove(ended)
    timers.fire()
    assert expired == ["first"]
    assert [round(d, 3) for d, _ in timers.live()] == [3.0]  # not 1.5


def test_an_earlier_deadline_rearms_the_timer() -> None:
    timers, expired = Timers(), []
    deadlines = Deadlines(timers.schedule, lambda: 0.0)
    deadlines.add(FakeCall("late", expired), 5.0)
    deadlines.add(FakeCall("soon", expired), 0.5)
    assert [round(d, 3) for d, _ in timers.live()] == [0.5]
    timers.fire()
    assert expired == ["soon"]
    assert [round(d, 2) for d, _ in timers.live()] == [5.0]
    assert TICK == 0.01


def test_a_bucket_emptied_by_a_call_is_reused_by_the_next_of_its_tick() -> None:
    timers, expired = Timers(), []
    deadlines = Deadlines(timers.schedule, lambda: 0.0)
    for n in range(100):  # sequential calls, each ending before the next: one bucket
        call = FakeCall(str(n), expired)
        deadlines.add(call, 60.0)
        deadlines.remove(call)
    assert deadlines.buckets() == 1 and len(deadlines) == 0 and len(timers.live()) == 1


def test_memory_follows_the_calls_in_flight_not_the_deadlines_clients_chose() -> None:
    timers, expired = Timers(), []
    deadlines = Deadlines(timers.schedule, lambda: 0.0)
    held = FakeCall("held", expired)
    deadlines.add(held, 1.0)
    for n in range(50_000):  # each a different far deadline, each call ended at once
        call = FakeCall(str(n), expired)
        deadlines.add(call, 1000.0 + n * TICK)
        deadlines.remove(call)
    assert len(deadlines) == 1
    assert deadlines.buckets() <= 2 * 1 + 1024 + 1
    timers.fire()
    assert expired == ["held"] and len(deadlines) == 0
