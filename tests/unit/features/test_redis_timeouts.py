"""A Redis that accepts connections and never answers fails the call in time (no services:
the 'Redis' is a loopback socket this test opens and never writes to)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from raylane.config import WindowFeature
from raylane.errors import ConfigError, DependencyError
from raylane.features import RedisWindowStore
from raylane.pipeline.breaker import is_outage_error
from raylane.redis_clients import ENV_TIMEOUT, connect, connect_sync, timeout_s


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A listening socket on 127.0.0.1 that accepts (via the backlog) and never replies."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    try:
        yield f"redis://127.0.0.1:{srv.getsockname()[1]}/0"
    finally:
        srv.close()


async def test_window_update_on_a_silent_redis_raises_a_retriable_error(
    silent_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TIMEOUT, "0.2")
    client = connect(silent_redis)
    store = RedisWindowStore(
        client, "t", [WindowFeature(name="n", kind="count", key_fields=("user_id",))]
    )
    event = {"event_id": "e1", "event_time": 1, "user_id": "u1"}
    try:
        # the outer bound only keeps a broken build from hanging the suite
        with pytest.raises(DependencyError, match="Timeout") as info:
            await asyncio.wait_for(store.update_and_read([event]), timeout=30)
    finally:
        await client.aclose()
    assert info.value.retriable and is_outage_error(info.value)


def test_sync_client_times_out_too(silent_redis: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    monkeypatch.setenv(ENV_TIMEOUT, "0.2")
    with pytest.raises(redis.exceptions.TimeoutError):
        connect_sync(silent_redis).get("k")


def test_timeout_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TIMEOUT, raising=False)
    assert timeout_s() == 2.0
    monkeypatch.setenv(ENV_TIMEOUT, "0.5")
    assert timeout_s() == 0.5
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv(ENV_TIMEOUT, bad)
        with pytest.raises(ConfigError, match=ENV_TIMEOUT):
            timeout_s()
