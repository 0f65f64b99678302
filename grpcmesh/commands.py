"""What each `grpcmesh` subcommand does; cli.py parses the flags and calls these."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh import names
from grpcmesh.admin import admin_get
from grpcmesh.balance.endpoint import LoadSettings
from grpcmesh.balance.picker import BalancerSettings
from grpcmesh.interceptors.chain import load as load_interceptor
from grpcmesh.registry.client import RegistryClient
from grpcmesh.registry.model import Instance, Method, RegistryError
from grpcmesh.relay.limits import RelayLimits
from grpcmesh.relay.settings import ForwardSettings
from grpcmesh.workers import Workers

if TYPE_CHECKING:
    from grpcmesh.registry.config_store import Prepared

log = logging.getLogger(__name__)
T = TypeVar("T")


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None,
                 details: str = "") -> None:
        super().__init__(message)
        self.code = code  # the registry's answer, when the registry refused a request
        self.details = details  # ... and its message


class UsageError(CliError):
    """Flags that parse but do not make sense together: exit status 2, like argparse."""


def announce(**addresses: str) -> None:
    print(json.dumps(addresses), flush=True)


async def run_until_signal(stop: Callable[[], Awaitable[None]],
                           *done: asyncio.Event) -> None:
    """Wait for SIGTERM/SIGINT (or any of done), then run stop()."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    waiters = [asyncio.ensure_future(signalled.wait())]
    waiters += [asyncio.ensure_future(event.wait()) for event in done]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    await stop()


def primary_gone() -> asyncio.Event:
    """Set when a secondary worker's primary is gone, however it ended (even SIGKILL): the
    primary holds the write end of the worker's stdin and never writes, so EOF means it
    exited. The worker then drains and stops, instead of living on as an orphan."""
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if not os.read(fd, 4096):
            loop.remove_reader(fd)
            log.warning("the primary sidecar process exited; this worker stops")
            gone.set()

    loop.add_reader(fd, readable)
    return gone


