"""Read a whole topic from the beginning (DLQ tools, promotion history, tests, the bench)."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import TopicPartition

from raylane.errors import DependencyError, RaylaneError
from raylane.kafka.client import KafkaConnection, connection

__all__ = ["read_topic"]


async def read_topic(
    bootstrap: str | KafkaConnection,
    topic: str,
    idle_s: float = 1.0,
    timeout_s: float = 30.0,
    *,
    stage: str = "read",
) -> list[Any]:
    """Every record of `topic` from the beginning.

    Reads at least up to the end offsets the broker reports (waiting up to `timeout_s`
    for them), then until `idle_s` passes without a new record: the embedded broker's
    end offsets can lag the last record, so the end is confirmed by silence. Raises a
    retriable :class:`~raylane.errors.DependencyError` naming the partitions that did not
    reach their end offset within `timeout_s`: a partial read is never returned as whole.
    """
    conn = connection(bootstrap)
    c = conn.consumer(
        topic,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=4 << 20,
    )
    try:
        await c.start()
    except Exception as e:
        await c.stop()
        if isinstance(e, RaylaneError):  # a refused login says so itself
            raise
        raise DependencyError(
            f"cannot reach Kafka at {conn.bootstrap}: {e}; "
            "is the broker up (`raylane dev status`)?",
            stage=stage,
        ) from e
    out: list[Any] = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        ends = await c.end_offsets(parts) if parts else {}
        last: dict[int, int] = {}
        deadline = time.monotonic() + timeout_s
        idle_until = time.monotonic() + idle_s
        while time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=200)
            for tp, msgs in got.items():
                if msgs:
                    out.extend(msgs)
                    last[tp.partition] = msgs[-1].offset + 1
                    idle_until = time.monotonic() + idle_s
            reached = all(last.get(tp.partition, 0) >= end for tp, end in ends.items())
            if reached and time.monotonic() >= idle_until:
                break
        else:
            short = {
                tp.partition: (last.get(tp.partition, 0), end)
                for tp, end in ends.items()
                if last.get(tp.partition, 0) < end
            }
            if short:
                where = ", ".join(f"[{p}] at {got} of {end}" for p, (got, end) in short.items())
                raise DependencyError(
                    f"read of {topic} incomplete after {timeout_s:g} s: {where}; "
                    "nothing was done with the partial read, run it again",
                    stage=stage,
                )
    finally:
        await c.stop()
    out.sort(key=lambda m: (m.partition, m.offset))
    return out
