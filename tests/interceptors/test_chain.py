"""The interceptor chain as plain objects, and interceptors in the relay on fake transports."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from grpcmesh.example.apikey import ApiKey
from grpcmesh.interceptors import Answer, CallView, Delay, Interceptor
from grpcmesh.interceptors.chain import Chain, load
from grpcmesh.relay import frames as f
from grpcmesh.relay.record import CallRecord
from tests.relay.test_relay import (
    OK,
    REQUEST,
    RESPONSE,
    Mesh,
    client_status,
    client_trailers,
    message,
)


def view(metadata: list[tuple[str, str]] | None = None) -> CallView:
    return CallView("/pkg.S/M", [*REQUEST, *(metadata or [])], None, "127.0.0.1:5", "svc",
                    "outbound")


class Recording(Interceptor):
    def __init__(self, name: str, seen: list[str], outcome: Answer | Delay | None = None
                 ) -> None:
        self.name = name
        self.seen = seen
        self.outcome = outcome

    def request(self, call: CallView) -> Answer | Delay | None:
        self.seen.append(self.name)
        return self.outcome


def test_the_chain_runs_top_down_and_the_first_answer_ends_it() -> None:
    seen: list[str] = []
    answer = Answer(grpc.StatusCode.PERMISSION_DENIED, "no")
    chain = Chain([Recording("a", seen), Recording("b", seen, answer), Recording("c", seen)])
    assert chain.request(view()) == (answer, 1)
    assert seen == ["a", "b"]
    assert chain.names == ("a", "b", "c")


def test_a_delay_says_where_the_chain_goes_on() -> None:
    seen: list[str] = []
    chain = Chain([Recording("a", seen, Delay(0.5)), Recording("b", seen)])
    outcome, index = chain.request(view())
    assert (outcome, index) == (Delay(0.5), 0)
    assert chain.request(view(), index + 1) == (None, 2)
    assert seen == ["a", "b"]


def test_interceptors_change_metadata_but_not_what_belongs_to_the_relay() -> None:
    call = view([("x-a", "1"), ("x-b", "2")])
    call.set_header("x-a", "one")
    call.remove_header("x-b")
    assert call.changed and call.header("x-a") == "one" and call.header("x-b") is None
    assert ("x-a", "one") in call.metadata() and all(k[0] != ":" for k, _ in call.metadata())
    for name in (":path", "te", "grpc-timeout", "X-Upper", ""):
        with pytest.raises(ValueError, match="interceptors may not set"):
            call.set_header(name, "v")


def test_the_api_key_example() -> None:
    check = ApiKey(frozenset({"k1"}))
    missing = check.request(view())
    assert isinstance(missing, Answer) and missing.code == grpc.StatusCode.UNAUTHENTICATED
    wrong = check.request(view([("x-api-key", "nope")]))
    assert isinstance(wrong, Answer) and "not a known key" in wrong.message
    good = view([("x-api-key", "k1")])
    assert check.request(good) is None and good.header("x-api-key") is None  # not passed on


@pytest.mark.parametrize(("spec", "message"), [
    ("nomodule", "expected MODULE:FACTORY"),
    ("no_such_module_here:f", "cannot import no_such_module_here"),
    ("grpcmesh.example.apikey:missing", "has no callable missing"),
    ("grpcmesh.example.apikey:ApiKey", r"ApiKey\(\) failed: TypeError"),
    ("grpcmesh.example.apikey:__doc__", "has no callable __doc__"),
    ("builtins:object", "returned object, not a grpcmesh.interceptors.Interceptor"),
])
def test_loading_a_bad_interceptor_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load(spec)


def test_load_returns_the_factorys_interceptor() -> None:
    assert isinstance(load("grpcmesh.example.apikey:factory"), ApiKey)


# -- in the relay --------------------------------------------------------------------------


class Everything(Interceptor):
    """Answers calls to /pkg.S/Deny, tags the others, shortens their deadline, and watches."""

    wants_responses = True

    def __init__(self) -> None:
        self.seen_headers: list[list[tuple[str, str]]] = []
        self.seen_trailers: list[list[tuple[str, str]]] = []
        self.records: list[CallRecord] = []

    def request(self, call: CallView) -> Answer | Delay | None:
        if call.method == "/pkg.S/Deny":
            return Answer(grpc.StatusCode.PERMISSION_DENIED, "denied by the test")
        call.set_header("x-tag", "seen")
        call.timeout = 5.0
        return None

    def response_headers(self, call: CallView, headers: list[tuple[str, str]]) -> None:
        self.seen_headers.append(headers)

    def trailers(self, call: CallView, trailers: list[tuple[str, str]]) -> None:
        self.seen_trailers.append(trailers)

    def end(self, call: CallView, record: CallRecord) -> None:
        self.records.append(record)


def upstream_headers(mesh: Mesh) -> list[tuple[str, str]]:
    import hpack
    block = next(p for k, _, _, p in mesh.up_t.frames() if k == f.HEADERS)
    return [(str(k), str(v)) for k, v in hpack.Decoder().decode(block)]


def test_interceptors_in_the_relay_answer_change_and_observe_calls() -> None:
    async def scenario() -> None:
        watcher = Everything()
        mesh = Mesh(interceptors=[watcher])
        deny = [(k, "/pkg.S/Deny" if k == ":path" else v) for k, v in REQUEST]
        mesh.request(1, headers=deny, body=message(b"x"), end=True)
        got = mesh.down_t.frames()
        assert client_status(got) == grpc.StatusCode.PERMISSION_DENIED
        assert dict(client_trailers(got))["grpc-message"] == "denied by the test"
        assert mesh.up_t.frames() == []  # it never went upstream
        mesh.request(3, body=message(b"x"), end=True)
        sent = upstream_headers(mesh)
        assert ("x-tag", "seen") in sent and f.parse_timeout(dict(sent)["grpc-timeout"]) == 5.0
        mesh.respond(mesh.headers(1, RESPONSE), mesh.headers(1, OK, end=True))
        assert client_status(mesh.down_t.frames()) == grpc.StatusCode.OK
        assert watcher.seen_headers == [RESPONSE] and watcher.seen_trailers == [OK]
        assert [(r.code, r.by, r.reason) for r in watcher.records] == [
            (grpc.StatusCode.PERMISSION_DENIED, "proxy", "interceptor Everything"),
            (grpc.StatusCode.OK, "app", "")]
        mesh.assert_clean()

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_a_delayed_call_goes_on_after_its_delay_and_a_reset_meanwhile_ends_it() -> None:
    async def scenario() -> None:
        seen: list[str] = []
        mesh = Mesh(interceptors=[Recording("wait", seen, Delay(0.05)), Recording("next", seen)])
        mesh.request(1, body=message(b"x"), end=True)
        assert mesh.up_t.frames() == [] and seen == ["wait"]
        await asyncio.sleep(0.1)
        assert seen == ["wait", "next"]
        assert [k for k, *_ in mesh.up_t.frames()] == [f.HEADERS, f.DATA]  # buffered DATA too
        mesh.respond(mesh.headers(1, RESPONSE), mesh.headers(1, OK, end=True))
        mesh.request(3, body=message(b"x"))
        mesh.down.data_received(f.rst_stream(3, f.CANCEL))  # gone while it waits
        await asyncio.sleep(0.1)
        assert mesh.up_t.frames() == [] and seen == ["wait", "next", "wait"]
        mesh.assert_clean()

    asyncio.run(asyncio.wait_for(scenario(), 5))


class Broken(Interceptor):
    wants_responses = True

    def request(self, call: CallView) -> Answer | Delay | None:
        raise RuntimeError("bug")

    def trailers(self, call: CallView, trailers: list[tuple[str, str]]) -> None:
        raise RuntimeError("bug")


def test_an_interceptor_that_raises_answers_its_call_with_internal_and_nothing_else_breaks(
        caplog: pytest.LogCaptureFixture) -> None:
    chain = Chain([Broken()])
    outcome, _ = chain.request(view())
    assert isinstance(outcome, Answer) and outcome.code == grpc.StatusCode.INTERNAL
    assert "interceptor Broken failed on /pkg.S/M: RuntimeError" in outcome.message
    chain.trailers(view(), [("grpc-status", "0")])  # logged, not raised
    assert "interceptor Broken failed" in caplog.text
