"""Reading a time range of a topic on the real broker (the SDK's read_topic)."""

from __future__ import annotations

import asyncio
import time

import pytest

from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.client import connection
from raylane.kafka.reader import read_range

pytestmark = pytest.mark.integration


async def test_a_range_holds_exactly_the_records_stamped_inside_it(kafka_bootstrap, unique):
    topic = f"range.{unique}"
    await ensure_topics_async(kafka_bootstrap, [topic], partitions=3)
    base = int(time.time() * 1000) - 3_600_000  # an hour ago, a record per second
    p = connection(kafka_bootstrap).producer(client_id="test-range")
    await p.start()
    try:
        for i in range(300):
            await p.send(
                topic, value=str(i).encode(), key=str(i % 7).encode(), timestamp_ms=base + 1000 * i
            )
        await p.flush()
    finally:
        await p.stop()

    def values(msgs):
        return sorted(int(m.value) for m in msgs)

    assert values(await read_range(kafka_bootstrap, topic)) == list(range(300))
    got = await read_range(kafka_bootstrap, topic, base + 100_000, base + 200_000)
    assert values(got) == list(range(100, 200))
    assert [m.timestamp for m in got] == sorted(m.timestamp for m in got)
    assert values(await read_range(kafka_bootstrap, topic, base + 250_000)) == list(range(250, 300))
    assert values(await read_range(kafka_bootstrap, topic, None, base + 5_000)) == list(range(5))
    assert await read_range(kafka_bootstrap, topic, base + 400_000) == []


async def test_a_topic_still_being_written_is_read_to_its_end_not_followed(kafka_bootstrap, unique):
    """A notebook reads the scored stream of a running pipeline: it never falls silent, so
    the read must stop at the end it found (and a short settle), not follow the topic until
    its timeout. Before the fix every such read ran its full `timeout_s`."""
    topic = f"range.live.{unique}"
    await ensure_topics_async(kafka_bootstrap, [topic], partitions=2)
    p = connection(kafka_bootstrap).producer(client_id="test-range-live")
    await p.start()
    sent = 0
    stop = asyncio.Event()

    async def write(limit_s: float) -> None:
        nonlocal sent
        until = time.monotonic() + limit_s
        while not stop.is_set() and time.monotonic() < until:
            await p.send_and_wait(topic, value=str(sent).encode(), key=str(sent % 5).encode())
            sent += 1
            await asyncio.sleep(0.02)

    try:
        await write(1.0)  # a backlog that the read must return whole
        before = sent
        writer = asyncio.create_task(write(90.0))  # then a stream that goes on past the read
        got = await read_range(kafka_bootstrap, topic, idle_s=1.0, timeout_s=120.0)
        still_writing = not writer.done()
        stop.set()
        await writer
    finally:
        await p.stop()
    values = {int(m.value) for m in got}
    assert set(range(before)) <= values  # everything written before the read began
    # it returned while the topic was still being written: following the stream, it would
    # have returned only after the writer's 90 s, once the topic fell silent
    assert still_writing
