"""`grpcmesh top`: the busiest methods over the last second, from sidecars' /metrics (issue 12).

The computing part is pure: parse_metrics() reads one /metrics answer into per-method counts,
delta() subtracts two of them (a counter that went down means the sidecar restarted: its new
value is the delta, as Prometheus's rate() takes it), and top_rows() turns the summed deltas
into rows: calls/s, success rate and p50/p99 latency from the histogram's bucket deltas,
interpolated within a bucket as telemetry.window.quantile (and PromQL's histogram_quantile) do.
run_top() polls and draws them with rich.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from grpcmesh.admin import admin_fetch
from grpcmesh.telemetry.window import quantile as window_quantile

INTERVAL = 1.0  # seconds between scrapes
_CALLS = "grpcmesh_calls_total"
_BUCKET = "grpcmesh_call_duration_seconds_bucket"

Key = tuple[str, str, str]  # direction, service, method


@dataclass
class Counts:
    """One method's counters in one direction: calls, calls that ended OK, and the latency
    histogram's cumulative bucket counts by upper bound (le; +Inf is math.inf)."""

    calls: float = 0.0
    ok: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)


Scrape = dict[Key, Counts]


@dataclass(frozen=True)
class Row:
    direction: str
    service: str
    method: str
    calls: float  # in the interval
    rps: float
    success: float | None  # 0..1
    p50_ms: float | None
    p99_ms: float | None


def parse_metrics(text: str) -> Scrape:
    """The per-method counters of one /metrics answer (Prometheus text format). Raises
    ValueError if it is not that format."""
    out: Scrape = {}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, KeyError, IndexError) as err:  # (odd input: not only
        # ValueError)
        raise ValueError(f"its /metrics answer is not Prometheus text ({err})") from None
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if sample.name not in (_CALLS, _BUCKET):
                continue
            key = (labels.get("direction", ""), labels.get("service", ""),
                   labels.get("method", ""))
            counts = out.setdefault(key, Counts())
            if sample.name == _CALLS:
                counts.calls += sample.value
                if labels.get("code") == "OK":
                    counts.ok += sample.value
            else:
                le = float(labels.get("le", "+Inf"))
                counts.buckets[le] = counts.buckets.get(le, 0.0) + sample.value
    return out


def delta(before: Scrape, after: Scrape) -> Scrape:
    """What happened between two scrapes of one sidecar. A key whose calls went down was
    reset (the sidecar restarted): its whole new count is the delta."""
    out: Scrape = {}
    for key, now in after.items():
        then = before.get(key)
        if then is None or now.calls < then.calls:
            then = Counts()
        calls = now.calls - then.calls
        if calls <= 0:
            continue
        out[key] = Counts(calls, max(0.0, now.ok - then.ok),
                          {le: max(0.0, n - then.buckets.get(le, 0.0))
                           for le, n in now.buckets.items()})
    return out


def add(scrapes: Sequence[Scrape]) -> Scrape:
    """Several sidecars' deltas summed per key."""
    out: Scrape = {}
    for scrape in scrapes:
        for key, counts in scrape.items():
            total = out.setdefault(key, Counts())
            total.calls += counts.calls
            total.ok += counts.ok
            for le, n in counts.buckets.items():
                total.buckets[le] = total.buckets.get(le, 0.0) + n
    return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile (0..1), in seconds, of cumulative bucket counts by upper bound (as
    /metrics has them): made per-bucket, then telemetry.window.quantile. None without calls."""
    bounds = sorted(buckets)
    per_bucket = []
    previous = 0.0
    for le in bounds:
        per_bucket.append(max(0.0, buckets[le] - previous))
        previous = max(previous, buckets[le])
    return window_quantile(q, per_bucket, [b for b in bounds if not math.isinf(b)])


def top_rows(changes: Scrape, seconds: float, service: str | None = None,
             direction: str = "outbound") -> list[Row]:
    """The rows `grpcmesh top` shows from the (summed) deltas over `seconds`: one direction,
    optionally one service, busiest first (then by service and method)."""
    rows = []
    for (way, name, method), counts in changes.items():
        if way != direction or (service is not None and name != service) or counts.calls <= 0:
            continue

        def ms(q: float, counts: Counts = counts) -> float | None:
            value = quantile(q, counts.buckets)
            return None if value is None else value * 1000
        rows.append(Row(way, name, method, counts.calls, counts.calls / seconds,
                        min(1.0, counts.ok / counts.calls), ms(0.5), ms(0.99)))
    rows.sort(key=lambda r: (-r.rps, r.service, r.method))
    return rows


HEADER = ("SERVICE", "METHOD", "CALLS/S", "SUCCESS", "P50 MS", "P99 MS")


def cells(row: Row) -> list[str]:
    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"
    return [row.service, row.method, f"{row.rps:.1f}",
            "-" if row.success is None else f"{row.success * 100:.2f}%",
            num(row.p50_ms), num(row.p99_ms)]


# --- polling and drawing -------------------------------------------------------------------


class ScrapeError(Exception):
    """An admin address that did not answer /metrics: one line, naming it."""


async def scrape(address: str, timeout: float = 5.0) -> Scrape:
    try:
        return parse_metrics((await admin_fetch(address, "/metrics", timeout)).decode(
            "utf-8", "replace"))
    except (OSError, ValueError) as err:
        raise ScrapeError(f"cannot read /metrics at the sidecar admin port {address}: "
                          f"{err}") from None


async def scrape_all(addresses: Sequence[str], timeout: float = 5.0) -> list[Scrape]:
    """Every address's counters; the first failure raises ScrapeError."""
    results = await asyncio.gather(*(scrape(a, timeout) for a in addresses),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if not isinstance(r, BaseException)]