def settings_from(args: argparse.Namespace, cls: type[T]) -> T:
    """A settings dataclass from the flags named after its fields; its own check's
    ValueError (which names the flag) is a usage error."""
    try:
        return cls(**{f.name: getattr(args, f.name)
                      for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
    except ValueError as err:
        raise UsageError(str(err)) from None


async def cmd_registry(args: argparse.Namespace) -> int:
    from grpcmesh.reflection import MethodCatalog
    from grpcmesh.registry.limits import RegistryLimits
    from grpcmesh.registry.server import RegistryServer, open_store

    limits = settings_from(args, RegistryLimits)
    mesh_config = _startup_config(args.config) if args.config else None
    try:
        catalog = MethodCatalog.load(args.descriptor_set)
    except ValueError as err:
        raise CliError(str(err)) from None
    if args.descriptor_set:
        log.info("method kinds of %s from --descriptor-set", ", ".join(catalog.services()))
    try:
        store = open_store(args.store, warmup=args.warmup, limits=limits)
        server = RegistryServer(args.listen, catalog=catalog, config=mesh_config, store=store)
        address = await server.start()
    except (ValueError, RegistryError) as err:  # the stored config; storing --config's
        why = str(err)
        raise CliError(why if why.startswith("--store") else f"--store {args.store}: {why}"
                       ) from None
    _quiet_gc()
    announce(registry=address)
    await run_until_signal(server.stop)
    return 0


def _quiet_gc() -> None:
    """The registry fans each change out to every watcher, and Python's cyclic garbage
    collector, scanning every object the registry holds, used to stall that fan-out now and
    then: p99 change-to-all-1,000-watchers 120 ms with it, 67 ms without (scripts/
    bench_registry.py, docs/scaling.md). Objects from the start (modules, gRPC) are frozen out
    of every scan, and scans come after 50,000 allocations instead of 700 (a full one every 10
    million instead of 70,000). Garbage without
    cycles is freed at once either way; cyclic garbage waits for the next scan."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def _startup_config(path: str) -> Prepared:
    """--config FILE, checked as `config check` does: every error on stderr, then refuse."""
    from grpcmesh.config import check_file
    from grpcmesh.registry.config_store import prepared

    try:
        report = check_file(path)
    except OSError as err:
        raise CliError(f"--config {path}: cannot read it: {err.strerror or err}") from None
    for line in report.lines():
        print(line, file=sys.stderr)
    if report.config is None:
        raise CliError(f"--config {path} has {len(report.errors)} error"
                       f"{'s' if len(report.errors) > 1 else ''}: the registry does not start")
    try:
        return prepared(report)
    except RegistryError as err:  # its canonical form is too large
        raise CliError(err.message) from None


async def cmd_sidecar(args: argparse.Namespace) -> int:
    from grpcmesh.sidecar import Sidecar, SidecarSettings

    if args.max_message_bytes <= 0:
        raise UsageError(f"--max-message-bytes {args.max_message_bytes} must be positive")
    if not 1 <= args.ttl <= 3600:
        raise UsageError(f"--ttl {args.ttl} is out of range: expected 1-3600 seconds")
    if args.app is None and (args.inbound or args.proto_service):
        raise UsageError("--inbound and --proto-service need --app (the app to register)")
    if args.instance_id:
        _check(names.check_instance_id, args.instance_id, "--instance-id")
    if args.ewma_decay <= 0 or args.ewma_default_rtt_ms <= 0:
        raise UsageError("--ewma-decay and --ewma-default-rtt-ms must be positive")
    defaults = [kind for service, kind in args.balancer if not service]
    balancer = BalancerSettings(
        default=defaults[-1] if defaults else "peak_ewma",
        per_service=tuple((service, kind) for service, kind in args.balancer if service),
        load=LoadSettings(decay=args.ewma_decay, default_rtt=args.ewma_default_rtt_ms / 1000,
                          failure_penalty=args.failure_penalty))
    limits = settings_from(args, RelayLimits)
    try:
        interceptors = tuple(load_interceptor(spec) for spec in args.interceptor)
    except ValueError as err:
        raise UsageError(str(err)) from None
    sharing = args.workers > 1 or args.secondary
    sidecar = Sidecar(SidecarSettings(
        service=args.service, registry=tuple(args.registry), app=args.app,
        outbound=args.outbound, inbound=args.inbound,
        # A secondary's admin port is for its primary's /endpoints only.
        admin="127.0.0.1:0" if args.secondary else args.admin,
        reuse_port=sharing, secondary=args.secondary,
        proto_services=tuple(args.proto_service), instance_id=args.instance_id,
        labels=tuple(args.label), ttl_seconds=args.ttl, grace_seconds=args.grace_period,
        drain_delay=args.drain_delay,
        forward=ForwardSettings(max_message_bytes=args.max_message_bytes,
                                max_metadata_bytes=args.max_metadata_bytes),
        limits=limits,
        interceptors=interceptors,
        balancer=balancer,
        access_log=args.access_log,
        access_log_buffer=args.access_log_buffer,
        otlp=args.otlp, trace_sample_ratio=args.trace_sample_ratio,
        metrics=args.metrics))
    workers = Workers(sidecar.fail)
    try:
        await sidecar.start()
        if args.workers > 1 and not args.secondary:
            # The workers bind the ports the primary resolved (port 0 becomes a real port).
            extra = ["--outbound", sidecar.outbound_address, "--workers", "1"]
            if sidecar.inbound_address:
                extra += ["--inbound", sidecar.inbound_address]
            await workers.start(args.workers - 1, [*args.argv, *extra])
            sidecar.worker_admins = workers.admins
    except BaseException:
        workers.signal_stop()
        await sidecar.shutdown()  # a listener may already run: stop it before reporting
        await workers.wait(5.0)
        raise
    announce(outbound=sidecar.outbound_address, inbound=sidecar.inbound_address,
             admin=sidecar.admin.address)

    async def stop() -> None:
        await sidecar.shutdown(on_deregistered=workers.signal_stop)
        await workers.wait(args.drain_delay + args.grace_period + 5.0)
    events = [sidecar.stopped]
    if args.secondary:
        events.append(primary_gone())
    await run_until_signal(stop, *events)
    if sidecar.failure is not None:
        raise CliError(str(sidecar.failure))
    return 0


def _check(fn: Callable[[str, str], Any], value: str, flag: str) -> None:
    try:
        fn(value, flag)
    except ValueError as err:
        raise UsageError(str(err)) from None


async def _registry_call(args: argparse.Namespace, method: str, request: Any,
                         client: RegistryClient | None = None) -> Any:
    """One registry call, its failures as CliErrors; through client if given (a daemon's,
    kept open), else through a client made for it."""
    own = client is None
    client = client or RegistryClient(args.registry, timeout=5.0)
    try:
        return await client.call(method, request)
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise CliError(f"cannot reach the registry at {','.join(args.registry)} "
                           f"({err.code().name}: {err.details()})") from None
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:  # a registry implements every method
            raise CliError(f"{','.join(args.registry)} is not a grpcmesh registry: it does not "
                           f"serve grpcmesh.registry.v1.Registry/{method} "
                           f"({err.details()})") from None
        raise CliError(f"{err.code().name}: {err.details()}", err.code(),
                       err.details() or "") from None
    finally:
        if own:
            await client.close()


async def cmd_register(args: argparse.Namespace) -> int:
    from grpcmesh.reflection import methods_summary

    instance_id = args.instance_id or args.address
    _check(names.check_instance_id, instance_id, "--instance-id")
    protos, methods = await _describe_app(args.address, list(args.proto_service))
    instance = Instance(args.service, instance_id, args.address, tuple(protos),
                        tuple(args.label), owner=args.owner, methods=methods)
    await _registry_call(args, "Register", pb.RegisterRequest(instance=instance.to_proto(),
                                                              ttl_seconds=0))
    print(f"registered {args.service}/{instance_id} at {args.address} serving "
          f"{', '.join(protos)} ({methods_summary(methods)}); the registry checks its health")
    return 0


async def _describe_app(address: str, given: list[str]) -> tuple[list[str], tuple[Method, ...]]:
    """The app's proto services (given, or from its reflection) and their methods (call kinds
    and idempotency levels).

    The sidecar's reflection code, so that sidecars forward a registry-checked instance's
    methods as they do a sidecar's app's (which are safe to retry). With --proto-service the
    methods are a bonus: an app without reflection is registered without them."""
    from grpcmesh import reflection

    async with grpc.aio.insecure_channel(address) as channel:
        try:
            protos = given or reflection.application_services(
                await reflection.list_services(channel, timeout=5.0))
            return protos, await reflection.describe_methods(channel, protos, timeout=5.0)
        except (grpc.aio.AioRpcError, RuntimeError) as err:
            if given:
                return given, ()
            why = (f"{err.code().name}: {err.details()}"
                   if isinstance(err, grpc.aio.AioRpcError) else str(err))
            raise CliError(f"cannot ask {address} which services it serves ({why}); "
                           "pass --proto-service") from None


async def cmd_deregister(args: argparse.Namespace) -> int:
    instance_id = args.instance_id or args.address
    if not instance_id:
        raise UsageError("give --instance-id or --address")
    # The registry refuses a deregistration without the registration's owner, which is the
    # address unless `register --owner` set another.
    owner = args.owner or args.address
    if not owner:
        raise UsageError("give --owner (the owner the instance was registered with) or "
                         "--address (its owner unless one was given)")
    await _registry_call(args, "Deregister", pb.DeregisterRequest(
        service=args.service, instance_id=instance_id, owner=owner))
    print(f"deregistered {args.service}/{instance_id}")
    return 0


async def cmd_services(args: argparse.Namespace) -> int:
    from grpcmesh.output import print_services

    resp = await _registry_call(args, "ListServices", pb.ListServicesRequest())
    print_services(resp, args.json)
    return 0


async def cmd_resolve(args: argparse.Namespace) -> int:
    from grpcmesh.output import print_instances

    name = args.name
    is_service = _valid(names.check_service, name)
    if not is_service and not _valid(names.check_proto_service, name):
        raise UsageError(f"{name!r} is neither a mesh service name (e.g. orders) nor a proto "
                       "service name (e.g. shop.v1.Orders)")
    try:
        request = pb.ResolveRequest(service=name) if is_service else pb.ResolveRequest(
            proto_service=name)
        resp = await _registry_call(args, "Resolve", request)
    except CliError as err:
        # 'echo' is both a valid mesh service and proto service name: try the other reading,
        # but report the first answer if that finds nothing either.
        if err.code != grpc.StatusCode.NOT_FOUND or not (
                is_service and _valid(names.check_proto_service, name)):
            raise
        try:
            resp = await _registry_call(args, "Resolve", pb.ResolveRequest(proto_service=name))
        except CliError as second:
            if second.code != grpc.StatusCode.NOT_FOUND:
                raise
            raise err from None
    print_instances(resp, args.json)
    return 0


def _valid(fn: Callable[[str], Any], value: str) -> bool:
    try:
        fn(value)
    except ValueError:
        return False
    return True


async def cmd_endpoints(args: argparse.Namespace) -> int:
    from grpcmesh.output import print_endpoints

    try:
        body = await admin_get(args.admin, "/endpoints")
    except (OSError, ValueError) as err:
        raise CliError(f"cannot read the sidecar admin port at {args.admin}: {err}") from None
    if args.service and args.service not in body["services"]:
        known = ", ".join(sorted(body["services"])) or "none"
        raise CliError(f"the sidecar knows no service {args.service!r} (known: {known})")
    print_endpoints(body, args.service, args.json)
    return 0


async def sidecar_admins(args: argparse.Namespace, client: RegistryClient | None = None
                         ) -> list[str]:
    """--admin, or else the admin address every registered sidecar publishes (its
    registration's admin_address: instances of every service, client-only sidecars too)."""
    if args.admin:
        return list(args.admin)
    services = await _registry_call(args, "ListServices", pb.ListServicesRequest(), client)
    admins: list[str] = []
    for summary in services.services:
        found = await _registry_call(args, "Resolve", pb.ResolveRequest(service=summary.service),
                                     client)
        admins += [i.admin_address for i in found.instances
                   if i.admin_address and i.admin_address not in admins]
    if not admins:
        raise CliError(f"no sidecar registered at {','.join(args.registry)} publishes an admin "
                       "address: give --admin HOST:PORT")
    return admins


async def read_admins(admins: list[str], path: str, timeout: float = 5.0
                      ) -> list[Any | OSError | ValueError]:
    """path from every admin address at once: each one's JSON answer, or why not (OSError:
    unreachable or no answer within timeout; ValueError: not a 200 with JSON). `grpcmesh stat`
    and the dashboard read the sidecars' /stat through this."""
    async def ask(admin: str) -> Any:
        try:
            return await admin_get(admin, path, timeout)
        except (OSError, ValueError) as err:
            return err
    return list(await asyncio.gather(*(ask(admin) for admin in admins)))


async def cmd_stat(args: argparse.Namespace) -> int:
    from grpcmesh.output import print_stat, stat_rows

    admins = await sidecar_admins(args)
    bodies: list[dict[str, Any]] = []
    for admin, body in zip(admins, await read_admins(admins, f"/stat?window={args.window}"),
                           strict=True):
        if isinstance(body, (OSError, ValueError)):
            raise CliError(f"cannot read the sidecar admin port at {admin}: {body}")
        bodies.append(body)
    print_stat(stat_rows(bodies, args.service), args.service, args.json)
    return 0


async def cmd_tap(args: argparse.Namespace) -> int:
    import json
    import urllib.parse

    import aiohttp

    from grpcmesh.output import tap_line

    query = urllib.parse.urlencode({k: v for k, v in (("service", args.service),
                                                      ("method", args.method)) if v})
    url = f"http://{args.admin}/tap" + (f"?{query}" if query else "")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=5)) as session, session.get(url) as response:
            if response.status != 200:
                raise CliError(f"the sidecar at {args.admin} refused the tap: "
                               f"{(await response.text()).strip()}")
            print(tap_line(None), flush=True)
            async for raw in response.content:
                if not raw.strip():
                    continue
                entry = json.loads(raw)
                print(raw.decode().rstrip() if args.json else tap_line(entry), flush=True)
    except (aiohttp.ClientError, OSError) as err:
        raise CliError(f"cannot tap the sidecar admin port at {args.admin}: {err}") from None
    return 0


