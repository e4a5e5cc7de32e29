"""Read a topic: all of it (DLQ tools, promotion history, tests, the bench) or a time range
(the SDK's ``read_topic`` for notebooks)."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import TopicPartition

from raylane.errors import DependencyError, RaylaneError
from raylane.kafka.client import KafkaConnection, connection

__all__ = ["read_range", "read_topic"]


class _Settle:
    """When a read that has reached the end offsets it began with may stop.

    The embedded broker's end offsets can lag its last record, so a read goes on for
    `idle_s` after it reaches them; it stops then, or sooner once `idle_s` passes without a
    record. A topic still being written (the scored stream of a running pipeline) never
    falls silent: waiting for silence alone would follow it until the timeout.
    """

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.quiet_at = time.monotonic() + idle_s
        self.reached_at: float | None = None

    def record(self) -> None:
        self.quiet_at = time.monotonic() + self.idle_s

    def done(self, reached: bool) -> bool:
        if not reached:
            return False
        now = time.monotonic()
        if self.reached_at is None:
            self.reached_at = now
        return now >= min(self.quiet_at, self.reached_at + self.idle_s)


async def _reader(bootstrap: str | KafkaConnection, stage: str, *topics: str) -> Any:
    """A started group-less consumer (subscribed to `topics`, or none to assign), or raise."""
    conn = connection(bootstrap)
    c = conn.consumer(
        *topics,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
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
    return c


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
    end offsets can lag the last record, so the end is confirmed by silence (a whole-topic
    read of a DLQ or ledger; a live stream is read by time with :func:`read_range`). Raises a
    retriable :class:`~raylane.errors.DependencyError` naming the partitions that did not
    reach their end offset within `timeout_s`: a partial read is never returned as whole.
    """
    c = await _reader(bootstrap, stage, topic)
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


async def read_range(
    bootstrap: str | KafkaConnection,
    topic: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    idle_s: float = 1.0,
    timeout_s: float = 60.0,
    stage: str = "read",
) -> list[Any]:
    """The records of `topic` whose broker timestamp is in ``[start_ms, end_ms)``.

    Each partition is read from the first offset at or after `start_ms` (the broker's
    ListOffsets by time; from the beginning when the broker cannot answer it) up to the end
    offsets the broker reported at the start, or until a record at or after `end_ms`; then
    for up to `idle_s` more (the embedded broker's end offsets can lag its last record), so a
    topic still being written is not followed. Records outside the range are dropped. Raises a
    retriable :class:`~raylane.errors.DependencyError` when a partition did not reach its end within
    `timeout_s`, as :func:`read_topic` does: a partial read is never returned as whole.
    """
    c = await _reader(bootstrap, stage)
    out: list[Any] = []
    try:
        await c.topics()  # a metadata request: the partitions of every topic
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        if not parts:
            return []
        c.assign(parts)
        ends = await c.end_offsets(parts)
        starts: dict[TopicPartition, int] = {tp: 0 for tp in parts}
        if start_ms is not None:
            try:
                found = await c.offsets_for_times({tp: int(start_ms) for tp in parts})
                for tp, ot in found.items():
                    starts[tp] = ends[tp] if ot is None else ot.offset
            except Exception:  # a broker without ListOffsets by time: filter while reading
                starts = {tp: 0 for tp in parts}
        for tp, off in starts.items():
            c.seek(tp, off)
        done = {tp for tp in parts if starts[tp] >= ends[tp]}
        pos = dict(starts)
        deadline = time.monotonic() + timeout_s
        settle = _Settle(idle_s)
        while time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=200, max_records=10_000)
            for tp, msgs in got.items():
                if not msgs or tp in done:
                    continue
                settle.record()
                for m in msgs:
                    if end_ms is not None and m.timestamp >= end_ms:
                        done.add(tp)  # broker timestamps of a partition only grow (LogAppendTime
                        break  # or a well-behaved producer); later records are out of range
                    if start_ms is None or m.timestamp >= start_ms:
                        out.append(m)
                pos[tp] = msgs[-1].offset + 1
            reached = all(tp in done or pos[tp] >= ends[tp] for tp in parts)
            if settle.done(reached):
                break
        else:
            short = [tp for tp in parts if tp not in done and pos[tp] < ends[tp]]
            if short:
                where = ", ".join(f"[{tp.partition}] at {pos[tp]} of {ends[tp]}" for tp in short)
                raise DependencyError(
                    f"read of {topic} incomplete after {timeout_s:g} s: {where}; "
                    "nothing was done with the partial read, run it again",
                    stage=stage,
                )
    finally:
        await c.stop()
    out.sort(key=lambda m: (m.timestamp, m.partition, m.offset))
    return out
