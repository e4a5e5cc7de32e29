"""Integration tests of the embedded stack: the real broker, Redis and MLflow.

Most tests use the session ``stack`` fixture; the last one starts a second, private stack
under a temporary RAYLANE_HOME on other ports and checks ``down`` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from raylane.localstack import (
    down,
    ensure_topics,
    ensure_topics_async,
    session_stack,
    status,
    up,
)
from raylane.settings import Settings

pytestmark = pytest.mark.integration


async def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(topics)}
    finally:
        await admin.close()


def _consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=5,  # Tansu waits the full fetch_max_wait_ms on an empty fetch
        # Tansu holds a JoinGroup for about session_timeout/2 (5 s with the default 10 s),
        # and starts groups at generation 0, for which aiokafka sends no LeaveGroup: a
        # member that stopped lingers until its session times out. Short sessions keep
        # joins and re-joins around a second.
        session_timeout_ms=1500,
        heartbeat_interval_ms=300,
    )


async def test_produce_and_consume_a_record(stack: Settings, unique: str) -> None:
    topic = f"it.localstack.roundtrip.{unique}"
    ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            topic, b"payload", key=b"k", headers=[("event_id", unique.encode())]
        )
    finally:
        await producer.stop()
    consumer = _consumer(stack.kafka_bootstrap, topic, f"g-{unique}")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 15)
    finally:
        await consumer.stop()
    assert (record.key, record.value, record.offset) == (b"k", b"payload", meta.offset)
    assert dict(record.headers) == {"event_id": unique.encode()}


async def test_consumer_group_commit_and_committed_readback(stack: Settings, unique: str) -> None:
    topic, group = f"it.localstack.commit.{unique}", f"g-{unique}"
    await ensure_topics_async(stack.kafka_bootstrap, [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(topic, f"v{i}".encode(), partition=0)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)

    consumer = _consumer(stack.kafka_bootstrap, topic, group)
    await consumer.start()
    try:
        first = [await asyncio.wait_for(consumer.getone(), 15) for _ in range(3)]
        await consumer.commit({tp: first[-1].offset + 1})
        assert await consumer.committed(tp) == 3
    finally:
        await consumer.stop()

    # A new member of the same group resumes after the committed offset.
    consumer = _consumer(stack.kafka_bootstrap, topic, group)
    await consumer.start()
    try:
        resumed = await asyncio.wait_for(consumer.getone(), 15)
        assert await consumer.committed(tp) == 3
    finally:
        await consumer.stop()
    assert [r.value for r in first] == [b"v0", b"v1", b"v2"]
    assert (resumed.offset, resumed.value) == (3, b"v3")


async def test_ensure_topics_creates_with_partitions_and_is_idempotent(
    stack: Settings, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = f"it.localstack.topics.a.{unique}", f"it.localstack.topics.b.{unique}"
    ensure_topics(stack.kafka_bootstrap, [a, b, a], partitions=3)  # sync form, inside a loop
    assert await _partition_counts(stack.kafka_bootstrap, [a, b]) == {a: 3, b: 3}
    await ensure_topics_async(stack.kafka_bootstrap, [a, b], partitions=3)  # no error twice
    with caplog.at_level(logging.WARNING, logger="raylane.kafka.admin"):
        await ensure_topics_async(stack.kafka_bootstrap, [a], partitions=6)
    assert f"topic {a} exists with 3 partitions (6 requested)" in caplog.text
    assert await _partition_counts(stack.kafka_bootstrap, [a]) == {a: 3}  # left unchanged


def test_redis_ping(stack: Settings) -> None:
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=2)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_mlflow_health(stack: Settings) -> None:
    if not stack.mlflow_tracking_uri.startswith("http"):
        pytest.skip(f"MLFLOW_TRACKING_URI={stack.mlflow_tracking_uri} is not a server")
    url = stack.mlflow_tracking_uri.rstrip("/") + "/health"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        assert resp.read().strip() == b"OK"


def test_status_reports_the_session_stack_healthy(stack: Settings) -> None:
    rows = {r.component: r for r in status()}
    assert all(r.healthy for r in rows.values()), rows
    assert rows["kafka"].address == stack.kafka_bootstrap


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A temp RAYLANE_HOME with its own free ports; REDIS_URL unreachable (forces valkey)."""
    ports = {
        v: _free_port() for v in ("RAYLANE_KAFKA_PORT", "RAYLANE_REDIS_PORT", "RAYLANE_MLFLOW_PORT")
    }
    monkeypatch.setenv("RAYLANE_HOME", str(tmp_path / "rl"))
    for var, port in ports.items():
        monkeypatch.setenv(var, str(port))
    monkeypatch.delenv("RAYLANE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    return ports


def _kafka_pid(home: Path) -> int | None:
    try:
        return json.loads((home / "stack.json").read_text())["pids"].get("kafka")
    except FileNotFoundError:
        return None


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_nested_sessions_share_a_stack_and_the_last_one_stops_it(
    tmp_path: Path, private_home: dict[str, int]
) -> None:
    home = tmp_path / "rl"
    with session_stack(["kafka"]) as outer:
        pid = _kafka_pid(home)
        assert pid and not _gone(pid)
        with session_stack(["kafka"]) as inner:
            assert inner.kafka_bootstrap == outer.kafka_bootstrap
            assert _kafka_pid(home) == pid  # reused, not restarted
        assert not _gone(pid)  # the outer session still holds its lease
    assert not (home / "stack.json").exists()
    assert _gone(pid)

    # What `raylane dev up` started outlives a session that reused it.
    try:
        up(["kafka"])
        pid = _kafka_pid(home)
        assert pid
        with session_stack(["kafka"]):
            pass
        assert _kafka_pid(home) == pid and not _gone(pid)
    finally:
        down()
    assert _gone(pid)


def test_private_stack_up_is_idempotent_and_down_leaves_nothing(
    tmp_path: Path, private_home: dict[str, int]
) -> None:
    home, ports = tmp_path / "rl", private_home
    try:
        settings = up()
        recorded = json.loads((home / "stack.json").read_text())
        pids = recorded["pids"]
        assert sorted(recorded["owned"]) == ["kafka", "mlflow", "redis"]
        assert settings.kafka_bootstrap == f"127.0.0.1:{ports['RAYLANE_KAFKA_PORT']}"
        assert settings.redis_url == f"redis://127.0.0.1:{ports['RAYLANE_REDIS_PORT']}/0"
        assert settings.mlflow_tracking_uri == f"http://127.0.0.1:{ports['RAYLANE_MLFLOW_PORT']}"
        assert recorded["redis_url"] == settings.redis_url
        tree = {
            p.pid
            for pid in pids.values()
            for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        }
        assert len(tree) >= 4  # tansu, valkey, mlflow server + its uvicorn worker

        assert up() == settings  # idempotent: reuses our healthy processes
        assert json.loads((home / "stack.json").read_text())["pids"] == pids
        assert all(r.healthy and r.owned for r in status())
    finally:
        down()

    assert not (home / "stack.json").exists()
    assert [p for p in tree if not _gone(p)] == []
    for port in ports.values():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # free again
