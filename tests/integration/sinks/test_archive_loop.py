"""The archiver against the real broker, without Ray: at-least-once, and each record once
after de-duplication.

Records go to two unique topics (one decoded with a contract, one without), with keys,
headers and timestamps over two hours. A first archiver dies after its third write, before
committing it (a crash between the write and the commit); a second one in the same group
takes over. The archive then holds some records twice, the reader returns exactly the
records produced, with their coordinates, keys, headers and values, and the committed
offsets never pass what was written.

Most of the test's minute is the embedded broker's group protocol: a new group's first
join, then the crashed member's session timing out before the second one is assigned.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from aiokafka import TopicPartition

from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.client import connection
from raylane.sinks.archive_loop import ArchiveLoop
from raylane.sinks.archive_read import archive_files, read_archive
from raylane.testing import World
from raylane.testing.kafka import isolated_args

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[3]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
PARTITIONS = 3


class _Crash(Exception):
    """The process dying between a write and its commit."""


class _CrashingLoop(ArchiveLoop):
    """Dies on its `crash_at`-th commit, after that flush's files are written."""

    crash_at = 3

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.commits = 0

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits += 1
        if self.commits == self.crash_at:
            raise _Crash
        await super()._commit(offsets)


def _cfg(unique: str, root: str, max_file_records: int) -> PipelineConfig:
    args = isolated_args(FRAUD, unique)
    args["name"] = f"arch_{unique}"
    args["archive"] = {
        "topics": [
            {"topic": f"payments.initiated.{unique}", "contract": "payments.initiated"},
            f"raw.{unique}",
        ],
        "path": root,
        "group_id": f"archive-{unique}",
        "max_file_records": max_file_records,
        "flush_interval_s": 0.3,
    }
    return PipelineConfig.from_args(args)


