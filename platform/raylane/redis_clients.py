"""Every Redis client raylane makes, with time-outs on every call.

A Redis that accepts connections but never answers would otherwise hang the loop that
called it: no error, no breaker, health still green. Each client here has a socket
connect and read time-out (``RAYLANE_REDIS_TIMEOUT_S``, default 2 s), so such a Redis fails
the call with a time-out that the feature path turns into a retriable
:class:`~raylane.errors.DependencyError` and the breaker counts.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis

from raylane.errors import ConfigError
from raylane.settings import Settings

__all__ = ["ENV_TIMEOUT", "connect", "connect_sync", "mask_url", "timeout_s"]

ENV_TIMEOUT = "RAYLANE_REDIS_TIMEOUT_S"


def timeout_s() -> float:
    """The socket time-out of every Redis call, in seconds."""
    raw = os.environ.get(ENV_TIMEOUT, "").strip()
    if not raw:
        return 2.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{ENV_TIMEOUT}={raw!r} must be a positive number of seconds")
    return value


def mask_url(url: str) -> str:
    """`url` with any password replaced by ``***`` (safe for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _options(**extra: Any) -> dict[str, Any]:
    t = timeout_s()
    return {"socket_timeout": t, "socket_connect_timeout": t, **extra}


def connect(url: str | None = None, **options: Any) -> aioredis.Redis:
    """An asyncio client (hiredis parser when installed) for `url` or REDIS_URL."""
    return aioredis.Redis.from_url(
        url or Settings.load().redis_url, **_options(health_check_interval=30, **options)
    )


def connect_sync(url: str | None = None, **options: Any) -> redis.Redis:
    """A blocking client for CLI commands and gates, with the same time-outs."""
    return redis.Redis.from_url(url or Settings.load().redis_url, **_options(**options))
