"""The registry's state in etcd, shared by any number of registry replicas
(`grpcmesh registry --store etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`).

Keys under PREFIX (default /grpcmesh):
- PREFIX/format: "grpcmesh-registry 1", written by the first registry; a prefix that holds keys
  without it belongs to something else, and the registry refuses to start on it.
- PREFIX/instances/SERVICE/INSTANCE_ID: the Instance, serialized as the registry's proto. A
  sidecar's lease is an etcd lease and its key is attached to it, so a registration outlives
  the replica that made it, any replica can keep it alive, and etcd removes it when it expires.
- PREFIX/config: the mesh config in force, as JSON (version, canonical_json, applied_at).
- PREFIX/leader/NAME: the replica that does job NAME (the health checks), under a lease of
  its own: when that replica dies the key expires and another takes the job.

Every write is a transaction that compares the key's mod_revision with what was read, so two
replicas never overwrite each other's view of an instance; a lost race is read again. Revisions
are etcd's, so a watcher that moves to another replica resumes where it was.

The etcd v3 API is called through aetcd's protocol stubs (aetcd.rpc) on a channel of our own:
aetcd's Client hides a transaction's revision, which a write must answer with, and its watcher
where a broken stream stopped, which a resumed watch needs.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import grpc
from aetcd import rpc  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError

from generated.grpcmesh.registry.v1 import registry_pb2 as pb
from grpcmesh import names
from grpcmesh.registry.backend import Compacted, Leadership, Listing, StoreUnavailable
from grpcmesh.registry.config_store import Applied, Prepared, next_version, read_stored
from grpcmesh.registry.etcd_leases import KeepAlives
from grpcmesh.registry.history import Change
from grpcmesh.registry.limits import RegistryLimits
from grpcmesh.registry.model import (
    Event,
    EventType,
    Health,
    Instance,
    Lease,
    PushedConfig,
    RegistryError,
)
from grpcmesh.registry.store import (
    Registration,
    admit,
    check_deregister,
    check_registration_request,
    lease_not_found,
    normalized,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

FORMAT = b"grpcmesh-registry 1"
DEFAULT_PREFIX = "/grpcmesh"
# Each etcd call: how long one attempt may take, and how many attempts while etcd elects a
# leader (a few hundred ms on loopback, seconds across machines).
CALL_TIMEOUT = 5.0
ATTEMPTS = 3
RETRY_PAUSE = 0.3
CONNECT_TIMEOUT = 5.0
# A write that loses a race with another replica reads again, this many times at most.
CONFLICT_ATTEMPTS = 8
# The leader of a job holds it under a lease of this TTL, kept alive every third of it: a
# replica killed without a word hands the job over within about this long.
LEADER_TTL = 5
# How long a stopping leader tries to revoke its lease (handing the job over at once) before it
# leaves it to run out.
RELEASE_SECONDS = 2.0
# A listing reads this many keys per Range, at one revision: each answer stays far below
# gRPC's message limit whatever the size of the mesh.
LIST_PAGE = 500
# Answers from etcd up to this size are read (a page of big values, a watch catching up on
# many changes); etcd holds values up to 1.5 MiB by default.
MAX_RECEIVE_BYTES = 64 * 1024 * 1024
_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class EtcdTarget:
    endpoints: tuple[str, ...]
    prefix: str = DEFAULT_PREFIX

    @property
    def url(self) -> str:
        return f"etcd://{','.join(self.endpoints)}{self.prefix}"


def parse_etcd_url(spec: str) -> EtcdTarget:
    """etcd://HOST:PORT[,HOST:PORT...][/PREFIX]; ValueError naming what is wrong."""
    usage = "expected etcd://HOST:PORT[,HOST:PORT...][/PREFIX]"
    if not spec.startswith("etcd://"):
        raise ValueError(f"--store {spec!r} is not an etcd URL: {usage}")
    rest = spec[len("etcd://"):]
    hosts, slash, prefix = rest.partition("/")
    prefix = "/" + prefix.strip("/") if slash and prefix.strip("/") else DEFAULT_PREFIX
    if any(not part or part in (".", "..") for part in prefix.split("/")[1:]) or \
            not all(c.isalnum() or c in "/-_." for c in prefix):
        raise ValueError(f"--store {spec!r}: prefix {prefix!r} must be path segments of "
                         "letters, digits, '-', '_' and '.'")
    endpoints = [h.strip() for h in hosts.split(",")]
    if not hosts or not all(endpoints):
        raise ValueError(f"--store {spec!r} names no etcd endpoint: {usage}")
    for endpoint in endpoints:
        try:
            names.check_address(endpoint, "etcd endpoint")
        except ValueError as err:
            raise ValueError(f"--store {spec!r}: {err}") from None
    return EtcdTarget(tuple(endpoints), prefix)