async def _produce(bootstrap: str, unique: str) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Send the test's records; returns what was sent by (topic, partition, offset)."""
    avro, raw = f"payments.initiated.{unique}", f"raw.{unique}"
    await ensure_topics_async(bootstrap, [avro, raw], partitions=PARTITIONS)
    codec = Codec.for_contract("payments.initiated")
    events = [le.event for le in World(seed=11, n_users=50).stream().take(40)]
    t0 = (int(time.time() * 1000) // 3_600_000 - 2) * 3_600_000 + 1_800_000  # mid-hour, 2 h ago
    sends: list[tuple[str, bytes | None, bytes, dict[str, Any]]] = []
    for i, ev in enumerate(events):
        value = codec.encode(ev) if i % 10 != 9 else b"\x09garbage"  # every tenth: undecodable
        sends.append((avro, str(ev["user_id"]).encode(), value, ev))
    for i in range(20):
        body = json.dumps({"i": i, "tags": ["a", str(i)]}).encode() if i % 2 else b"\x01raw"
        sends.append((raw, None if i % 3 == 0 else f"r{i}".encode(), body, {"i": i}))
    sent: dict[tuple[str, int, int], dict[str, Any]] = {}
    producer = connection(bootstrap).producer(client_id=f"archive-test-{unique}")
    await producer.start()
    try:
        for n, (topic, key, value, ev) in enumerate(sends):
            ts = t0 + n * 90_000  # 60 records over 90 minutes: two or three hours
            headers = [("seq", str(n).encode()), ("bin", b"\xff")]
            md = await (
                await producer.send(topic, value, key=key, headers=headers, timestamp_ms=ts)
            )
            sent[(topic, md.partition, md.offset)] = {
                "key": key,
                "value": value,
                "ts": ts,
                "seq": str(n),
                "event": ev,
            }
    finally:
        await producer.stop()
    return sent


async def _committed(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    c = connection(bootstrap).consumer(group_id=group)
    await c.start()
    try:
        out: dict[tuple[str, int], int] = {}
        for t in topics:
            for p in range(PARTITIONS):
                off = await c.committed(TopicPartition(t, p))
                out[(t, p)] = off if off is not None else 0
        return out
    finally:
        await c.stop()


def _written(root: str, topics: list[str]) -> dict[tuple[str, int], set[int]]:
    """Offsets durably in the archive per (topic, partition), read from its files."""
    got: dict[tuple[str, int], set[int]] = {}
    for t in topics:
        for f in archive_files(root, t):
            rows = pq.read_table(f, columns=["_partition", "_offset"]).to_pylist()
            for r in rows:
                got.setdefault((t, r["_partition"]), set()).add(r["_offset"])
    return got


def _assert_commits_within_writes(
    committed: dict[tuple[str, int], int], written: dict[tuple[str, int], set[int]]
) -> None:
    for tp, off in committed.items():
        have = written.get(tp, set())
        assert all(o in have for o in range(off)), f"{tp} committed {off} past the archive"


async def test_at_least_once_with_dedup_gives_each_record_once(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    root = str(tmp_path / "archive")
    cfg = _cfg(unique, root, max_file_records=7)
    assert cfg.archive is not None
    topics = [t.topic for t in cfg.archive.topics]
    sent = await _produce(kafka_bootstrap, unique)

    first = _CrashingLoop(cfg, bootstrap=kafka_bootstrap, root=root)
    await first.start()
    with pytest.raises(_Crash):
        await asyncio.wait_for(first.run(), timeout=60)
    await first.close(flush=False)  # what was pending dies with the process
    assert first.stats["flushes"] == 2  # the third wrote its files, then died before committing
    committed = await _committed(kafka_bootstrap, first.group_id, topics)
    _assert_commits_within_writes(committed, _written(root, topics))
    assert 0 < sum(committed.values()) < len(sent)

    def raw() -> int:  # rows in the archive's files, duplicates included
        return sum(
            pq.ParquetFile(f).metadata.num_rows for t in topics for f in archive_files(root, t)
        )

    # the restart re-reads everything past the commits, the crashed write's records included:
    # the archive ends with exactly this many rows (waiting for the distinct offsets alone
    # could stop before a partition's re-read records were written again)
    expected_rows = raw() + len(sent) - sum(committed.values())

    # other file boundaries after the restart: the re-read records land in new files
    # (with the same boundaries they would overwrite the crashed write's files)
    second = ArchiveLoop(
        _cfg(unique, root, max_file_records=5), bootstrap=kafka_bootstrap, root=root
    )
    await second.start()
    task = asyncio.create_task(second.run())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            done = sum(len(v) for v in _written(root, topics).values())
            if done >= len(sent) and raw() >= expected_rows and second.stats["pending"] == 0:
                break
        second.check_health()
    finally:
        second.stop()
        await asyncio.wait_for(task, timeout=10)
        await second.close()

    raw_rows = raw()
    assert raw_rows == expected_rows
    assert raw_rows > len(sent)  # the crashed write's records were archived twice

    seen: dict[tuple[str, int, int], dict[str, Any]] = {}
    for t in topics:
        df = read_archive(root, t)
        keys = list(zip(df["_timestamp"], df["_partition"], df["_offset"], strict=True))
        assert keys == sorted(keys)
        for row in df.to_dict("records"):
            coord = (row["_topic"], int(row["_partition"]), int(row["_offset"]))
            assert coord not in seen
            seen[coord] = row
    assert set(seen) == set(sent)
    for coord, want in sent.items():
        row = seen[coord]
        assert row["_key"] == want["key"] and row["_value"] == want["value"]
        assert int(row["_timestamp"].timestamp() * 1000) == want["ts"]
        assert json.loads(row["_headers"]) == {"seq": want["seq"], "bin": "\ufffd"}
        if coord[0] == topics[0]:
            if want["value"].startswith(b"\x09"):
                assert row["_error"].startswith("BadMagicByte")
            else:
                assert row["_error"] is None
                assert row["event_id"] == want["event"]["event_id"]
        elif want["value"].startswith(b"{"):
            assert row["i"] == want["event"]["i"]
            assert json.loads(row["tags"]) == ["a", str(want["event"]["i"])]

    final = await _committed(kafka_bootstrap, second.group_id, topics)
    _assert_commits_within_writes(final, _written(root, topics))
    ends: dict[tuple[str, int], int] = {}
    for t, p, o in sent:
        ends[(t, p)] = max(ends.get((t, p), 0), o + 1)
    assert {tp: o for tp, o in final.items() if o} == ends  # everything written is committed
