"""Offset commits shared by every manual-commit loop (ingress, drift monitor, action runner).

Each loop commits only after its work is acknowledged, and only partitions it still owns:
a partition revoked by a rebalance is re-read by its new owner (duplicates, never losses),
so a commit that races a rebalance is logged, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from raylane.kafka.records import InRecord

__all__ = ["commit_owned", "next_offsets"]

log = logging.getLogger("raylane.ingest")


def next_offsets(records: Iterable[InRecord]) -> dict[TopicPartition, int]:
    """The offset to commit per partition: one past the highest record seen."""
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, -1), r.offset + 1)
    return offsets


async def commit_owned(
    consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, int], who: str
) -> bool:
    """Commit `offsets` of the partitions `consumer` still owns; True when a commit went through."""
    owned = consumer.assignment()
    mine = {tp: o for tp, o in offsets.items() if tp in owned}
    if not mine:
        return False  # revoked meanwhile: the new owner re-reads them
    try:
        await consumer.commit(mine)
    except Exception as e:
        log.warning("%s: offset commit failed (%s); the records may be re-delivered", who, e)
        return False
    return True
