"""HTTP fixtures shared by every test suite (loaded from tests/conftest.py).

- ``feed_server``: a running FeedServer on 127.0.0.2 (ephemeral port), fresh per test.
- ``canary``: a Canary on 127.0.0.1; the test fails at teardown if anything reached it.
- ``connect_spy``: records every TCP connection aiohttp opens as (host, port) and refuses,
  without any packet, any destination that is not loopback. Use it to assert that nothing
  was connected ("no packet leaves") and as a safety net for the no-outside-network rule.
- ``FEED_SERVER_ALLOW``: the allow list (``[fetch] allow_hosts``) that lets the fetcher
  reach ``feed_server`` and nothing else on loopback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import aiohappyeyeballs
import pytest

from tests.support.feedserver import Canary, FeedServer

FEED_SERVER_ALLOW: tuple[str, ...] = ("127.0.0.2/32",)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def canary() -> Iterator[Canary]:
    with Canary() as server:
        yield server
        hits = server.requests
    assert not hits, f"the canary on 127.0.0.1 was reached: {hits}"


@pytest.fixture
def connect_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (host, port) aiohttp tried to connect to during the test, in order."""
    attempts: list[tuple[str, int]] = []
    real_start_connection = aiohappyeyeballs.start_connection

    async def spy(*args: object, **kwargs: object) -> object:
        addr_infos = kwargs["addr_infos"] if "addr_infos" in kwargs else args[0]
        targets = [(str(info[4][0]), int(info[4][1])) for info in addr_infos]  # type: ignore[attr-defined]
        attempts.extend(targets)
        outside = [t for t in targets if not ipaddress.ip_address(t[0].split("%")[0]).is_loopback]
        if outside:
            raise OSError(f"test refused to connect outside loopback: {outside}")
        return await real_start_connection(*args, **kwargs)  # type: ignore[arg-type]

    # aiohttp's connector calls aiohappyeyeballs.start_connection through the module.
    monkeypatch.setattr(aiohappyeyeballs, "start_connection", spy)
    return attempts
