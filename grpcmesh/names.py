"""Validation of the names and addresses users give the mesh.

Each check raises ValueError with a message naming the field, the value and what was expected,
so the registry, the CLI and the sidecar report bad input the same way.
"""
from __future__ import annotations

import ipaddress
import re

_SERVICE = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?\Z")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9\[][A-Za-z0-9._:@\[\]-]{0,127}\Z")
_PROTO_SERVICE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\Z")
_LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?\Z")
_METHOD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_METADATA_NAME = re.compile(r"[0-9a-z_.-]{1,255}\Z")  # gRPC's header-name characters


def check_service(value: str, field: str = "service") -> str:
    if not _SERVICE.match(value):
        raise ValueError(
            f"{field} {value!r} is not a valid mesh service name: expected 1-63 lowercase "
            "letters, digits, '-' or '.', starting and ending with a letter or digit"
        )
    return value


def check_subset_name(value: str, field: str = "subset") -> str:
    if not _SERVICE.match(value):
        raise ValueError(
            f"{field} name {value!r} is invalid: expected 1-63 lowercase letters, digits, '-' or "
            "'.', starting and ending with a letter or digit"
        )
    return value


def check_instance_id(value: str, field: str = "instance_id") -> str:
    if not _INSTANCE_ID.match(value):
        raise ValueError(
            f"{field} {value!r} is not a valid instance id: expected 1-128 characters from "
            "letters, digits and '._:@-[]', starting with a letter, digit or '['"
        )
    return value


def check_proto_service(value: str, field: str = "proto_services") -> str:
    if not _PROTO_SERVICE.match(value):
        raise ValueError(
            f"{field} {value!r} is not a fully-qualified proto service name: expected "
            "dot-separated identifiers such as 'shop.v1.Orders'"
        )
    return value


def parse_method_pattern(value: str, field: str = "method") -> tuple[str, str | None]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method'); '/pkg.Service/*' (every method of
    the service) -> ('pkg.Service', None). The method path grpc puts in :path, or a service."""
    parts = value.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        raise ValueError(f"{field} {value!r} is not a method path: expected /package.Service/Method "
                         "or /package.Service/* (every method of the service)")
    service, method = parts[1], parts[2]
    if not _PROTO_SERVICE.match(service):
        raise ValueError(f"{field} {value!r} has an invalid service {service!r}: expected "
                         "dot-separated identifiers such as 'shop.v1.Orders'")
    if method == "*":
        return service, None
    if not _METHOD_NAME.match(method):
        raise ValueError(f"{field} {value!r} has an invalid method name {method!r}: expected an "
                         "identifier such as 'Get', or * for every method")
    return service, method


def check_metadata_name(value: str, field: str = "metadata") -> str:
    """A request metadata (HTTP/2 header) name that rules may match on."""
    if value.endswith("-bin"):
        raise ValueError(f"{field} name {value!r} is binary metadata (-bin), whose values "
                         "cannot be matched as text")
    if not _METADATA_NAME.match(value):
        hint = (f": write {value.lower()!r} (header names are lowercase in HTTP/2)"
                if _METADATA_NAME.match(value.lower()) else
                ": expected 1-255 lowercase letters, digits, '-', '_' or '.'")
        raise ValueError(f"{field} name {value!r} is not a valid metadata name{hint}")
    return value


def check_hostname(value: str, field: str = "host") -> str:
    if not _HOSTNAME.match(value) or len(value) > 253:
        raise ValueError(f"{field} {value!r} is not a hostname: expected labels of letters, "
                         "digits and '-' separated by dots, such as 'api.example.com'")
    return value


def parse_address(value: str, field: str = "address", *, listen: bool = False
                  ) -> tuple[str, int]:
    """Split HOST:PORT ([v6]:PORT for IPv6) and check both parts; port 0 only when listening."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{field} {value!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    if not (port_text.isascii() and port_text.isdigit()) or not (0 if listen else 1) <= int(port_text) < 65536:
        lowest = "0 (any free port)" if listen else "1"
        raise ValueError(f"{field} {value!r} has port {port_text!r}: expected {lowest}-65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{field} {value!r} has an invalid IPv6 host {host!r}") from None
    elif not _HOSTNAME.match(host):
        raise ValueError(
            f"{field} {value!r} has an invalid host {host!r}: expected an IPv4 address, "
            "a hostname or [IPv6]"
        )
    return host, int(port_text)


def check_address(value: str, field: str = "address") -> str:
    parse_address(value, field)
    return value


def check_listen_address(value: str, field: str = "listen address") -> str:
    parse_address(value, field, listen=True)
    return value


def check_label(key: str, value: str, field: str = "labels") -> None:
    if not _LABEL_KEY.match(key):
        raise ValueError(
            f"{field} key {key!r} is invalid: expected 1-63 letters, digits or '._/-', "
            "starting and ending with a letter or digit"
        )
    if len(value) > 253 or not value.isprintable():
        raise ValueError(f"{field}[{key}] value {value!r} must be printable and at most 253 chars")


def parse_label(text: str, field: str = "--label") -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{field} {text!r} is not KEY=VALUE (e.g. version=v2)")
    check_label(key, value, field)
    return key, value