async def cmd_top(args: argparse.Namespace) -> int:
    from grpcmesh.top import ScrapeError, run_top

    try:
        return await run_top(await sidecar_admins(args), args.service,
                             "inbound" if args.inbound else "outbound")
    except ScrapeError as err:
        raise CliError(str(err)) from None


async def cmd_dashboard(args: argparse.Namespace) -> int:
    from grpcmesh.dashboard.server import Dashboard, DashboardSettings

    dashboard = Dashboard(settings_from(args, DashboardSettings))
    try:
        address = await dashboard.start()
    except BaseException:
        await dashboard.stop()  # (its registry channel)
        raise
    announce(dashboard=f"http://{address}/")
    await run_until_signal(dashboard.stop)
    return 0


async def cmd_config(args: argparse.Namespace) -> int:
    from grpcmesh.config_cli import cmd_config as run

    return await run(args)


async def cmd_example_server(args: argparse.Namespace) -> int:
    import random

    from grpcmesh.example.behaviour import CountsFile, EchoBehaviour
    from grpcmesh.example.server import EchoServer

    if args.fail_percent is not None and not args.fail_code:
        raise UsageError("--fail-percent needs --fail-code (the status to fail with)")
    if (args.slow_percent is None) != (args.slow_ms is None):
        raise UsageError("--slow-percent and --slow-ms go together: give both or neither")
    behaviour = EchoBehaviour(
        args.name, args.delay_ms, args.fail_code, args.recovered_delay_ms,
        fail_percent=100.0 if args.fail_percent is None else args.fail_percent,
        slow_percent=args.slow_percent or 0.0, slow_ms=args.slow_ms or 0.0,
        rng=random.Random(args.seed))
    server = EchoServer(args.listen, behaviour)
    counts = None
    if args.counts_file:
        counts = CountsFile(args.counts_file, args.name, server.service.counts)
        try:
            counts.write()  # it exists before the ready line
        except OSError as err:
            raise CliError(f"cannot write --counts-file {args.counts_file}: "
                           f"{err.strerror or err}") from None
    loop = asyncio.get_running_loop()  # (the handlers are in place before the ready line)
    loop.add_signal_handler(signal.SIGUSR1, behaviour.recover)
    if counts is not None:
        loop.add_signal_handler(signal.SIGUSR2, counts.write)
    announce(app=await server.start())
    try:
        await run_until_signal(server.stop)
    finally:
        if counts is not None:
            counts.write()  # the final counts, once no call is left
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from grpcmesh.demo import run_demo

    try:
        return await run_demo(args.duration, args.concurrency)
    except RuntimeError as err:  # a daemon did not start: its log tail is in the message
        raise CliError(f"the demo could not start: {err}") from None


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "registry": cmd_registry, "sidecar": cmd_sidecar, "register": cmd_register,
    "deregister": cmd_deregister, "services": cmd_services, "resolve": cmd_resolve,
    "endpoints": cmd_endpoints, "stat": cmd_stat, "tap": cmd_tap, "top": cmd_top,
    "dashboard": cmd_dashboard,
    "config": cmd_config, "example-server": cmd_example_server,
    "demo": cmd_demo,
}
