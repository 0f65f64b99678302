"""Real etcd members on loopback ports (Debian's etcd-server; CI installs it), for the tests
and scripts/bench_registry.py: one member, or a cluster of several, each a process that a test
can kill -9 and start again."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ETCD = shutil.which("etcd")
if ETCD is None and os.environ.get("GRPCMESH_CI"):  # CI installs it: never skip there
    raise RuntimeError("etcd is not installed; .ci/run installs Debian's etcd-server")
MISSING = "etcd is not installed (apt-get install -y etcd-server)"


def free_ports(count: int) -> list[int]:
    """Ports free now, below the outgoing-connection range (32768 and up)."""
    ports: list[int] = []
    socks = []
    candidate = 20000 + (os.getpid() * 37) % 9000
    while len(ports) < count:
        candidate += 1
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", candidate))
        except OSError:
            sock.close()
            continue
        socks.append(sock)
        ports.append(candidate)
    for sock in socks:
        sock.close()
    return ports


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"


class EtcdCluster:
    def __init__(self, root: Path, size: int = 1) -> None:
        if ETCD is None:
            raise RuntimeError(MISSING)
        ports = free_ports(2 * size)
        self.members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1], root / f"m{i}")
                        for i in range(size)]
        self.initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}"
                                for m in self.members)
        self._state = "new"

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def url(self, prefix: str = "") -> str:
        return f"etcd://{self.endpoints}{prefix}"

    def start_member(self, member: Member) -> None:
        member.data_dir.mkdir(parents=True, exist_ok=True)
        member.log = member.data_dir.with_suffix(".log")
        assert ETCD is not None
        with member.log.open("ab") as log:
            member.process = self._popen(member, log)

    def _popen(self, member: Member, log: IO[bytes]) -> subprocess.Popen[bytes]:
        assert ETCD is not None
        return subprocess.Popen([
            ETCD, "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", f"http://127.0.0.1:{member.client_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{member.client_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-cluster", self.initial, "--initial-cluster-state", self._state,
            "--initial-cluster-token", "grpcmesh-test",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--snapshot-count", "100000", "--quota-backend-bytes", str(512 * 1024 * 1024),
        ], stdout=subprocess.DEVNULL, stderr=log)

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        for member in self.members:
            self.start_member(member)
        self._state = "existing"
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0, members: list[Member] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for member in members or self.members:
            while not self.healthy(member):
                if member.process is not None and member.process.poll() is not None:
                    raise RuntimeError(f"etcd {member.name} exited: "
                                       f"{member.log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd {member.name} not healthy after {timeout} s: "
                                       f"{member.log.read_text()[-2000:]}")
                time.sleep(0.1)

    @staticmethod
    def healthy(member: Member) -> bool:
        try:
            with urllib.request.urlopen(f"http://{member.endpoint}/health", timeout=1) as resp:
                return b'"health":"true"' in resp.read()
        except OSError:
            return False

    def leader(self) -> Member:
        """The member that leads now (asked over the v3 JSON gateway)."""
        import json

        for member in self.members:
            if member.process is None or member.process.poll() is not None:
                continue
            try:
                req = urllib.request.Request(f"http://{member.endpoint}/v3/maintenance/status",
                                             data=b"{}", method="POST")
                with urllib.request.urlopen(req, timeout=1) as resp:
                    status = json.loads(resp.read())
            except OSError:
                continue
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return member
        raise RuntimeError("no etcd member says it leads")

    def kill(self, member: Member) -> None:
        if member.process is not None and member.process.poll() is None:
            member.process.send_signal(signal.SIGKILL)
            member.process.wait(5)
        member.process = None

    def stop(self) -> None:
        for member in self.members:
            if member.process is not None and member.process.poll() is None:
                member.process.terminate()
        for member in self.members:
            if member.process is not None:
                try:
                    member.process.wait(5)
                except subprocess.TimeoutExpired:
                    member.process.kill()
                    member.process.wait(5)
            member.process = None
