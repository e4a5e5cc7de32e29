"""Topic admin: create missing topics with a given partition count, on Tansu or real Kafka.

Only missing topics are created (listed first), so a client without the create ACL works
against a cluster where the topics exist. Two Tansu 0.6 quirks shape this code: a
metadata request for a missing topic auto-creates it with 4 partitions (so we never
describe before creating), and it accepts ``num_partitions=0`` (so we validate here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from raylane._sync import run_sync
from raylane.errors import StackError
from raylane.kafka.client import KafkaConnection, connection

__all__ = ["delete_topics", "delete_topics_async", "ensure_topics", "ensure_topics_async"]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_RETRIABLE_METADATA = {3, 5}  # UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE: still propagating


def _validate(topics: Sequence[str], partitions: int, replication_factor: int | None) -> list[str]:
    if isinstance(topics, str):
        raise StackError(f"topics must be a sequence of names, not the string {topics!r}")
    if partitions < 1:
        raise StackError(f"partitions ({partitions}) must be >= 1")
    if replication_factor is not None and replication_factor < 1:
        raise StackError(f"replication_factor ({replication_factor}) must be >= 1")
    names: list[str] = []
    for t in topics:
        if not isinstance(t, str) or not t or len(t) > 249 or t in (".", ".."):
            raise StackError(f"invalid topic name {t!r}")
        if t not in names:
            names.append(t)
    return names


def _error_name(code: int) -> str:
    from aiokafka.errors import for_code

    return str(for_code(code).__name__)


async def _partition_counts(admin: Any, topics: list[str], timeout_s: float) -> dict[str, int]:
    """Partition count per topic, retrying while new topics propagate (real Kafka)."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(topics)
        pending = [d for d in described if d["error_code"] in _RETRIABLE_METADATA]
        bad = [d for d in described if d["error_code"] not in _RETRIABLE_METADATA | {0}]
        if bad:
            d = bad[0]
            raise StackError(f"cannot describe topic {d['topic']}: {_error_name(d['error_code'])}")
        if not pending:
            return {d["topic"]: len(d["partitions"]) for d in described}
        if time.monotonic() > deadline:
            raise StackError(
                f"topic {pending[0]['topic']} was created but its metadata did not appear "
                f"within {timeout_s:.0f} s; check the broker logs"
            )
        await asyncio.sleep(0.1)


async def ensure_topics_async(
    bootstrap: str | KafkaConnection,
    topics: Sequence[str],
    partitions: int = 4,
    *,
    replication_factor: int | None = None,
    timeout_s: float = 10.0,
) -> None:
    """Create the topics of ``topics`` that do not exist yet; idempotent.

    New topics get ``partitions`` partitions and ``replication_factor`` replicas (default:
    min(3, number of brokers)). Existing topics are left alone; a different partition count
    is logged as a warning. Raises StackError naming the topic and the broker's error.
    """
    from aiokafka.admin import NewTopic
    from aiokafka.errors import KafkaError

    names = _validate(topics, partitions, replication_factor)
    if not names:
        return
    conn = connection(bootstrap)
    bootstrap = conn.bootstrap
    admin = conn.admin(request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        existing = set(await admin.list_topics())
        missing = [t for t in names if t not in existing]
        if missing:
            rf = replication_factor
            if rf is None:
                rf = min(3, max(1, len((await admin.describe_cluster())["brokers"])))
            resp = await admin.create_topics(
                [NewTopic(t, partitions, rf) for t in missing], timeout_ms=int(timeout_s * 1000)
            )
            for entry in resp.topic_errors:
                topic, code = entry[0], entry[1]
                message = entry[2] if len(entry) > 2 else None
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise StackError(
                        f"could not create topic {topic} ({partitions} partitions, "
                        f"replication factor {rf}) on {bootstrap}: {_error_name(code)}"
                        + (f": {message}" if message else "")
                    )
        counts = await _partition_counts(admin, names, timeout_s)
    except (TimeoutError, KafkaError, OSError) as e:
        raise StackError(
            f"could not ensure topics {names} on {bootstrap}: {type(e).__name__}: {e}; "
            "check the broker is up (`raylane dev status`)"
        ) from e
    finally:
        await admin.close()
    for topic in names:
        if counts[topic] != partitions:
            if topic in missing:
                raise StackError(
                    f"broker created topic {topic} with {counts[topic]} partitions, "
                    f"not the {partitions} requested"
                )
            log.warning(
                "topic %s exists with %d partitions (%d requested); left unchanged",
                topic,
                counts[topic],
                partitions,
            )


def ensure_topics(
    bootstrap: str | KafkaConnection,
    topics: Sequence[str],
    partitions: int = 4,
    *,
    replication_factor: int | None = None,
    timeout_s: float = 10.0,
) -> None:
    """Sync form of `ensure_topics_async` (works inside a running event loop too)."""
    run_sync(
        ensure_topics_async(
            bootstrap,
            topics,
            partitions,
            replication_factor=replication_factor,
            timeout_s=timeout_s,
        )
    )


async def delete_topics_async(
    bootstrap: str | KafkaConnection, topics: Sequence[str], *, timeout_s: float = 10.0
) -> list[str]:
    """Delete those of ``topics`` that exist; return the names deleted.

    For test rigs and benches that made their own topics: the embedded broker keeps every
    record in memory, so a rig that leaves its topics behind slows the ones after it.
    Raises StackError naming the topic and the broker's error code when a delete fails.
    """
    from aiokafka.errors import KafkaError

    conn = connection(bootstrap)
    admin = conn.admin(request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        existing = set(await admin.list_topics())
        present = [t for t in dict.fromkeys(topics) if t in existing]
        if not present:
            return []
        resp = await asyncio.wait_for(admin.delete_topics(present), timeout_s)
        failed = {t: _error_name(code) for t, code in resp.topic_error_codes if code != 0}
        if failed:
            raise StackError(f"could not delete topic(s) on {conn.bootstrap}: {failed}")
        return present
    except (KafkaError, TimeoutError, OSError) as e:
        raise StackError(
            f"could not delete topics {list(topics)} on {conn.bootstrap}: {e!r}"
        ) from e
    finally:
        await admin.close()


def delete_topics(
    bootstrap: str | KafkaConnection, topics: Sequence[str], *, timeout_s: float = 10.0
) -> list[str]:
    """Sync form of `delete_topics_async`."""
    return run_sync(delete_topics_async(bootstrap, topics, timeout_s=timeout_s))
