"""The config a sidecar runs, without sockets: a bad push never replaces a good config."""
from __future__ import annotations

import asyncio
import logging

import pytest

from grpcmesh.config import MeshConfig, parse_text
from grpcmesh.registry.model import PushedConfig
from grpcmesh.sidecar_config import ConfigInForce, LiveConfig, digest_of, read_pushed
from tests.config.support import EXAMPLE

T0 = 1_700_000_000.0
GOOD = PushedConfig(1, parse_text(EXAMPLE).canonical_json(), T0)
NEWER = PushedConfig(2, '{"services":{"orders":{"mirror":{"percent":5}}}}', T0 + 1)


def test_starts_with_version_0_and_no_rules() -> None:
    live = LiveConfig()
    assert live.current == ConfigInForce(0, MeshConfig(), digest_of("{}"), None)
    assert live.current.to_json() == {"version": 0, "applied_at": None,
                                      "digest": MeshConfig().digest(), "config": {}}
    assert not live.is_new(PushedConfig(0))  # an empty registry changes nothing


def test_take_puts_a_config_in_force_and_tells_every_listener() -> None:
    live = LiveConfig()
    heard: list[int] = []

    def broken(c: ConfigInForce) -> None:
        raise RuntimeError("a bug in a hook")
    live.listeners += [broken, lambda c: heard.append(c.version)]
    assert live.is_new(GOOD)
    taken = live.take(GOOD, read_pushed(GOOD), T0 + 0.5)
    assert heard == [1]  # the broken hook did not keep it from the next one
    assert live.current is taken
    assert taken.to_json() == {"version": 1, "applied_at": "2023-11-14T22:13:20.500Z",
                               "digest": parse_text(EXAMPLE).digest(),
                               "config": parse_text(EXAMPLE).to_dict()}
    assert not live.is_new(GOOD)


def test_a_config_the_sidecar_cannot_read_is_refused_and_the_old_one_stays(
        caplog: pytest.LogCaptureFixture) -> None:
    live = LiveConfig()
    live.take(GOOD, read_pushed(GOOD), T0)
    with pytest.raises(ValueError,
                       match=r"config version 2: services\.orders: unknown key 'mirror'"):
        read_pushed(NEWER)
    with pytest.raises(ValueError, match="not JSON"):
        read_pushed(PushedConfig(3, "{"))
    with caplog.at_level(logging.WARNING):
        live.refuse(NEWER, ValueError("unknown key"))
    assert "ignoring mesh config version 2 from the registry, which this sidecar cannot read " \
           "(keeping version 1): unknown key" in caplog.text
    assert live.current.version == 1
    assert not live.is_new(NEWER)  # not parsed again on every reconnect
    # A restarted registry (memory store) counting from 0 again is followed: it is in charge.
    assert live.is_new(PushedConfig(0))


@pytest.mark.asyncio
@pytest.mark.timeout(5)
async def test_follow_parses_pushes_and_skips_a_bad_one() -> None:
    live = LiveConfig()
    versions: list[int] = []
    taken = asyncio.Event()

    def heard(c: ConfigInForce) -> None:
        versions.append(c.version)
        taken.set()
    live.listeners.append(heard)
    task = asyncio.get_running_loop().create_task(live.follow())
    try:
        live.push(GOOD)
        await asyncio.wait_for(taken.wait(), 2)
        taken.clear()
        live.push(NEWER)  # refused (parsed in a thread): version 1 stays
        async with asyncio.timeout(2):
            while live.is_new(NEWER):
                await asyncio.sleep(0.01)
        assert live.current.version == 1
        live.push(GOOD)  # the same again: nothing to do
        changed = PushedConfig(3, parse_text(EXAMPLE.replace("2s", "3s")).canonical_json(), T0)
        live.push(changed)
        await asyncio.wait_for(taken.wait(), 2)
        assert versions == [1, 3]  # the same config again changed nothing
        assert live.current.config == parse_text(EXAMPLE.replace("2s", "3s"))
    finally:
        task.cancel()