def _split(endpoint: str) -> tuple[str, str]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), port


def _is_ip(host: str) -> int:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return 0


async def grpc_target(endpoints: tuple[str, ...]) -> str:
    """A gRPC target for the endpoints: one name as it is (gRPC's DNS resolver finds every
    member behind it), addresses as an ipv4:/ipv6: list; several names are resolved here,
    once, to IPv4 addresses."""
    if len(endpoints) == 1 and not _is_ip(_split(endpoints[0])[0]):
        return f"dns:///{endpoints[0]}"
    addresses: list[str] = []
    for endpoint in endpoints:
        host, port = _split(endpoint)
        if _is_ip(host):
            addresses.append(f"[{host}]:{port}" if _is_ip(host) == 6 else f"{host}:{port}")
            continue
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, int(port), family=socket.AF_INET, type=socket.SOCK_STREAM)
        except OSError as err:
            raise ValueError(f"etcd endpoint {endpoint}: cannot resolve {host!r}: "
                             f"{err}") from None
        addresses.extend(f"{info[4][0]}:{port}" for info in infos)
    six = [a for a in addresses if a.startswith("[")]
    if six and len(six) != len(addresses):
        raise ValueError("the etcd endpoints mix IPv4 and IPv6 addresses: use one kind")
    return ("ipv6:" if six else "ipv4:") + ",".join(addresses)


def prefix_end(key: bytes) -> bytes:
    """The range_end that makes a range of every key starting with key."""
    return key[:-1] + bytes([key[-1] + 1])


