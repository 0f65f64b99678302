"""Client contexts for external services (tls.py): made per CA file, the system's once."""
from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from grpcmesh.config import Tls
from grpcmesh.external.tls import ClientContexts, server_name
from tests.certs import make_certs


def test_contexts_verify_and_the_system_one_is_kept(tmp_path: Path) -> None:
    contexts = ClientContexts()
    system = contexts(Tls())
    assert contexts(Tls(server_name="other.example")) is system
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    ca = str(make_certs(tmp_path).ca)
    own = contexts(Tls(ca_file=ca))
    assert own is not contexts(Tls(ca_file=ca))  # read again (each config version asks once)
    assert own.cert_store_stats()["x509_ca"] == 1
    with pytest.raises(OSError):
        contexts(Tls(ca_file=str(tmp_path / "missing.pem")))


def test_the_server_name_is_the_configured_host_unless_given() -> None:
    assert server_name(Tls(), "api.weather.example:443") == "api.weather.example"
    assert server_name(Tls(), "[::1]:443") == "::1"
    assert server_name(Tls("weather.example"), "10.0.0.1:443") == "weather.example"
