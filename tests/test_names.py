"""Validation of user-given names: each error names the field, the value and what was expected."""
from __future__ import annotations

import re

import pytest

from grpcmesh import names


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("orders.default.svc:443", ("orders.default.svc", 443)),
    ("localhost:1", ("localhost", 1)),
    ("host:65535", ("host", 65535)),
    ("[::1]:80", ("[::1]", 80)),
    ("[2001:db8::7]:50051", ("[2001:db8::7]", 50051)),
])
def test_parse_address_accepts(text: str, expected: tuple[str, int]) -> None:
    assert names.parse_address(text) == expected
    assert names.check_address(text) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("localhost", "address 'localhost' is not HOST:PORT (e.g. 127.0.0.1:8080)"),
    (":80", "address ':80' is not HOST:PORT"),
    ("", "address '' is not HOST:PORT"),
    ("host:0", "address 'host:0' has port '0': expected 1-65535"),
    ("host:65536", "address 'host:65536' has port '65536': expected 1-65535"),
    ("host:99999", "address 'host:99999' has port '99999'"),
    ("host:", "address 'host:' has port ''"),
    ("host:http", "address 'host:http' has port 'http'"),
    ("host:-1", "address 'host:-1' has port '-1'"),
    ("host:+80", "address 'host:+80' has port '+80'"),
    ("host: 80", "address 'host: 80' has port ' 80'"),
    # Non-ASCII digits pass str.isdigit(); they are not a port anyone can dial.
    ("host:\u00b2", "address 'host:\u00b2' has port '\u00b2'"),
    ("host:\uff18\uff10", "address 'host:\uff18\uff10' has port '\uff18\uff10'"),
    ("::1:80", "address '::1:80' has an invalid host '::1'"),
    ("[::1]", "address '[::1]' has port '1]'"),
    ("[::g]:80", "address '[::g]:80' has an invalid IPv6 host '[::g]'"),
    ("[10.0.0.1]:80", "address '[10.0.0.1]:80' has an invalid IPv6 host '[10.0.0.1]'"),
    ("bad_host:80", "address 'bad_host:80' has an invalid host 'bad_host'"),
    ("a..b:80", "address 'a..b:80' has an invalid host 'a..b'"),
])
def test_parse_address_rejects(text: str, expected: str) -> None:
    with pytest.raises(ValueError) as err:
        names.parse_address(text)
    assert str(err.value).startswith(expected)


def test_parse_address_names_the_given_field() -> None:
    with pytest.raises(ValueError) as err:
        names.parse_address("nowhere", "--upstream")
    assert str(err.value) == "--upstream 'nowhere' is not HOST:PORT (e.g. 127.0.0.1:8080)"


@pytest.mark.parametrize(("text", "expected"), [
    ("version=v2", ("version", "v2")),
    ("app.kubernetes.io/name=orders", ("app.kubernetes.io/name", "orders")),
    ("expr=a=b", ("expr", "a=b")),
    ("empty=", ("empty", "")),
    ("k=" + "x" * 253, ("k", "x" * 253)),
])
def test_parse_label_accepts(text: str, expected: tuple[str, str]) -> None:
    assert names.parse_label(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("version", "--label 'version' is not KEY=VALUE (e.g. version=v2)"),
    ("", "--label '' is not KEY=VALUE"),
    ("=v2", "--label key '' is invalid"),
    ("-zone=eu", "--label key '-zone' is invalid"),
    ("zone-=eu", "--label key 'zone-' is invalid"),
    ("has space=x", "--label key 'has space' is invalid"),
    ("k" * 64 + "=x", f"--label key '{'k' * 64}' is invalid"),
    ("k=a\tb", "--label[k] value 'a\\tb' must be printable and at most 253 chars"),
    ("k=" + "x" * 254, "--label[k] value 'xxx"),
])
def test_parse_label_rejects(text: str, expected: str) -> None:
    with pytest.raises(ValueError) as err:
        names.parse_label(text)
    assert str(err.value).startswith(expected)


