"""read_topic never returns a partial read as whole (no services: the consumer is a stub)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from raylane.errors import DependencyError
from raylane.kafka import client as client_mod
from raylane.kafka.reader import read_topic


class StubConsumer:
    """A topic with two partitions whose end offsets are 3 and 5; it delivers `have` records."""

    def __init__(self, have: dict[int, int]) -> None:
        self.have = have
        self.sent: dict[int, int] = {}

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1}

    async def end_offsets(self, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: {0: 3, 1: 5}[tp.partition] for tp in parts}

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Any]]:
        out: dict[TopicPartition, list[Any]] = {}
        for p, n in self.have.items():
            start = self.sent.get(p, 0)
            if start < n:
                out[TopicPartition("t", p)] = [
                    SimpleNamespace(partition=p, offset=o) for o in range(start, n)
                ]
                self.sent[p] = n
        return out


def _patch(monkeypatch: pytest.MonkeyPatch, consumer: StubConsumer) -> None:
    monkeypatch.setattr(client_mod.KafkaConnection, "consumer", lambda self, *a, **k: consumer)


async def test_a_whole_topic_is_returned_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch(monkeypatch, StubConsumer({0: 3, 1: 5}))
    got = await read_topic("127.0.0.1:1", "t", idle_s=0.0, timeout_s=5)
    assert [(m.partition, m.offset) for m in got] == [(0, 0), (0, 1), (0, 2)] + [
        (1, o) for o in range(5)
    ]


async def test_a_read_short_of_the_end_offsets_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch(monkeypatch, StubConsumer({0: 3, 1: 2}))
    with pytest.raises(DependencyError, match=r"read of t incomplete .*\[1\] at 2 of 5") as info:
        await read_topic("127.0.0.1:1", "t", idle_s=0.0, timeout_s=0.3, stage="dlq")
    assert info.value.stage == "dlq" and info.value.retriable
