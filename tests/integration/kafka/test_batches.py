"""Unreadable record batches on the real broker: a gzip bomb, a codec this install lacks, a
CRC that fails. Under the quarantine the consumer returns every good record once, goes past
each bad batch with one stand-in, and never inflates the bomb past the limit.

The embedded broker stores batches as they are sent. Apache Kafka checks CRCs and
decompresses batches when it appends them, so it refuses the crafted lz4 and CRC batches
(there they only arrive through a faulty disk or wire); run against it, the test leaves
those two out of what it expects and still checks the bomb."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.util import calc_crc32c

from raylane.kafka import batches
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.client import connection
from raylane.testing.kafka import record_batch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _batch(values: list[bytes]) -> bytearray:
    return bytearray(record_batch(values))


async def _produce_raw(
    bootstrap: str, topic: str, raw: bytes, *, may_refuse: bool = False
) -> int | None:
    """Send `raw` to partition 0 as it is (a producer only ever sends batches it built): the
    base offset it was given, or None when the broker refused it and `may_refuse`."""
    p = connection(bootstrap).producer(client_id="test-raw-batch")
    await p.start()
    try:
        client = p.client
        client.add_topic(topic)
        await client.force_metadata_update()
        node = client.cluster.leader_for_partition(TopicPartition(topic, 0))
        resp = await client.send(node, ProduceRequest(None, -1, 30000, [(topic, [(0, raw)])]))
        ((_, parts),) = resp.topics
        if parts[0][1] != 0 and may_refuse:
            return None
        assert parts[0][1] == 0, f"broker refused the batch: {resp}"
        return int(parts[0][2])
    finally:
        await p.stop()


async def test_bad_batches_are_gone_past_and_nothing_else_is_lost(kafka_bootstrap, unique):
    topic = f"batches.{unique}"
    await ensure_topics_async(kafka_bootstrap, [topic], partitions=1)
    good: list[tuple[int, bytes]] = []
    expected: dict[int, tuple[str, int, int, str]] = {}
    first = await _produce_raw(kafka_bootstrap, topic, bytes(_batch([b"a", b"b"])))
    assert first is not None
    good += [(first, b"a"), (first + 1, b"b")]
    lz4 = _batch([b"c" * 100])  # flagged lz4 (no cramjam here), CRC made to match
    (attrs,) = struct.unpack_from(">h", lz4, 21)
    struct.pack_into(">h", lz4, 21, (attrs & ~7) | 3)
    struct.pack_into(">I", lz4, 17, calc_crc32c(bytes(lz4[21:])))
    at = await _produce_raw(kafka_bootstrap, topic, bytes(lz4), may_refuse=True)
    if at is not None:
        expected[at] = ("UnsupportedCodec", at, at + 1, "lz4")
    crc = _batch([b"d" * 50])  # a byte flipped after the CRC was computed
    crc[-5] ^= 0xFF
    at = await _produce_raw(kafka_bootstrap, topic, bytes(crc), may_refuse=True)
    if at is not None:
        expected[at] = ("CorruptBatch", at, at + 1, "none")
    bomb = connection(kafka_bootstrap).producer(compression_type="gzip", max_request_size=1 << 30)
    await bomb.start()
    try:  # 40 MiB of zeros, about 40 KB on the wire
        at = (await bomb.send_and_wait(topic, b"\0" * (40 << 20), partition=0)).offset
        expected[at] = ("DecompressedTooLarge", at, at + 1, "gzip")
    finally:
        await bomb.stop()
    last = await _produce_raw(kafka_bootstrap, topic, bytes(_batch([b"e", b"f"])))
    assert last is not None
    good += [(last, b"e"), (last + 1, b"f")]

    if len(expected) > 1:  # without the quarantine aiokafka raises at the first bad batch
        plain = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await plain.start()
        try:
            with pytest.raises((UnsupportedCodecError, CorruptRecordException)):
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
            if len(records) + len(skipped) >= len(good) + len(expected):
                break
        peak = tracemalloc.get_traced_memory()[1]
        position = await c.position(TopicPartition(topic, 0))
    finally:
        tracemalloc.stop()
        await c.stop()

    assert sorted(records) == good
    assert skipped == expected
    assert position == last + 2
    assert peak < 8 << 20, f"{peak} bytes allocated at peak while refusing a 40 MiB bomb"