def test_parse_label_names_the_given_field() -> None:
    with pytest.raises(ValueError) as err:
        names.parse_label("x", "labels")
    assert str(err.value).startswith("labels 'x' is not KEY=VALUE")


@pytest.mark.parametrize(("value", "ok"), [
    ("orders", True), ("orders-v2.prod", True), ("a", True), ("9", True), ("a" * 63, True),
    ("", False), ("Orders", False), ("-orders", False), ("orders.", False), ("a" * 64, False),
    ("orders\n", False), ("ord_ers", False),
])
def test_check_service(value: str, ok: bool) -> None:
    if ok:
        assert names.check_service(value) == value
    else:
        with pytest.raises(ValueError, match=r"^service .* is not a valid mesh service name"):
            names.check_service(value)


@pytest.mark.parametrize(("value", "ok"), [
    ("shop.v1.Orders", True), ("Orders", True), ("_x.y_1", True),
    ("shop..Orders", False), (".shop.Orders", False), ("shop.Orders.", False),
    ("shop.1v.Orders", False), ("shop/Orders", False), ("", False),
])
def test_check_proto_service(value: str, ok: bool) -> None:
    if ok:
        assert names.check_proto_service(value) == value
    else:
        with pytest.raises(ValueError, match="is not a fully-qualified proto service name"):
            names.check_proto_service(value)


@pytest.mark.parametrize(("value", "ok"), [
    ("a1", True), ("10.0.0.1:8080", True), ("pod@node", True), ("v6-[::1]:80", True),
    ("x" * 128, True), ("", False), ("-a", False), ("a b", False), ("x" * 129, False),
    ("[::1]:80", True),  # a bare IPv6 address: the default instance id is the address
])
def test_check_instance_id(value: str, ok: bool) -> None:
    if ok:
        assert names.check_instance_id(value) == value
    else:
        with pytest.raises(ValueError, match="^instance_id .* is not a valid instance id"):
            names.check_instance_id(value)


@pytest.mark.parametrize(("text", "expected"), [
    ("/shop.v1.Orders/Get", ("shop.v1.Orders", "Get")),
    ("/shop.v1.Orders/*", ("shop.v1.Orders", None)),
    ("/Echo/_x1", ("Echo", "_x1")),
])
def test_parse_method_pattern(text: str, expected: tuple[str, str | None]) -> None:
    assert names.parse_method_pattern(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("shop.v1.Orders/Get", "is not a method path"),
    ("/shop.v1.Orders", "is not a method path"),
    ("/shop.v1.Orders/Get/x", "is not a method path"),
    ("//Get", "is not a method path"),
    ("/*", "is not a method path"),
    ("/shop.v1.Orders/", "is not a method path"),
    ("/shop-v1.Orders/Get", "has an invalid service 'shop-v1.Orders'"),
    ("/shop.v1.Orders/Ge*", "has an invalid method name 'Ge*'"),
])
def test_parse_method_pattern_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        names.parse_method_pattern(text)


def test_metadata_names() -> None:
    assert names.check_metadata_name("x-canary_1.a") == "x-canary_1.a"
    for bad, message in (("X-Canary", "write 'x-canary'"), (":authority", "expected 1-255"),
                         ("x y", "expected 1-255"), ("", "expected 1-255"),
                         ("trace-bin", "binary metadata")):
        with pytest.raises(ValueError, match=re.escape(message)):
            names.check_metadata_name(bad)


def test_hostnames_and_subset_names() -> None:
    assert names.check_hostname("api.weather.example") == "api.weather.example"
    for bad in ("a b", "-a.com", "a..b", "x" * 254, ""):
        with pytest.raises(ValueError, match="is not a hostname"):
            names.check_hostname(bad)
    assert names.check_subset_name("canary-2") == "canary-2"
    with pytest.raises(ValueError, match="subset name 'Canary' is invalid"):
        names.check_subset_name("Canary")
