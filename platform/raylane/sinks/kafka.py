"""The Kafka sink: output records produced without awaiting each send, then all acks awaited.

Each record's acknowledgement is awaited on its own, so a write knows which records Kafka
refused and why. An error that sending again cannot fix (:data:`PERMANENT_ERRORS`: a record
over the size limit, an invalid topic, a topic this client may not write to) is reported as
:class:`~raylane.errors.PublishRejected` naming the refused records, once every other record
is acknowledged; anything else (time-outs, leader changes, a broker that went away, and any
error not on that list) is a retriable :class:`~raylane.errors.DependencyError` and the
caller writes the batch again.

The broker refuses a whole producer batch at once (all records of one partition sent
together), so records refused with a size or timestamp error (:data:`RECORD_ERRORS`) are
sent again one at a time: only a record refused on its own is reported.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTimestampError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)

from raylane.errors import DependencyError, PublishRejected
from raylane.kafka.client import KafkaConnection, connection
from raylane.kafka.records import OutRecord

__all__ = ["PERMANENT_ERRORS", "RECORD_ERRORS", "TOPIC_ERRORS", "KafkaSink"]

log = logging.getLogger("raylane.sinks")

#: The record is refused for what it is (too large for max.message.bytes or the producer's
#: max_request_size, a batch over the segment size, a timestamp out of the topic's range).
#: The broker refuses the whole producer batch holding it, so these are confirmed alone.
RECORD_ERRORS: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTimestampError,
)
#: No record can be written to the topic (an illegal name, no write permission, a message
#: format too old for headers) until an operator changes it.
TOPIC_ERRORS: tuple[type[Exception], ...] = (
    InvalidTopicError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)
#: Errors that sending the same record again cannot fix. aiokafka marks nearly every error
#: ``retriable = False`` (its time-outs and "broker not available" included), so this is an
#: explicit list; every other error is treated as an outage and retried.
PERMANENT_ERRORS: tuple[type[Exception], ...] = RECORD_ERRORS + TOPIC_ERRORS

_SHOWN = 3  # refused records detailed in an error message


class KafkaSink:
    """Writes :class:`~raylane.kafka.records.OutRecord` s to their topics (acks=all)."""

    def __init__(
        self,
        kafka: str | KafkaConnection | None = None,
        *,
        client_id: str = "raylane-sink",
        producer: AIOKafkaProducer | None = None,
        **options: Any,
    ) -> None:
        self.kafka = connection(kafka) if producer is None else None
        self.client_id = client_id
        self._options = options
        self._producer = producer

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaSink.start() was not called")
        return self._producer

    async def start(self) -> None:
        if self._producer is None:
            assert self.kafka is not None
            self._producer = self.kafka.producer(client_id=self.client_id, **self._options)
        try:
            await self._producer.start()
        except Exception as e:
            await self.close()
            where = self.kafka.bootstrap if self.kafka else "the broker"
            raise DependencyError(
                f"cannot reach Kafka at {where}: {e}; is the broker up (`raylane dev status`)?",
                stage="publish",
            ) from e

    async def write(self, records: Sequence[OutRecord]) -> None:
        """Send everything without awaiting each send, then await each acknowledgement.

        Returns once every record is acknowledged. Raises PublishRejected naming the records
        Kafka refused for good (:data:`PERMANENT_ERRORS`) when all others were acknowledged,
        else DependencyError (retriable: write the same records again).
        """
        if not records:
            return
        p = self.producer
        futures: list[asyncio.Future[Any] | None] = []
        refused: dict[int, BaseException] = {}
        outage: BaseException | None = None
        for i, o in enumerate(records):
            try:
                futures.append(await p.send(o.topic, o.value, key=o.key, headers=o.headers))
            except PERMANENT_ERRORS as e:  # raised before sending: about this record alone
                futures.append(None)
                refused[i] = e
            except Exception as e:  # buffer full, no metadata: the rest would fail alike
                outage = e
                break
        confirm: list[int] = []
        for i, fut in enumerate(futures):
            if fut is None:
                continue
            try:
                await fut
            except RECORD_ERRORS as e:
                refused[i] = e
                confirm.append(i)
            except TOPIC_ERRORS as e:
                refused[i] = e
            except Exception as e:  # every future is awaited: none is left unretrieved
                outage = outage or e
        if outage is not None:
            raise DependencyError(
                f"publishing to Kafka failed: {type(outage).__name__}: {outage}; the batch is "
                "sent again",
                stage="publish",
            ) from outage
        if len(confirm) > 1:  # refused with their producer batch: find which were refused alone
            for i in confirm:
                o = records[i]
                try:
                    await (await p.send(o.topic, o.value, key=o.key, headers=o.headers))
                except PERMANENT_ERRORS as e:
                    refused[i] = e
                    continue
                except Exception as e:
                    raise DependencyError(
                        f"publishing to Kafka failed: {type(e).__name__}: {e}; the batch is "
                        "sent again",
                        stage="publish",
                    ) from e
                del refused[i]
        if refused:
            raise _rejected(records, refused)

    async def close(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception:  # closing is best effort; offsets were committed per batch
                log.exception("error closing the %s producer", self.client_id)


def _rejected(records: Sequence[OutRecord], refused: dict[int, BaseException]) -> PublishRejected:
    shown = "; ".join(
        f"{records[i].topic} ({len(records[i].value)} B): {type(e).__name__}: {e}"
        for i, e in list(refused.items())[:_SHOWN]
    )
    more = f" and {len(refused) - _SHOWN} more" if len(refused) > _SHOWN else ""
    return PublishRejected(
        f"Kafka refused {len(refused)} of {len(records)} records for good ({shown}{more}); "
        "the others were acknowledged. A record over the size limit needs a larger "
        "max.message.bytes on its topic (and producer max_request_size) or a smaller output; "
        "an invalid or unauthorized topic needs its name or ACLs fixed",
        failed={i: type(e).__name__ for i, e in refused.items()},
        stage="publish",
    )
