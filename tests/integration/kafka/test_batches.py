"""Unreadable record batches on the real broker: a gzip bomb, a codec this install lacks, a
CRC that fails. Under the quarantine the consumer returns every good record once, goes past
each bad batch with one stand-in, and never inflates the bomb past the limit."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnsupportedCodecError
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.util import calc_crc32c

from raylane.kafka import batches
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.client import connection
from raylane.testing.kafka import record_batch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _batch(values: list[bytes]) -> bytearray:
    return bytearray(record_batch(values))


async def _produce_raw(bootstrap: str, topic: str, raw: bytes) -> None:
    """Send `raw` to partition 0 as it is: a producer only ever sends batches it built."""
    p = connection(bootstrap).producer(client_id="test-raw-batch")
    await p.start()
    try:
        client = p.client
        client.add_topic(topic)
        await client.force_metadata_update()
        node = client.cluster.leader_for_partition(TopicPartition(topic, 0))
        resp = await client.send(node, ProduceRequest(None, -1, 30000, [(topic, [(0, raw)])]))
        ((_, parts),) = resp.topics
        assert parts[0][1] == 0, f"broker refused the batch: {resp}"
    finally:
        await p.stop()


async def test_bad_batches_are_gone_past_and_nothing_else_is_lost(kafka_bootstrap, unique):
    topic = f"batches.{unique}"
    await ensure_topics_async(kafka_bootstrap, [topic], partitions=1)
    await _produce_raw(kafka_bootstrap, topic, bytes(_batch([b"a", b"b"])))  # 0, 1
    lz4 = _batch([b"c" * 100])  # 2: flagged lz4 (no cramjam here), CRC made to match
    (attrs,) = struct.unpack_from(">h", lz4, 21)
    struct.pack_into(">h", lz4, 21, (attrs & ~7) | 3)
    struct.pack_into(">I", lz4, 17, calc_crc32c(bytes(lz4[21:])))
    await _produce_raw(kafka_bootstrap, topic, bytes(lz4))
    crc = _batch([b"d" * 50])  # 3: a byte flipped after the CRC was computed
    crc[-5] ^= 0xFF
    await _produce_raw(kafka_bootstrap, topic, bytes(crc))
    bomb = connection(kafka_bootstrap).producer(compression_type="gzip", max_request_size=1 << 30)
    await bomb.start()
    try:  # 4: 40 MiB of zeros, about 40 KB on the wire
        await bomb.send_and_wait(topic, b"\0" * (40 << 20), partition=0)
    finally:
        await bomb.stop()
    await _produce_raw(kafka_bootstrap, topic, bytes(_batch([b"e", b"f"])))  # 5, 6

    plain = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await plain.start()
    try:  # the same topic without the quarantine: aiokafka raises at the lz4 batch
        with pytest.raises(UnsupportedCodecError):
            for _ in range(20):
                await plain.getmany(timeout_ms=500)
    finally:
        await plain.stop()

    c = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await c.start()
    q = batches.Quarantine(1 << 20)
    records: list[tuple[int, bytes]] = []
    skipped: dict[int, tuple[str, int, int, str]] = {}
    tracemalloc.start()
    try:
        for _ in range(60):
            with batches.reading(q):
                got = await c.getmany(timeout_ms=500)
            records += [(m.offset, m.value) for ms in got.values() for m in ms]
            for s in q.take():
                assert s.skipped is not None
                b = s.skipped
                skipped[s.offset] = (b.error.error_class, b.first_offset, b.next_offset, b.codec)
            if len(records) + len(skipped) >= 7:
                break
        peak = tracemalloc.get_traced_memory()[1]
        position = await c.position(TopicPartition(topic, 0))
    finally:
        tracemalloc.stop()
        await c.stop()

    assert sorted(records) == [(0, b"a"), (1, b"b"), (5, b"e"), (6, b"f")]
    assert skipped == {
        2: ("UnsupportedCodec", 2, 3, "lz4"),
        3: ("CorruptBatch", 3, 4, "none"),
        4: ("DecompressedTooLarge", 4, 5, "gzip"),
    }
    assert position == 7
    assert peak < 8 << 20, f"{peak} bytes allocated at peak while refusing a 40 MiB bomb"