class EtcdStore:
    shared = True  # replicas share it (backend.Store)

    def __init__(self, target: EtcdTarget, limits: RegistryLimits = RegistryLimits(),
                 call_timeout: float = CALL_TIMEOUT) -> None:
        self.target = target
        self.limits = limits
        self._timeout = call_timeout
        root = target.prefix.encode()
        self._format_key = root + b"/format"
        self._config_key = root + b"/config"
        self._instances = root + b"/instances/"
        self._leaders = root + b"/leader/"
        self._root = root + b"/"
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._lease: Any = None
        self._watch: Any = None
        self._keepalives: KeepAlives | None = None
        self._id = ""
        self._progress: Callable[[], None] = lambda: None
        self._last_config = PushedConfig(0)  # the last config read: kept over one unreadable
        self.replica = secrets.token_hex(6)

    @property
    def store_id(self) -> str:
        return self._id

    # -- connecting ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and check the prefix; ValueError (one line) if etcd cannot be reached or the
        prefix belongs to something else."""
        where = self.target.url
        target = await grpc_target(self.target.endpoints)
        self._channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.lb_policy_name", "round_robin"),  # a dead member is skipped, not waited on
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ])
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)
        self._keepalives = KeepAlives(self._lease.LeaseKeepAlive,
                                      lambda lease_id: rpc.LeaseKeepAliveRequest(ID=lease_id))
        try:
            await asyncio.wait_for(self._channel.channel_ready(), CONNECT_TIMEOUT)
            first = await self._kv.Range(rpc.RangeRequest(
                key=self._root, range_end=prefix_end(self._root), limit=1, keys_only=True),
                timeout=CONNECT_TIMEOUT)
            marker = await self._kv.Range(rpc.RangeRequest(key=self._format_key),
                                          timeout=CONNECT_TIMEOUT)
        except (TimeoutError, grpc.aio.AioRpcError) as err:
            await self.close()
            why = (f"{err.code().name}: {err.details()}" if isinstance(err, grpc.aio.AioRpcError)
                   else f"no answer within {CONNECT_TIMEOUT:g} s")
            raise ValueError(f"--store {where}: cannot reach etcd ({why})") from None
        if marker.kvs and marker.kvs[0].value != FORMAT:
            await self.close()
            raise ValueError(f"--store {where}: {self._format_key.decode()} holds "
                             f"{marker.kvs[0].value[:64]!r}, not {FORMAT.decode()!r}: the prefix "
                             "belongs to something else (choose another prefix)")
        if not marker.kvs and first.kvs:
            await self.close()
            raise ValueError(f"--store {where}: the prefix holds keys grpcmesh did not write "
                             f"(such as {_shown(first.kvs[0].key)}): it "
                             "belongs to something else (choose another prefix)")
        if not marker.kvs:
            await self._call(self._kv.Txn, rpc.TxnRequest(
                compare=[rpc.Compare(key=self._format_key, target=rpc.Compare.CREATE,
                                     result=rpc.Compare.EQUAL, create_revision=0)],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=self._format_key,
                                                                  value=FORMAT))]))
        self._id = f"etcd-{first.header.cluster_id:x}{self.target.prefix}"
        log.info("registry store: etcd at %s (cluster %x)", where, first.header.cluster_id)

    async def close(self) -> None:
        if self._keepalives is not None:
            await self._keepalives.close()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """One etcd call, tried again while etcd is unavailable (a leader election)."""
        for attempt in range(ATTEMPTS):
            try:
                return await method(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as err:
                if err.code() not in _RETRIED or attempt == ATTEMPTS - 1:
                    raise StoreUnavailable(
                        f"etcd at {self.target.url}: {err.code().name}: {err.details()}"
                    ) from None
            except (TimeoutError, ConnectionError) as err:  # the shared keep-alive stream
                if attempt == ATTEMPTS - 1:
                    raise StoreUnavailable(f"etcd at {self.target.url}: "
                                           f"{err or 'no answer in time'}") from None
            await asyncio.sleep(RETRY_PAUSE * (attempt + 1))
        raise AssertionError("unreachable")

    # -- keys and values ----------------------------------------------------------------------

    def _key(self, key: tuple[str, str]) -> bytes:
        return self._instances + f"{key[0]}/{key[1]}".encode()

    def _key_of(self, raw: bytes) -> tuple[str, str] | None:
        if not raw.startswith(self._instances):
            return None
        service, _, instance_id = raw[len(self._instances):].decode(errors="replace") \
            .partition("/")
        return (service, instance_id) if service and instance_id else None

    @staticmethod
    def _encode(instance: Instance) -> bytes:
        data: bytes = instance.to_proto().SerializeToString()
        return data

    def _decode(self, kv: Any) -> Instance | None:
        try:
            inst = Instance.from_proto(pb.Instance.FromString(kv.value))
        except (DecodeError, ValueError) as err:  # written by something else: skipped
            log.warning("etcd key %r does not hold an instance (%s); ignored", kv.key[:100], err)
            return None
        if self._key_of(kv.key) != inst.key:
            log.warning("etcd key %r holds instance %s/%s; ignored", kv.key[:100], *inst.key)
            return None
        return inst

    async def _read(self, key: tuple[str, str]) -> tuple[Instance | None, int, int]:
        """The instance at key, its mod_revision (0: none) and etcd's revision."""
        resp = await self._call(self._kv.Range, rpc.RangeRequest(key=self._key(key)))
        if not resp.kvs:
            return None, 0, resp.header.revision
        return self._decode(resp.kvs[0]), resp.kvs[0].mod_revision, resp.header.revision

    async def _swap(self, key: tuple[str, str], mod_revision: int, ops: list[Any]) -> int:
        """Do ops if key is still at mod_revision; its revision, or 0 if it was not."""
        resp = await self._call(self._kv.Txn, rpc.TxnRequest(
            compare=[rpc.Compare(key=self._key(key), target=rpc.Compare.MOD,
                                 result=rpc.Compare.EQUAL, mod_revision=mod_revision)],
            success=ops))
        return int(resp.header.revision) if resp.succeeded else 0

    def _put(self, instance: Instance, lease: int = 0) -> Any:
        return rpc.RequestOp(request_put=rpc.PutRequest(
            key=self._key(instance.key), value=self._encode(instance), lease=lease))

    async def _count(self) -> int:
        resp = await self._call(self._kv.Range, rpc.RangeRequest(
            key=self._instances, range_end=prefix_end(self._instances), count_only=True))
        return int(resp.count)

    async def _revoke(self, lease_id: int) -> None:
        try:
            await self._call(self._lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease_id))
        except StoreUnavailable as err:  # it expires on its own
            log.debug("revoking lease %d: %s", lease_id, err)

    # -- writes -------------------------------------------------------------------------------

    async def register(self, instance: Instance, ttl_seconds: float) -> Registration:
        instance = normalized(instance)
        check_registration_request(instance, ttl_seconds, self.limits)
        for _ in range(CONFLICT_ATTEMPTS):
            previous, mod, _ = await self._read(instance.key)
            held = await self._count() if previous is None else 0
            admitted = admit(instance, ttl_seconds, previous, held, self.limits)
            lease = None
            if ttl_seconds > 0:
                granted = await self._call(self._lease.LeaseGrant, rpc.LeaseGrantRequest(
                    TTL=max(1, round(ttl_seconds))))
                lease = Lease(granted.ID, float(granted.TTL), time.monotonic() + granted.TTL,
                              instance.key)
                admitted = replace(admitted, lease_id=granted.ID)
            try:
                revision = await self._swap(instance.key, mod,
                                            [self._put(admitted, admitted.lease_id)])
            except StoreUnavailable:
                # Not registered, or (an answer lost after etcd applied it) registered under a
                # lease nobody was told of: the sidecar registers again either way.
                if lease is not None:
                    await self._revoke(lease.lease_id)
                raise
            if revision:
                if previous is not None and previous.lease_id:
                    await self._revoke(previous.lease_id)  # its key is on the new lease now
                return Registration(admitted, lease, revision)
            if lease is not None:
                await self._revoke(lease.lease_id)
        raise self._busy(instance.key)

    def _busy(self, key: tuple[str, str]) -> RegistryError:
        return RegistryError(grpc.StatusCode.ABORTED,
                             f"instance_id {key[1]!r} of service {key[0]!r} kept changing "
                             f"under {CONFLICT_ATTEMPTS} attempts to write it; try again")

    async def keep_alive(self, lease_id: int) -> Lease:
        if self._keepalives is None:
            raise StoreUnavailable(f"etcd at {self.target.url}: the store is not open")
        ttl = await self._call(self._keepalives.renew, lease_id)
        if ttl <= 0:
            raise lease_not_found(lease_id)
        return Lease(lease_id, float(ttl), time.monotonic() + ttl)

    async def _leased(self, lease_id: int) -> tuple[str, str]:
        info = await self._call(self._lease.LeaseTimeToLive,
                                rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=True))
        keys = [k for k in (self._key_of(raw) for raw in info.keys) if k is not None]
        if info.TTL <= 0 or not keys:
            raise lease_not_found(lease_id)
        return keys[0]

    async def set_health(self, lease_id: int, health: Health) -> int:
        if lease_id <= 0:
            raise lease_not_found(lease_id)
        key = await self._leased(lease_id)
        for _ in range(CONFLICT_ATTEMPTS):
            inst, mod, _ = await self._read(key)
            if inst is None or inst.lease_id != lease_id:
                raise lease_not_found(lease_id)
            if inst.health == health:  # the revision of that state: a view has it, or will
                return mod
            done = await self._swap(key, mod, [self._put(replace(inst, health=health),
                                                         lease_id)])
            if done:
                return done
        raise self._busy(key)

    async def set_checked_health(self, key: tuple[str, str], health: Health) -> int:
        for _ in range(CONFLICT_ATTEMPTS):
            inst, mod, _ = await self._read(key)
            if inst is None or not inst.checked_by_registry or inst.health == health:
                return mod  # nothing written: the revision of what is there (0: nothing)
            done = await self._swap(key, mod, [self._put(replace(inst, health=health))])
            if done:
                return done
        raise self._busy(key)

    async def deregister(self, service: str, instance_id: str, owner: str) -> int:
        for _ in range(CONFLICT_ATTEMPTS):
            inst, mod, _ = await (self._read((service, instance_id))
                                  if _valid_key(service, instance_id)
                                  else _nothing())
            check_deregister(inst, service, instance_id, owner)
            assert inst is not None
            done = await self._swap(inst.key, mod, [rpc.RequestOp(
                request_delete_range=rpc.DeleteRangeRequest(key=self._key(inst.key)))])
            if done:
                if inst.lease_id:
                    await self._revoke(inst.lease_id)
                return done
        raise self._busy((service, instance_id))

    async def _config(self) -> tuple[PushedConfig, int]:
        resp = await self._call(self._kv.Range, rpc.RangeRequest(key=self._config_key))
        if not resp.kvs:
            return PushedConfig(0), 0
        return self._read_config(resp.kvs[0].value), resp.kvs[0].mod_revision

    def _read_config(self, value: bytes) -> PushedConfig:
        try:
            data = json.loads(value)
            config = PushedConfig(int(data["version"]), str(data["canonical_json"]),
                                  float(data["applied_at"]))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"etcd key {self._config_key.decode()} does not hold a mesh "
                             f"config: {err}") from None
        read_stored(config)  # a ValueError if this registry cannot read it
        return config

    async def apply_config(self, prepared: Prepared, now: float) -> Applied:
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                current, mod = await self._config()
            except ValueError as err:  # not ours to overwrite: a newer grpcmesh may have it
                raise RegistryError(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"{err}; not replacing it (delete the key to start "
                                    "over)") from None
            new = next_version(current, prepared, now)
            if new is None:
                return Applied(current, False, prepared.warnings)
            value = json.dumps({"version": new.version, "canonical_json": new.canonical_json,
                                "applied_at": new.applied_at}).encode()
            resp = await self._call(self._kv.Txn, rpc.TxnRequest(
                compare=[rpc.Compare(key=self._config_key, target=rpc.Compare.MOD,
                                     result=rpc.Compare.EQUAL, mod_revision=mod)],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=self._config_key,
                                                                  value=value))]))
            if resp.succeeded:
                return Applied(new, True, prepared.warnings, int(resp.header.revision))
        raise RegistryError(grpc.StatusCode.ABORTED, "the mesh config kept changing under "
                            f"{CONFLICT_ATTEMPTS} attempts to apply it; try again")

    # -- reads --------------------------------------------------------------------------------

    async def listing(self) -> Listing:
        """Every key under the prefix at one revision, LIST_PAGE keys per Range. A config that
        cannot be read is reported and the last one read is kept, as changes() does."""
        instances: list[Instance] = []
        config = PushedConfig(0)
        key, end, revision = self._root, prefix_end(self._root), 0
        while True:
            resp = await self._call(self._kv.Range, rpc.RangeRequest(
                key=key, range_end=end, limit=LIST_PAGE, revision=revision))
            revision = revision or int(resp.header.revision)
            for kv in resp.kvs:
                if kv.key == self._config_key:
                    try:
                        config = self._last_config = self._read_config(kv.value)
                    except ValueError as err:
                        log.error("%s; the config in force is kept", err)
                        config = self._last_config
                elif kv.key.startswith(self._instances):
                    inst = self._decode(kv)
                    if inst is not None:
                        instances.append(inst)
            if not resp.more or not resp.kvs:
                return Listing(revision, tuple(instances), config)
            key = resp.kvs[-1].key + b"\0"

    async def changes(self, after: int) -> AsyncGenerator[Change, None]:
        requests: asyncio.Queue[Any] = asyncio.Queue()
        await requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=self._root, range_end=prefix_end(self._root), start_revision=after + 1)))

        async def send() -> AsyncIterator[Any]:
            while (request := await requests.get()) is not None:
                yield request

        # hasleader: etcd ends the watch when its member has no leader (it lost quorum),
        # which would otherwise stay open and silent while changes are made elsewhere.
        stream = self._watch.Watch(send(), metadata=(("hasleader", "true"),))

        def progress() -> None:
            requests.put_nowait(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))

        self._progress = progress
        try:
            async for resp in stream:
                if resp.compact_revision:
                    raise Compacted(f"etcd compacted the changes after revision {after} "
                                    f"(up to {resp.compact_revision})")
                if resp.canceled:
                    raise StoreUnavailable(f"etcd at {self.target.url} cancelled the watch: "
                                           f"{resp.cancel_reason or 'no reason given'}")
                if resp.created:
                    yield Change(Event(EventType.RESUMED, after))
                    continue
                for ev in resp.events:
                    change = self._change(ev)
                    if change is not None:
                        yield change
                # Every change up to here has come, the keys it ignores too: a response
                # without events is a progress notification, at etcd's revision.
                reached = (max(int(ev.kv.mod_revision) for ev in resp.events) if resp.events
                           else int(resp.header.revision))
                yield Change(Event(EventType.RESUMED, reached))
        except grpc.aio.AioRpcError as err:
            raise StoreUnavailable(f"etcd at {self.target.url}: the watch broke: "
                                   f"{err.code().name}: {err.details()}") from None
        finally:
            if self._progress is progress:
                self._progress = lambda: None
            requests.put_nowait(None)  # ends send(), and with it grpc's task that reads it
            stream.cancel()
        raise StoreUnavailable(f"etcd at {self.target.url} ended the watch")

    def _change(self, ev: Any) -> Change | None:
        kv = ev.kv
        revision = int(kv.mod_revision)
        if kv.key == self._config_key and ev.type == rpc.Event.PUT:
            try:
                config = self._last_config = self._read_config(kv.value)
            except ValueError as err:
                log.error("%s; the config in force is kept", err)
                return None
            return Change(Event(EventType.CONFIG, revision, config=config))
        key = self._key_of(kv.key)
        if key is None:
            return None
        if ev.type == rpc.Event.DELETE:  # the view knows what it was
            return Change(Event(EventType.DELETE, revision, (Instance(*key, address=""),),
                                "removed (deregistered, or its lease expired)"))
        inst = self._decode(kv)
        return None if inst is None else Change(Event(EventType.UPSERT, revision, (inst,)))

    def request_progress(self) -> None:
        self._progress()

    def leadership(self, name: str) -> Leadership:
        return EtcdLeadership(self, self._leaders + name.encode())


