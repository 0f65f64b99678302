"""The `grpcmesh` command: run a registry or a sidecar, query the registry, run the demo.

Daemons (registry, sidecar, example-server) log to stderr and print one JSON line with their
bound addresses to stdout once they are ready, so scripts can start them on port 0.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, NoReturn

import grpc

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh import names
from grpcmesh.balance.endpoint import LoadSettings
from grpcmesh.balance.picker import PICKER_KINDS, BalancerSettings
from grpcmesh.proxy.forward import DEFAULT_MAX_MESSAGE_BYTES, ForwardSettings
from grpcmesh.registry.client import RegistryClient, parse_registry_addresses
from grpcmesh.registry.model import Instance

log = logging.getLogger("grpcmesh")
DEFAULT_REGISTRY = "127.0.0.1:7700"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code  # the registry's answer, when the registry refused a request


class UsageError(CliError):
    """Flags that parse but do not make sense together: exit status 2, like argparse."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _typed(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a names.* check (its ValueError message becomes the error)."""
    def convert(text: str) -> Any:
        try:
            return check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return convert


ADDRESS = _typed(names.check_address)
LISTEN = _typed(names.check_listen_address)
SERVICE = _typed(names.check_service)
PROTO = _typed(names.check_proto_service)
LABEL = _typed(names.parse_label)
REGISTRY = _typed(parse_registry_addresses)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _balancer(text: str) -> tuple[str, str]:
    """[SERVICE=]KIND; an empty service means the default for every service."""
    service, sep, kind = text.rpartition("=")
    if kind not in PICKER_KINDS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: balancer {kind!r} is unknown: expected one of {', '.join(PICKER_KINDS)}")
    if sep:
        try:
            names.check_service(service, "--balancer service")
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return service, kind


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _status_code(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 16:
        raise argparse.ArgumentTypeError(f"{text!r} is not a gRPC status code (0-16)")
    return int(text)


def _store_spec(text: str) -> str:
    if text != "memory" and not (text.startswith("sqlite:") and len(text) > len("sqlite:")):
        raise argparse.ArgumentTypeError(f"{text!r} is not 'memory' or 'sqlite:PATH'")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grpcmesh", description="A gRPC-native service mesh.")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("registry", help="run the registry service",
                       description="Run the registry: register/keep-alive/watch API, "
                                   "grpc.health.v1 and reflection on one port.")
    p.add_argument("--listen", type=LISTEN, default=DEFAULT_REGISTRY, metavar="HOST:PORT",
                   help=f"address to serve on (default {DEFAULT_REGISTRY})")
    p.add_argument("--store", type=_store_spec, default="memory", metavar="memory|sqlite:PATH",
                   help="where registry-checked instances are kept (default memory); leased "
                        "instances are re-registered by their sidecars after a restart")
    p.add_argument("--warmup", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="after a start, how long watchers keep instances this registry has "
                        "not heard from yet (sidecars re-register within their TTL; default 10)")

    p = sub.add_parser("sidecar", help="run a sidecar proxy beside an app",
                       description="Run a sidecar: outbound proxy for the app's calls, "
                                   "registration and health of the app, inbound proxy.")
    p.add_argument("--service", type=SERVICE, required=True, help="the app's mesh service name")
    p.add_argument("--app", type=ADDRESS, metavar="HOST:PORT",
                   help="the local app's address; without it the sidecar is outbound only")
    p.add_argument("--registry", type=REGISTRY, required=True, metavar="HOST:PORT[,...]",
                   help="registry addresses, tried in order")
    p.add_argument("--outbound", type=LISTEN, default="127.0.0.1:15001", metavar="HOST:PORT",
                   help="where the app sends its calls (default 127.0.0.1:15001)")
    p.add_argument("--inbound", type=LISTEN, metavar="HOST:PORT",
                   help="accept the mesh's calls for the app here and register this address "
                        "(default: register the app's own address)")
    p.add_argument("--admin", type=LISTEN, default="127.0.0.1:15000", metavar="HOST:PORT",
                   help="HTTP admin port: /live, /ready, /endpoints (default 127.0.0.1:15000)")
    p.add_argument("--proto-service", type=PROTO, action="append", default=[], metavar="NAME",
                   help="proto service the app serves (repeatable; default: ask its reflection)")
    p.add_argument("--instance-id", help="instance id (default: the registered address)")
    p.add_argument("--label", type=LABEL, action="append", default=[], metavar="KEY=VALUE",
                   help="instance label (repeatable)")
    p.add_argument("--ttl", type=int, default=10, metavar="SECONDS",
                   help="lease TTL; the lease is kept alive every TTL/3 (default 10)")
    p.add_argument("--grace-period", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="on SIGTERM, how long calls in flight may take to finish (default 10)")
    p.add_argument("--drain-delay", type=_positive_float, default=1.0, metavar="SECONDS",
                   help="on SIGTERM, wait this long after deregistering before refusing new "
                        "calls, so peers stop sending first (default 1)")
    p.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                   help="largest message forwarded either way (default 4 MiB)")
    p.add_argument("--max-metadata-bytes", type=_positive_int, default=16 * 1024,
                   help="largest request metadata accepted, counted as HPACK does "
                        "(default 16384)")
    p.add_argument("--balancer", type=_balancer, action="append", default=[],
                   metavar="[SERVICE=]KIND",
                   help=f"picker: {', '.join(PICKER_KINDS)} (default peak_ewma); "
                        "SERVICE=KIND sets it for one service (repeatable)")
    p.add_argument("--ewma-decay", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="peak-EWMA decay time (default 10)")
    p.add_argument("--ewma-default-rtt-ms", type=_positive_float, default=30.0, metavar="MS",
                   help="estimate for an endpoint that has not answered yet (default 30)")
    p.add_argument("--failure-penalty", type=_positive_float, default=5.0, metavar="SECONDS",
                   help="latency recorded for a call that fails with UNAVAILABLE, "
                        "RESOURCE_EXHAUSTED, INTERNAL or UNKNOWN, or the server's "
                        "grpc-retry-pushback-ms if longer; 0 turns it off (default 5)")

    for name, text in (("register", "register an instance the registry health-checks itself"),
                       ("deregister", "remove a registered instance")):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        _registry_flag(p)
        p.add_argument("--service", type=SERVICE, required=True, help="mesh service name")
        p.add_argument("--address", type=ADDRESS, required=name == "register",
                       metavar="HOST:PORT", help="the instance's address")
        p.add_argument("--instance-id", help="instance id (default: the address)")
        if name == "register":
            p.add_argument("--proto-service", type=PROTO, action="append", default=[],
                           metavar="NAME", help="proto service served (repeatable; default: "
                                                "ask the instance's reflection)")
            p.add_argument("--label", type=LABEL, action="append", default=[],
                           metavar="KEY=VALUE", help="instance label (repeatable)")
        p.add_argument("--owner", default="", help="owner (default: the address)")

    p = sub.add_parser("services", help="list the mesh's services",
                       description="List services with their proto services and health.")
    _registry_flag(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("resolve", help="list one service's instances",
                       description="List the instances of a mesh service, or of the services "
                                   "that serve a proto service (e.g. shop.v1.Orders).")
    _registry_flag(p)
    p.add_argument("name", help="mesh service name or fully-qualified proto service name")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("endpoints", help="show a sidecar's endpoints and why they are picked",
                       description="Show, per service, each endpoint's health, latency "
                                   "estimate, calls in flight, cost, calls and failures, as a "
                                   "sidecar's admin port reports them.")
    p.add_argument("service", nargs="?", help="only this mesh service")
    p.add_argument("--admin", type=ADDRESS, default="127.0.0.1:15000", metavar="HOST:PORT",
                   help="the sidecar's admin address (default 127.0.0.1:15000)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("example-server", help="run the example Echo service",
                       description="Run grpcmesh.example.v1.Echo with health and reflection.")
    p.add_argument("--listen", type=LISTEN, default="127.0.0.1:50051", metavar="HOST:PORT")
    p.add_argument("--name", default="echo", help="instance name put in every response")
    p.add_argument("--delay-ms", type=_positive_float, default=0.0, help="delay per call")
    p.add_argument("--fail-code", type=_status_code, default=0,
                   help="fail every call with this gRPC status code (1-16)")
    p.add_argument("--recovered-delay-ms", type=_positive_float, default=0.0,
                   help="on SIGUSR1, stop failing and use this delay per call (default 0)")

    p = sub.add_parser("demo", help="run a demo mesh on this machine",
                       description="Start a registry, three Echo instances with sidecars and a "
                                   "client calling through its own sidecar; print what happens.")
    p.add_argument("--duration", type=_positive_float, default=0.0,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--concurrency", type=_positive_int, default=4,
                   help="calls in flight (default 4)")
    return parser


def _registry_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=REGISTRY, default=[DEFAULT_REGISTRY],
                   metavar="HOST:PORT[,...]", help=f"registry (default {DEFAULT_REGISTRY})")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = COMMANDS[args.command]
    try:
        return asyncio.run(handler(args))
    except CliError as err:
        print(f"grpcmesh {args.command}: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except OSError as err:
        print(f"grpcmesh {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def announce(**addresses: str) -> None:
    print(json.dumps(addresses), flush=True)


async def run_until_signal(stop: Callable[[], Awaitable[None]],
                           done: asyncio.Event | None = None) -> None:
    """Wait for SIGTERM/SIGINT (or done), then run stop()."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    waiters = [asyncio.ensure_future(signalled.wait())]
    if done is not None:
        waiters.append(asyncio.ensure_future(done.wait()))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    await stop()


async def cmd_registry(args: argparse.Namespace) -> int:
    from grpcmesh.registry.server import RegistryServer, open_persistence

    try:
        persistence = open_persistence(args.store)
    except ValueError as err:
        raise CliError(str(err)) from None
    server = RegistryServer(args.listen, persistence, warmup=args.warmup)
    announce(registry=await server.start())
    await run_until_signal(server.stop)
    return 0


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
    sidecar = Sidecar(SidecarSettings(
        service=args.service, registry=tuple(args.registry), app=args.app,
        outbound=args.outbound, inbound=args.inbound, admin=args.admin,
        proto_services=tuple(args.proto_service), instance_id=args.instance_id,
        labels=tuple(args.label), ttl_seconds=args.ttl, grace_seconds=args.grace_period,
        drain_delay=args.drain_delay,
        forward=ForwardSettings(max_message_bytes=args.max_message_bytes,
                                max_metadata_bytes=args.max_metadata_bytes),
        balancer=balancer))
    try:
        await sidecar.start()
    except BaseException:
        await sidecar.shutdown()  # a listener may already run: stop it before reporting
        raise
    announce(outbound=sidecar.outbound_address, inbound=sidecar.inbound_address,
             admin=sidecar.admin.address)
    await run_until_signal(sidecar.shutdown, sidecar.stopped)
    if sidecar.failure is not None:
        raise CliError(str(sidecar.failure))
    return 0


def _check(fn: Callable[[str, str], Any], value: str, flag: str) -> None:
    try:
        fn(value, flag)
    except ValueError as err:
        raise UsageError(str(err)) from None


async def _registry_call(args: argparse.Namespace, method: str, request: Any) -> Any:
    client = RegistryClient(args.registry, timeout=5.0)
    try:
        return await client.call(method, request)
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise CliError(f"cannot reach the registry at {','.join(args.registry)} "
                           f"({err.code().name}: {err.details()})") from None
        raise CliError(f"{err.code().name}: {err.details()}", err.code()) from None
    finally:
        await client.close()


async def cmd_register(args: argparse.Namespace) -> int:
    from grpcmesh import reflection

    protos = args.proto_service
    if not protos:
        async with grpc.aio.insecure_channel(args.address) as channel:
            try:
                protos = reflection.application_services(
                    await reflection.list_services(channel, timeout=5.0))
            except grpc.aio.AioRpcError as err:
                raise CliError(f"cannot ask {args.address} which services it serves "
                               f"({err.code().name}: {err.details()}); pass --proto-service"
                               ) from None
    instance_id = args.instance_id or args.address
    _check(names.check_instance_id, instance_id, "--instance-id")
    instance = Instance(args.service, instance_id, args.address, tuple(protos),
                        tuple(args.label), owner=args.owner)
    await _registry_call(args, "Register", pb.RegisterRequest(instance=instance.to_proto(),
                                                              ttl_seconds=0))
    print(f"registered {args.service}/{instance_id} at {args.address} serving "
          f"{', '.join(protos)}; the registry checks its health")
    return 0


async def cmd_deregister(args: argparse.Namespace) -> int:
    instance_id = args.instance_id or args.address
    if not instance_id:
        raise UsageError("give --instance-id or --address")
    await _registry_call(args, "Deregister", pb.DeregisterRequest(
        service=args.service, instance_id=instance_id, owner=args.owner))
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


async def admin_get(address: str, path: str, timeout: float = 5.0) -> Any:
    """GET a sidecar admin path and decode its JSON body."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(head.split(b"\r\n")[0].decode(errors="replace") or "no answer")
    return json.loads(body)


async def cmd_example_server(args: argparse.Namespace) -> int:
    from grpcmesh.example.server import EchoBehaviour, EchoServer

    behaviour = EchoBehaviour(args.name, args.delay_ms, args.fail_code, args.recovered_delay_ms)
    server = EchoServer(args.listen, behaviour)
    announce(app=await server.start())
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, behaviour.recover)
    await run_until_signal(server.stop)
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
    "endpoints": cmd_endpoints, "example-server": cmd_example_server, "demo": cmd_demo,
}
