"""KafkaSink.write over a fake aiokafka producer whose sends fail per record: which errors
are refused for good (PublishRejected, naming the records) and which are retried
(DependencyError); a broker refusing a whole producer batch is narrowed to the culprit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest
from aiokafka.errors import (
    InvalidTopicError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    MessageSizeTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
)

from raylane.errors import DependencyError, PublishRejected
from raylane.kafka.records import OutRecord
from raylane.sinks.kafka import PERMANENT_ERRORS, KafkaSink

pytestmark = pytest.mark.timeout(10)


class FakeProducer:
    """The part of AIOKafkaProducer the sink uses, with a broker that refuses per record.

    Sends accumulate into one producer batch per topic until the event loop runs again, as
    aiokafka's accumulator does; the broker then answers the batch as a whole: a batch
    holding a value over `broker_limit` is refused with MessageSizeTooLargeError (every
    record in it), a topic in `unauthorized` or `invalid` refuses everything, a topic in
    `unavailable` fails with a retriable error. A value over `max_request_size` is refused
    by send() itself, as aiokafka does; `buffer_full_after` makes send() time out.
    """

    def __init__(
        self,
        *,
        max_request_size: int = 1 << 20,
        broker_limit: int = 1 << 20,
        unauthorized: Sequence[str] = (),
        invalid: Sequence[str] = (),
        unavailable: dict[str, type[Exception]] | None = None,
        buffer_full_after: int | None = None,
    ) -> None:
        self.max_request_size = max_request_size
        self.broker_limit = broker_limit
        self.unauthorized = set(unauthorized)
        self.invalid = set(invalid)
        self.unavailable = unavailable or {}
        self.buffer_full_after = buffer_full_after
        self.sends: list[bytes] = []
        self.acked: list[bytes] = []
        self.batches: list[list[bytes]] = []
        self._pending: dict[str, list[tuple[bytes, asyncio.Future[Any]]]] = {}

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        if self.buffer_full_after is not None and len(self.sends) >= self.buffer_full_after:
            raise KafkaTimeoutError("the producer's buffer is full")
        self.sends.append(value)
        if len(value) > self.max_request_size:
            raise MessageSizeTooLargeError(
                f"The message is {len(value)} bytes when serialized which is larger than the "
                "maximum request size you have configured with the max_request_size configuration"
            )
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.setdefault(topic, []).append((value, fut))
        return fut

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for topic, batch in pending.items():
            self.batches.append([v for v, _ in batch])
            err: Exception | None = None
            if topic in self.unauthorized:
                err = TopicAuthorizationFailedError(topic)
            elif topic in self.invalid:
                err = InvalidTopicError()
            elif topic in self.unavailable:
                err = self.unavailable[topic]()
            elif any(len(v) > self.broker_limit for v, _ in batch):
                err = MessageSizeTooLargeError()
            for v, fut in batch:
                if err is None:
                    self.acked.append(v)
                    fut.set_result(None)
                else:
                    fut.set_exception(err)


def rec(topic: str, value: bytes) -> OutRecord:
    return OutRecord(topic, b"k", value, [("event_id", value[:8])])


def sink_of(producer: FakeProducer) -> KafkaSink:
    return KafkaSink(producer=cast(Any, producer))


async def test_everything_acknowledged_returns() -> None:
    p = FakeProducer()
    await sink_of(p).write([rec("a", b"1"), rec("b", b"2"), rec("a", b"3")])
    assert sorted(p.acked) == [b"1", b"2", b"3"]
    assert len(p.sends) == 3


async def test_an_empty_write_sends_nothing() -> None:
    p = FakeProducer()
    await sink_of(p).write([])
    assert p.sends == []


async def test_a_record_over_max_request_size_is_refused_alone_and_the_rest_acknowledged() -> None:
    p = FakeProducer(max_request_size=100)
    records = [rec("a", b"small-0"), rec("a", b"x" * 101), rec("b", b"small-2")]
    with pytest.raises(PublishRejected) as info:
        await sink_of(p).write(records)
    e = info.value
    assert e.failed == {1: "MessageSizeTooLargeError"}
    assert not e.retriable and e.stage == "publish" and e.error_class == "PublishRejected"
    assert sorted(p.acked) == [b"small-0", b"small-2"]
    assert len(p.sends) == 3  # no confirmation needed: send() refused that record itself
    assert "a (101 B): MessageSizeTooLargeError" in e.message
    assert "max.message.bytes" in e.message and "max_request_size" in e.message


async def test_a_batch_the_broker_refuses_is_narrowed_to_the_record_too_large_alone() -> None:
    p = FakeProducer(broker_limit=100)
    records = [rec("a", b"small-0"), rec("a", b"y" * 200), rec("a", b"small-2"), rec("b", b"ok-3")]
    with pytest.raises(PublishRejected) as info:
        await sink_of(p).write(records)
    assert info.value.failed == {1: "MessageSizeTooLargeError"}
    # the whole batch of topic a was refused, then its records were sent again one by one
    assert p.batches[0] == [b"small-0", b"y" * 200, b"small-2"]
    assert p.batches[2:] == [[b"small-0"], [b"y" * 200], [b"small-2"]]
    assert sorted(p.acked) == [b"ok-3", b"small-0", b"small-2"]  # each once


async def test_a_single_refused_record_is_not_sent_again() -> None:
    p = FakeProducer(broker_limit=100)
    with pytest.raises(PublishRejected) as info:
        await sink_of(p).write([rec("a", b"z" * 200), rec("b", b"ok")])
    assert info.value.failed == {0: "MessageSizeTooLargeError"}
    assert len(p.sends) == 2 and p.acked == [b"ok"]


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"unauthorized": ["secret"]}, "TopicAuthorizationFailedError"),
        ({"invalid": ["secret"]}, "InvalidTopicError"),
    ],
)
async def test_a_topic_that_cannot_be_written_refuses_its_records(
    kw: dict[str, Any], error: str
) -> None:
    p = FakeProducer(**kw)
    records = [rec("secret", b"s0"), rec("open", b"o1"), rec("secret", b"s2")]
    with pytest.raises(PublishRejected) as info:
        await sink_of(p).write(records)
    assert info.value.failed == {0: error, 2: error}
    assert p.acked == [b"o1"]
    assert len(p.sends) == 3  # about the topic, not the record: not sent again one by one
    assert "2 of 3 records" in info.value.message


@pytest.mark.parametrize(
    "error", [LeaderNotAvailableError, RequestTimedOutError, KafkaTimeoutError]
)
async def test_retriable_errors_are_an_outage_to_retry(error: type[Exception]) -> None:
    p = FakeProducer(unavailable={"a": error})
    with pytest.raises(DependencyError) as info:
        await sink_of(p).write([rec("a", b"1"), rec("b", b"2")])
    assert info.value.retriable and info.value.stage == "publish"
    assert error.__name__ in info.value.message
    assert isinstance(info.value.__cause__, error)


async def test_an_outage_beside_a_refusal_is_retried_not_dead_lettered() -> None:
    # PublishRejected promises every other record was acknowledged: not the case here
    p = FakeProducer(max_request_size=100, unavailable={"b": LeaderNotAvailableError})
    with pytest.raises(DependencyError):
        await sink_of(p).write([rec("a", b"x" * 101), rec("b", b"2"), rec("a", b"3")])


async def test_a_full_buffer_stops_sending_and_awaits_what_was_sent() -> None:
    p = FakeProducer(buffer_full_after=2)
    with pytest.raises(DependencyError) as info:
        await sink_of(p).write([rec("a", bytes([i])) for i in range(5)])
    assert "KafkaTimeoutError" in info.value.message
    assert len(p.sends) == 2 and sorted(p.acked) == [b"\x00", b"\x01"]


def test_permanent_errors_are_about_the_record_or_its_topic_never_an_outage() -> None:
    names = {e.__name__ for e in PERMANENT_ERRORS}
    assert {
        "MessageSizeTooLargeError",
        "RecordListTooLargeError",
        "InvalidTopicError",
        "TopicAuthorizationFailedError",
    } <= names
    for outage in (
        "KafkaTimeoutError",
        "RequestTimedOutError",
        "LeaderNotAvailableError",
        "NotLeaderForPartitionError",
        "KafkaConnectionError",
        "BrokerNotAvailableError",
        "UnknownTopicOrPartitionError",
        "NotEnoughReplicasError",
    ):
        assert outage not in names