def _shown(key: bytes, limit: int = 100) -> str:
    """A key someone else wrote, for a one-line message: printable, and not too long."""
    text = key[:limit].decode(errors="replace")
    return text if text.isprintable() else repr(text)[1:-1]


def _valid_key(service: str, instance_id: str) -> bool:
    try:
        names.check_service(service)
        names.check_instance_id(instance_id)
    except ValueError:
        return False
    return True


async def _nothing() -> tuple[None, int, int]:
    return None, 0, 0


class EtcdLeadership:
    """A job held by one replica at a time: the first to create the key under its own lease
    holds it while it keeps that lease alive."""

    def __init__(self, store: EtcdStore, key: bytes, ttl: int = LEADER_TTL) -> None:
        self._store = store
        self._key = key
        self._ttl = ttl
        self._lease_id = 0
        self._lost = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        store = self._store
        while True:
            try:
                granted = await store._call(store._lease.LeaseGrant,
                                            rpc.LeaseGrantRequest(TTL=self._ttl))
                resp = await store._call(store._kv.Txn, rpc.TxnRequest(
                    compare=[rpc.Compare(key=self._key, target=rpc.Compare.CREATE,
                                         result=rpc.Compare.EQUAL, create_revision=0)],
                    success=[rpc.RequestOp(request_put=rpc.PutRequest(
                        key=self._key, value=store.replica.encode(), lease=granted.ID))]))
                if resp.succeeded:
                    self._lease_id = granted.ID
                    self._lost.clear()
                    self._keeper = asyncio.get_running_loop().create_task(self._keep())
                    return
                await store._revoke(granted.ID)
            except StoreUnavailable as err:
                log.debug("campaign for %s: %s", self._key, err)
            await asyncio.sleep(self._ttl / 5)

    async def _keep(self) -> None:
        """Renew the lease every third of its TTL. The lease may have expired in etcd by TTL
        after the last renewal that was sent (a reply says it was renewed no earlier): past
        that another replica may hold the job, so no keep-alive is waited on beyond it."""
        deadline = time.monotonic() + self._ttl
        try:
            while True:
                await asyncio.sleep(max(0.0, min(self._ttl / 3, deadline - time.monotonic())))
                sent = time.monotonic()
                if sent >= deadline:
                    log.warning("could not keep %s for its TTL (%d s): another replica may "
                                "hold it now", self._key.decode(), self._ttl)
                    break
                try:
                    await asyncio.wait_for(self._store.keep_alive(self._lease_id),
                                           deadline - sent)
                    deadline = sent + self._ttl
                except RegistryError:  # the lease is gone: another replica may hold the job
                    break
                except (StoreUnavailable, TimeoutError) as err:
                    log.warning("keeping %s: %s", self._key.decode(),
                                err or "no answer within its TTL")
        finally:
            self._lost.set()

    async def lost(self) -> None:
        await self._lost.wait()

    async def release(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        if self._lease_id and self._store._channel is not None:
            try:  # the next replica takes over at once, or when the lease runs out
                await asyncio.wait_for(self._store._revoke(self._lease_id), RELEASE_SECONDS)
            except TimeoutError:
                log.warning("could not revoke %s's lease within %g s: another replica takes "
                            "over when it runs out", self._key.decode(), RELEASE_SECONDS)
        self._lease_id = 0
