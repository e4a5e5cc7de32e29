"""How the archive is wired: topics bootstrap creates, isolation, the loop's flush and health."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from raylane.bootstrap import pipeline_topics
from raylane.config import PipelineConfig, load_serve_config
from raylane.errors import ConfigError, DependencyError
from raylane.sinks.archive_loop import ArchiveLoop
from raylane.sinks.archive_read import read_archive
from raylane.testing.kafka import isolated_args

FRAUD = Path(__file__).resolve().parents[3] / "serve_configs" / "fraud.yaml"


def test_bootstrap_creates_the_labels_topic() -> None:
    _, cfg = load_serve_config(FRAUD)
    assert "payments.labels" in pipeline_topics(cfg)


def test_isolated_args_suffix_archive_topics_group_and_labels() -> None:
    args = isolated_args(FRAUD, "s1")
    cfg = PipelineConfig.from_args(args)
    assert cfg.archive is not None and cfg.labels is not None
    assert all(t.topic.endswith(".s1") for t in cfg.archive.topics)
    assert cfg.archive.group_id == "fraud-archive-s1"
    assert cfg.labels.topic == "payments.labels.s1"
    assert {t.topic for t in cfg.archive.topics} <= set(pipeline_topics(cfg))


class _Msg:
    def __init__(self, offset: int) -> None:
        self.offset, self.key, self.headers = offset, None, [("h", b"v")]
        self.value = json.dumps({"n": offset}).encode()
        self.timestamp = 1_700_000_000_000 + offset


class _Consumer:
    """Hands out one poll, then nothing; records what was committed."""

    def __init__(self, polls: list[dict[TopicPartition, list[_Msg]]]) -> None:
        self.polls = polls
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(self, **_: Any) -> dict[TopicPartition, list[_Msg]]:
        await asyncio.sleep(0)
        return self.polls.pop(0) if self.polls else {}

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", 0)}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    async def stop(self) -> None:
        pass


def _loop(tmp_path: Path, **archive: Any) -> ArchiveLoop:
    args = isolated_args(FRAUD, "u")
    args["archive"] = {"topics": ["t"], **archive}
    return ArchiveLoop(PipelineConfig.from_args(args), bootstrap="x:1", root=str(tmp_path))


async def test_a_failed_write_is_retried_and_committed_only_after_it_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = _loop(tmp_path, max_file_records=3)
    consumer = _Consumer([{TopicPartition("t", 0): [_Msg(o) for o in range(3)]}])
    loop._consumer = consumer  # type: ignore[assignment]
    real, fails = loop.sink.write, [1]

    async def flaky(records: Any) -> Any:
        if fails:
            fails.pop()
            assert consumer.commits == []
            raise DependencyError("storage down", stage="archive")
        return await real(records)

    monkeypatch.setattr(loop.sink, "write", flaky)
    monkeypatch.setattr(asyncio, "sleep", _fast_sleep)
    task = asyncio.create_task(loop.run())
    for _ in range(200):
        if consumer.commits:
            break
        await _fast_sleep(0)
    loop.stop()
    await task
    assert consumer.commits == [{TopicPartition("t", 0): 3}]
    assert loop.stats["errors"] == 1 and loop.stats["records_written"] == 3
    assert list(read_archive(str(tmp_path), "t")["n"]) == [0, 1, 2]


_real_sleep = asyncio.sleep


async def _fast_sleep(_: float, *a: Any) -> None:
    await _real_sleep(0)


async def test_close_flushes_pending_records_unless_crashing(tmp_path: Path) -> None:
    loop = _loop(tmp_path, flush_interval_s=3600)
    consumer = _Consumer([])
    loop._consumer = consumer  # type: ignore[assignment]
    loop._buffer({TopicPartition("t", 0): [_Msg(0), _Msg(1)]})  # type: ignore[dict-item]
    assert not loop._due()
    await loop.close()
    assert consumer.commits == [{TopicPartition("t", 0): 2}]
    crashed = _loop(tmp_path / "c", flush_interval_s=3600)
    c2 = _Consumer([])
    crashed._consumer = c2  # type: ignore[assignment]
    crashed._buffer({TopicPartition("t", 0): [_Msg(0)]})  # type: ignore[dict-item]
    await crashed.close(flush=False)
    assert c2.commits == [] and read_archive(str(tmp_path / "c"), "t").empty


def test_health_is_progress(tmp_path: Path) -> None:
    loop = _loop(tmp_path)
    loop.check_health()  # idle is healthy
    loop._buffer({TopicPartition("t", 0): [_Msg(0)]})  # type: ignore[dict-item]
    loop._last_progress = time.monotonic() - loop.stall_timeout_s - 1
    with pytest.raises(RuntimeError, match="1 records pending"):
        loop.check_health()
    loop._outage = True  # waiting out a storage outage: its retries own that
    loop.check_health()


def test_an_unregistered_contract_fails_at_construction(tmp_path: Path) -> None:
    args = isolated_args(FRAUD, "u")
    args["archive"] = {"topics": [{"topic": "t", "contract": "no.such.contract"}]}
    with pytest.raises(ConfigError, match="raylane schema register"):
        ArchiveLoop(PipelineConfig.from_args(args), bootstrap="x:1", root=str(tmp_path))
