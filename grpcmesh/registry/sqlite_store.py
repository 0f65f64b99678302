"""Registry persistence in one SQLite file, so registry-checked instances and the mesh config
survive a restart.

Only instances without a lease are written (the store decides which): leased instances
re-register themselves when their keep-alive is refused, but nobody would re-register a
registry-checked one. Methods (kinds and idempotency levels) are stored with the instance, as a
JSON list, since `grpcmesh register` read them from the app's reflection once and sidecars need
them (which methods are safe to retry). A method written before levels were stored has no
`idempotency_level` key and reads as unknown (not idempotent) until registered again. The
admin address (a sidecar's; rarely set on a registry-checked instance) is stored too. Health is
not stored; the store reloads every instance as UNKNOWN until its checker has looked again.
SQLite from the standard library keeps the registry free of a database server; the connection
is in autocommit mode, so each save or delete is committed on its own.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any

import grpc

from grpcmesh.registry.model import Idempotency, Instance, Method, PushedConfig, RegistryError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    service TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    address TEXT NOT NULL,
    proto_services TEXT NOT NULL,
    labels TEXT NOT NULL,
    owner TEXT NOT NULL,
    methods TEXT NOT NULL DEFAULT '[]',
    admin_address TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (service, instance_id)
)
"""
_CONFIG_SCHEMA = """
CREATE TABLE IF NOT EXISTS mesh_config (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    canonical_json TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""
_COLUMNS = ("service, instance_id, address, proto_services, labels, owner, methods, "
            "admin_address")
# Columns that files written by older versions lack, added on open (in this order).
_ADDED_COLUMNS = {"methods": "TEXT NOT NULL DEFAULT '[]'",
                  "admin_address": "TEXT NOT NULL DEFAULT ''"}
_FIRST_COLUMNS = {"service", "instance_id", "address", "proto_services", "labels", "owner"}


class SqlitePersistence:
    """The registry store's Persistence, backed by the SQLite database at path."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._conn = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as err:
            raise self._error("cannot open", err) from None
        try:
            self._conn.execute(_SCHEMA)
            self._conn.execute(_CONFIG_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(instances)")}
            if columns >= _FIRST_COLUMNS:
                for name, kind in _ADDED_COLUMNS.items():
                    if name not in columns:
                        self._conn.execute(f"ALTER TABLE instances ADD COLUMN {name} {kind}")
            self._conn.execute(f"SELECT {_COLUMNS} FROM instances LIMIT 0")
            # Fail now, not at the first registration, if the file is read-only.
            self._conn.execute("DELETE FROM instances WHERE 0")
            self._conn.execute("DELETE FROM mesh_config WHERE 0")
        except sqlite3.Error as err:
            self._conn.close()
            raise self._error("cannot use it as the registry database", err) from None

    def _error(self, what: str, err: sqlite3.Error) -> ValueError:
        return ValueError(f"--store sqlite:{self.path}: {what}: {err}")

    def load(self) -> list[Instance]:
        try:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM instances ORDER BY service, instance_id").fetchall()
            return [
                Instance(service=service, instance_id=instance_id, address=address,
                         proto_services=tuple(json.loads(protos)),
                         labels=tuple(sorted(json.loads(labels).items())), owner=owner,
                         methods=tuple(_method(m) for m in json.loads(methods)),
                         admin_address=_text(admin_address))
                for service, instance_id, address, protos, labels, owner, methods, admin_address
                in rows
            ]
        except (sqlite3.Error, ValueError, TypeError, AttributeError, KeyError) as err:
            raise ValueError(f"--store sqlite:{self.path}: cannot read instances: {err}") from None

    def save(self, instance: Instance) -> None:
        self._conn.execute(
            f"INSERT OR REPLACE INTO instances ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (instance.service, instance.instance_id, instance.address,
             json.dumps(list(instance.proto_services)),
             json.dumps(dict(instance.labels), sort_keys=True), instance.owner,
             json.dumps([_method_row(m) for m in instance.methods]), instance.admin_address),
        )

    def delete(self, key: tuple[str, str]) -> None:
        self._conn.execute("DELETE FROM instances WHERE service = ? AND instance_id = ?", key)

    def load_config(self) -> PushedConfig | None:
        try:
            row = self._conn.execute(
                "SELECT version, canonical_json, applied_at FROM mesh_config").fetchone()
        except sqlite3.Error as err:
            raise self._error("cannot read the mesh config", err) from None
        if row is None:
            return None
        version, canonical, applied_at = row
        if not (isinstance(version, int) and version > 0 and isinstance(canonical, str)
                and isinstance(applied_at, float)):
            raise ValueError(f"--store sqlite:{self.path}: malformed mesh config row "
                             f"(version {version!r})")
        return PushedConfig(version, canonical, applied_at)

    def save_config(self, config: PushedConfig) -> None:
        try:
            self._conn.execute(
                "INSERT OR REPLACE INTO mesh_config (id, version, canonical_json, applied_at) "
                "VALUES (1, ?, ?, ?)", (config.version, config.canonical_json, config.applied_at))
        except sqlite3.Error as err:  # e.g. the disk is full: nothing is applied
            raise RegistryError(grpc.StatusCode.UNAVAILABLE,
                                f"cannot store config version {config.version} in --store "
                                f"sqlite:{self.path}: {err}") from None

    def close(self) -> None:
        self._conn.close()


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"malformed admin_address {value!r}")
    return value


def _method_row(method: Method) -> dict[str, Any]:
    return {"path": method.path, "client_streaming": method.client_streaming,
            "server_streaming": method.server_streaming,
            "idempotency_level": method.idempotency.name}


def _method(row: dict[str, Any]) -> Method:
    kinds = (row["client_streaming"], row["server_streaming"])
    level = row.get("idempotency_level", Idempotency.UNKNOWN.name)  # absent: an older file
    if not isinstance(row["path"], str) or not all(isinstance(k, bool) for k in kinds) or \
            not isinstance(level, str):
        raise ValueError(f"malformed method {row!r}")
    # A level this version does not know (a newer one wrote it) is unknown: not idempotent.
    return Method(row["path"], *kinds, Idempotency.__members__.get(level, Idempotency.UNKNOWN))
