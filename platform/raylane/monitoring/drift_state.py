"""The current drift state of a pipeline, kept in Redis for other tools.

One JSON string per pipeline at ``raylane:drift:<pipeline>`` (no TTL)::

    {"open": true, "model_name": "fraud", "model_version": "3", "drift_share": 0.62,
     "threshold": 0.5, "drifted_columns": ["amount", "score"],
     "window_end": "2026-11-26T17:00:00+00:00", "updated_at": "2026-11-26T17:00:02+00:00"}

The drift monitor writes it after every evaluated window. ``open`` turns true with the
first drifting window and stays true until ``clear_after`` consecutive windows
(DriftConfig, default 1) are clean; ``raylane promote`` refuses to move an alias while
it is open (unless forced), and ``raylane drift status <pipeline>`` shows it. A clean
window also refreshes the other fields, so they always describe the latest window.

Beside it, ``raylane:drift:<pipeline>:windows`` is a capped list (newest first, the last
:data:`WINDOWS_KEPT`) of every evaluated window: its verdict, each column's test score and
the file name of its report (drifted windows only), for the dashboard's per-window view.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis

from raylane.errors import DependencyError
from raylane.redaction import mask_url, mask_urls
from raylane.redis_clients import connect_sync

__all__ = [
    "WINDOWS_KEPT",
    "DriftState",
    "drift_key",
    "read_state",
    "read_state_async",
    "read_windows",
    "record_window_async",
    "windows_key",
    "write_state_async",
]

_PREFIX = "raylane:drift:"

#: Evaluated windows kept per pipeline in ``raylane:drift:<pipeline>:windows``.
WINDOWS_KEPT = 200


def drift_key(pipeline: str) -> str:
    """Redis key of a pipeline's drift state."""
    return f"{_PREFIX}{pipeline}"


def windows_key(pipeline: str) -> str:
    """Redis key of a pipeline's evaluated windows (newest first)."""
    return f"{_PREFIX}{pipeline}:windows"


@dataclass(frozen=True)
class DriftState:
    """What the promote gate and `raylane drift status` read (exactly these fields)."""

    open: bool
    model_name: str = ""
    model_version: str = ""
    drift_share: float = 0.0
    threshold: float = 0.0
    drifted_columns: list[str] = field(default_factory=list)
    window_end: str = ""
    updated_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> DriftState:
        doc: dict[str, Any] = json.loads(raw)
        return cls(
            open=bool(doc["open"]),
            model_name=str(doc["model_name"]),
            model_version=str(doc["model_version"]),
            drift_share=float(doc["drift_share"]),
            threshold=float(doc["threshold"]),
            drifted_columns=[str(c) for c in doc.get("drifted_columns", [])],
            window_end=str(doc.get("window_end", "")),
            updated_at=str(doc.get("updated_at", "")),
        )


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC string."""
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).isoformat()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


async def write_state_async(client: aioredis.Redis, pipeline: str, state: DriftState) -> None:
    try:
        await client.set(drift_key(pipeline), state.to_json())
    except redis.RedisError as e:
        raise DependencyError(
            f"writing the drift state of {pipeline} to Redis failed: {e}", stage="drift"
        ) from e


async def read_state_async(client: aioredis.Redis, pipeline: str) -> DriftState | None:
    try:
        raw = await client.get(drift_key(pipeline))
    except redis.RedisError as e:
        raise DependencyError(
            f"reading the drift state of {pipeline} from Redis failed: {e}", stage="drift"
        ) from e
    return DriftState.from_json(raw) if raw else None


def read_state(redis_url: str, pipeline: str) -> DriftState | None:
    """The pipeline's drift state, or None when no window has been evaluated yet."""
    client = connect_sync(redis_url)
    try:
        raw = client.get(drift_key(pipeline))
    except redis.RedisError as e:
        raise DependencyError(
            f"reading the drift state of {pipeline} from Redis at {mask_url(redis_url)} "
            f"failed: {mask_urls(str(e))}; "
            "is Redis up (`raylane dev status`)?",
            stage="drift",
        ) from e
    finally:
        client.close()
    return DriftState.from_json(raw) if raw else None  # type: ignore[arg-type]


async def record_window_async(
    client: aioredis.Redis, pipeline: str, record: dict[str, Any]
) -> None:
    """Prepend one evaluated window's record to the capped list (one round trip)."""
    key = windows_key(pipeline)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.lpush(key, json.dumps(record, separators=(",", ":")))
        pipe.ltrim(key, 0, WINDOWS_KEPT - 1)
        await pipe.execute()
    except redis.RedisError as e:
        raise DependencyError(
            f"recording a drift window of {pipeline} in Redis failed: {e}", stage="drift"
        ) from e


def read_windows(redis_url: str, pipeline: str, limit: int = WINDOWS_KEPT) -> list[dict[str, Any]]:
    """The evaluated windows of a pipeline, newest first (a window recorded twice, after a
    retried write, once)."""
    client = connect_sync(redis_url, decode_responses=True)
    try:
        raw = client.lrange(windows_key(pipeline), 0, limit - 1)
    except redis.RedisError as e:
        raise DependencyError(
            f"reading the drift windows of {pipeline} from Redis at {mask_url(redis_url)} "
            f"failed: {mask_urls(str(e))}; is Redis up (`raylane dev status`)?",
            stage="drift",
        ) from e
    finally:
        client.close()
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, int]] = set()
    for item in raw:  # type: ignore[union-attr]
        try:
            rec = json.loads(item)
            key = (str(rec["model_version"]), str(rec["window_end"]), int(rec["count"]))
        except (ValueError, KeyError, TypeError):
            continue
        if key not in seen:
            seen.add(key)
            out.append(rec)
    return out
