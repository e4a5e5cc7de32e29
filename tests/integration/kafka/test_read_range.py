"""Reading a time range of a topic on the real broker (the SDK's read_topic)."""

from __future__ import annotations

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