def _title(addresses: Sequence[str], direction: str, service: str | None) -> str:
    what = f"service {service}" if service else "all services"
    where = addresses[0] if len(addresses) == 1 else f"{len(addresses)} sidecars"
    return f"grpcmesh top: {direction} calls, {what}, {where}, last {INTERVAL:g} s"


async def run_top(addresses: Sequence[str], service: str | None, direction: str) -> int:
    """Raises ScrapeError if an address does not answer the first scrape."""
    before = await scrape_all(addresses)
    started = time.monotonic()
    if not sys.stdout.isatty():  # scripts: one frame after two scrapes
        await asyncio.sleep(INTERVAL)
        after = await scrape_all(addresses)
        rows = top_rows(add([delta(b, a) for b, a in zip(before, after, strict=True)]),
                        time.monotonic() - started, service, direction)
        from grpcmesh.output import table
        print(_title(addresses, direction, service))
        print(table(HEADER, [cells(r) for r in rows]) if rows else "no calls in the last second")
        return 0
    return await _live(addresses, service, direction, before, started)


@contextlib.contextmanager
def _keys(loop: asyncio.AbstractEventLoop, quit_: asyncio.Event) -> Iterator[None]:
    """Read the keyboard without blocking while the view runs: q quits. The terminal is in
    cbreak mode (keys come one by one, Ctrl-C still signals) and is restored afterwards."""
    if not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if not data or b"q" in data.lower() or b"\x03" in data:
            quit_.set()
    loop.add_reader(fd, readable)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _live(addresses: Sequence[str], service: str | None, direction: str,
                before: list[Scrape], started: float) -> int:
    from rich import box
    from rich.console import Console, Group
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    console = Console()
    title = _title(addresses, direction, service) + " (q quits)"

    def frame(rows: list[Row] | None, errors: list[str]) -> Any:
        parts: list[Any] = [Text(title, style="bold")]
        if rows is None:
            parts.append(Text("collecting..."))
        elif not rows:
            parts.append(Text("no calls in the last second"))
        else:
            table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
            for i, name in enumerate(HEADER):
                table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
            room = max(1, console.height - 4 - len(errors))  # title, header, rule, margin
            for row in rows[:room]:
                table.add_row(*(Text(c) for c in cells(row)))
            parts.append(table)
        parts.extend(Text(e, style="red") for e in errors)
        return Group(*parts)

    loop = asyncio.get_running_loop()
    quit_ = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, quit_.set)
    previous: list[Scrape | None] = list(before)
    last = started
    waiter = asyncio.ensure_future(quit_.wait())
    try:
        with _keys(loop, quit_), Live(frame(None, []), console=console, screen=True,
                                      auto_refresh=False, redirect_stderr=False) as live:
            next_tick = started + INTERVAL
            while not quit_.is_set():
                await asyncio.wait([waiter], timeout=max(0.0, next_tick - time.monotonic()))
                if quit_.is_set():
                    break
                next_tick = max(next_tick + INTERVAL, time.monotonic())
                polling = asyncio.ensure_future(asyncio.gather(
                    *(scrape(a, timeout=INTERVAL * 2) for a in addresses),
                    return_exceptions=True))
                either: list[asyncio.Future[Any]] = [waiter, polling]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if quit_.is_set():
                    polling.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await polling
                    break
                results = polling.result()
                now = time.monotonic()
                changes, errors = [], []
                current: list[Scrape | None] = []
                for old, result in zip(previous, results, strict=True):
                    if isinstance(result, BaseException):
                        errors.append(str(result))
                        current.append(None)
                        continue
                    current.append(result)
                    if old is not None:
                        changes.append(delta(old, result))
                rows = top_rows(add(changes), now - last, service, direction)
                previous, last = current, now
                live.update(frame(rows, errors), refresh=True)
    finally:
        waiter.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
