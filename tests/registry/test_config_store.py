"""The registry's mesh config without sockets: validation, the version decision, persistence."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import grpc
import pytest

from grpcmesh.config import MeshConfig, parse_text
from grpcmesh.registry.config_store import (
    MAX_CANONICAL_BYTES,
    NO_CONFIG,
    ConfigStore,
    Prepared,
    clean_source,
    error_details,
    known_instances,
    next_version,
    prepare,
    serving_protos,
)
from grpcmesh.registry.model import Instance, PushedConfig, RegistryError
from grpcmesh.registry.sqlite_store import SqlitePersistence
from tests.config.support import EXAMPLE

T0 = 1_700_000_000.0
CHANGED = EXAMPLE.replace("timeout: 2s", "timeout: 3s")
BAD = dedent("""\
    services:
      orders:
        timeout: 2
        routes:
          - to: {stable: 1}
    """)


class MemoryConfigPersistence:
    def __init__(self, stored: PushedConfig | None = None) -> None:
        self.stored = stored
        self.saves = 0

    def load_config(self) -> PushedConfig | None:
        return self.stored

    def save_config(self, config: PushedConfig) -> None:
        self.stored = config
        self.saves += 1


def test_first_config_is_version_1_the_same_again_is_a_no_op_a_change_is_2() -> None:
    store = ConfigStore()
    heard: list[int] = []
    store.subscribe(lambda c: heard.append(c.version))
    assert store.current == NO_CONFIG == PushedConfig(0, "{}", None)
    first = store.apply(prepare(EXAMPLE, "mesh.yaml"), T0)
    assert (first.changed, first.current.version, first.current.applied_at) == (True, 1, T0)
    assert first.current.canonical_json == parse_text(EXAMPLE).canonical_json()
    assert store.config == parse_text(EXAMPLE)
    # The same content, written differently (comments gone, keys reordered): unchanged.
    same = store.apply(prepare("# a comment\n" + EXAMPLE, "other.yaml"), T0 + 5)
    assert (same.changed, same.current) == (False, first.current)
    second = store.apply(prepare(CHANGED, "mesh.yaml"), T0 + 10)
    assert (second.changed, second.current.version, second.current.applied_at) == (
        True, 2, T0 + 10)
    assert heard == [1, 2]


def test_next_version_is_the_pure_decision() -> None:
    empty = Prepared(MeshConfig(), "{}")
    assert next_version(NO_CONFIG, empty, T0) is None  # no rules is version 0's content
    one = Prepared(parse_text(EXAMPLE), parse_text(EXAMPLE).canonical_json())
    v1 = next_version(NO_CONFIG, one, T0)
    assert v1 == PushedConfig(1, one.canonical_json, T0)
    assert next_version(v1, one, T0 + 1) is None
    assert next_version(v1, empty, T0 + 1) == PushedConfig(2, "{}", T0 + 1)  # rules removed


def test_an_invalid_config_changes_nothing_and_names_every_error_with_its_line() -> None:
    store = ConfigStore()
    store.apply(prepare(EXAMPLE), T0)
    before = store.current
    with pytest.raises(RegistryError) as info:
        store.apply(prepare(BAD, "bad.yaml"), T0 + 1)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message.splitlines() == [
        ("bad.yaml:3: services.orders.timeout: timeout '2' is not a duration: expected a number "
        "and a unit: ms, s, m or h (e.g. 250ms, 1.5s, 2m); a bare number has no unit: write 2s "
        "or 2ms"),
        ("bad.yaml:5: services.orders.routes[0].to: unknown subset 'stable': the service's "
        "subsets are none")]
    assert store.current is before


def test_warnings_name_subsets_that_select_no_registered_instance() -> None:
    known = known_instances([Instance("orders", "o1", "10.0.0.1:1", labels=(("version", "v1"),)),
                             Instance("orders", "o2", "10.0.0.2:1", labels=(("version", "v1"),))])
    assert known == {"orders": [{"version": "v1"}, {"version": "v1"}]}
    ready = prepare(EXAMPLE, "mesh.yaml", known)
    assert ready.warnings == (("mesh.yaml:8: warning: services.orders.subsets.canary: selects no "
                              "instance of orders today (labels version=v2)"),)
    assert prepare(EXAMPLE, "mesh.yaml").warnings == ()  # nothing known, nothing said


def test_a_client_only_sidecar_is_no_instance_a_subset_selects() -> None:
    client = Instance("orders", "host:15001", "127.0.0.1:15001",
                      labels=(("grpcmesh.io/role", "client"), ("version", "v2")))
    known = known_instances([Instance("orders", "o1", "10.0.0.1:1",
                                      labels=(("version", "v1"),)), client])
    assert known == {"orders": [{"version": "v1"}]}
    assert len(prepare(EXAMPLE, "mesh.yaml", known).warnings) == 1  # canary selects none


def test_warnings_name_mesh_services_whose_calls_an_external_service_takes() -> None:
    serving = serving_protos([Instance("forecast", "f1", "10.0.0.1:1",
                                       proto_services=("weather.v1.Forecast", "x.v1.X")),
                              Instance("other", "o1", "10.0.0.2:1", proto_services=("x.v1.X",))])
    assert serving == {"weather.v1.Forecast": ["forecast"], "x.v1.X": ["forecast", "other"]}
    ready = prepare(EXAMPLE, "mesh.yaml", None, serving)
    assert [w.split(": ")[2] for w in ready.warnings] == ["external.weather.proto_services"]


def test_a_canonical_form_over_the_limit_is_refused_with_its_size() -> None:
    # 24 bytes of YAML per fault become 42 of JSON: under 1 MiB of YAML, over 1 MiB of JSON.
    text = "services:\n  orders:\n    faults:\n" + "      - delay: {duration: 1s}\n" * 30_000
    assert len(text) < 1024 * 1024
    with pytest.raises(RegistryError) as info:
        prepare(text, "big.yaml")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message.startswith("big.yaml: the config's canonical form (JSON, "
                                         "defaults filled in) has 12")
    assert f"more than the {MAX_CANONICAL_BYTES} bytes (1 MiB)" in info.value.message


def test_error_details_fit_in_the_trailers_and_count_what_they_leave_out() -> None:
    lines = [f"mesh.yaml:{i}: services.s{i}.timeout: expected a duration" for i in range(1000)]
    details = error_details(lines)
    kept = details.splitlines()
    assert len(details.encode()) + 2 * (len(kept) - 1) <= 6 * 1024  # newlines: %0A
    assert kept[:-1] == lines[:len(kept) - 1]
    assert kept[-1] == (f"... and {1000 - len(kept) + 1} more errors (grpcmesh config check "
                        "FILE lists them all)")
    assert error_details(lines[:3]) == "\n".join(lines[:3])
    # Non-ASCII text is percent-encoded, three bytes a byte: counted as such.
    wide = error_details(["é" * 1000] * 4)
    assert wide.splitlines()[1].startswith("... and 3 more errors")


def test_the_source_name_is_one_printable_line_of_bounded_length() -> None:
    assert clean_source("mesh.yaml") == "mesh.yaml"
    assert clean_source("") == "config"
    assert clean_source("a\nb") == "a?b"
    long = clean_source("/x" * 500)
    assert len(long) == 256 and long.startswith("...") and long.endswith("/x")


def test_persistence_keeps_the_version_and_a_restart_reads_it_back() -> None:
    disk = MemoryConfigPersistence()
    first = ConfigStore(disk)
    first.apply(prepare(EXAMPLE), T0)
    first.apply(prepare(EXAMPLE), T0 + 1)  # unchanged: not written again
    assert disk.saves == 1
    again = ConfigStore(disk)
    assert again.current == PushedConfig(1, parse_text(EXAMPLE).canonical_json(), T0)
    assert again.config == parse_text(EXAMPLE)
    assert again.apply(prepare(EXAMPLE), T0 + 2).changed is False
    assert again.apply(prepare(CHANGED), T0 + 3).current.version == 2


def test_a_stored_config_this_registry_cannot_read_stops_it() -> None:
    newer = PushedConfig(4, '{"services":{"orders":{"mirror":{"percent":5}}}}', T0)
    with pytest.raises(ValueError, match=r"the stored config cannot be read by this registry: "
                                         r"stored config version 4: services\.orders: "
                                         r"unknown key 'mirror'"):
        ConfigStore(MemoryConfigPersistence(newer))
    with pytest.raises(ValueError, match=r"stored config \(version 2\) is not JSON"):
        ConfigStore(MemoryConfigPersistence(PushedConfig(2, "{", T0)))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[list[SqlitePersistence]]:
    opened: list[SqlitePersistence] = []
    yield opened
    for p in opened:
        p.close()


def test_sqlite_round_trip(tmp_path: Path, db: list[SqlitePersistence]) -> None:
    path = str(tmp_path / "registry.db")
    db.append(SqlitePersistence(path))
    assert db[0].load_config() is None
    store = ConfigStore(db[0])
    store.apply(prepare(EXAMPLE), T0)
    store.apply(prepare(CHANGED), T0 + 1.5)
    db.append(SqlitePersistence(path))
    after = ConfigStore(db[1])
    assert after.current == PushedConfig(2, parse_text(CHANGED).canonical_json(), T0 + 1.5)
    assert after.config == parse_text(CHANGED)


def test_sqlite_file_from_before_configs_gains_the_table(
        tmp_path: Path, db: list[SqlitePersistence]) -> None:
    import sqlite3

    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE instances (service TEXT NOT NULL, instance_id TEXT NOT NULL, "
                 "address TEXT NOT NULL, proto_services TEXT NOT NULL, labels TEXT NOT NULL, "
                 "owner TEXT NOT NULL, methods TEXT NOT NULL DEFAULT '[]', "
                 "PRIMARY KEY (service, instance_id))")
    conn.commit()
    conn.close()
    db.append(SqlitePersistence(path))
    assert ConfigStore(db[0]).current == NO_CONFIG
