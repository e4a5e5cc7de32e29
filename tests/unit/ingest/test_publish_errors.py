"""Outputs Kafka refuses for good, on in-memory fakes (raylane.testing.fakes): the input of a
refused output is dead-lettered (PublishRejected), the rest of the batch is published, the
offsets are committed and the loop goes on; a refused dead letter never loops; outages are
still retried without dead-lettering. No broker, no Redis, no Ray; every wait is bounded."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from aiokafka import TopicPartition

from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.ingest.consumer import IngressLoop
from raylane.kafka import deadletters as D
from raylane.kafka.records import InRecord, OutRecord, header
from raylane.monitoring.metrics import METRICS
from raylane.testing.fakes import (
    EventLog,
    FakeConsumer,
    FakeModel,
    FakeOnline,
    FakeSink,
    FakeWindows,
    RejectFor,
    fake_pipeline,
)

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[3]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
TOPIC = "payments.initiated"
SCORED, FLAGGED = "payments.scored", "payments.flagged"
TP0 = TopicPartition(TOPIC, 0)
T0 = 1_700_000_000_000
WAIT_S = 5.0  # upper bound on any wait for the loop; hit only when the loop is stuck
TOO_LARGE, UNAUTHORIZED = "MessageSizeTooLargeError", "TopicAuthorizationFailedError"


def loop_cfg() -> PipelineConfig:
    args = copy.deepcopy(yaml.safe_load(FRAUD.read_text())["applications"][0]["args"])
    args["ingress"].update({"max_batch_size": 100, "max_wait_ms": 0})
    args["breaker"] = {"fail_max": 3, "reset_timeout_s": 0.005}  # back-off sleeps <= 5 ms
    return PipelineConfig.from_args(args)


def payment(i: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "correlation_id": f"c{i}",
        "user_id": f"u{i % 3}",
        "merchant_id": f"m{i % 2}",
        "merchant_category": "electronics",
        "amount": float(100 + 97 * i),  # scores amount / 1000: e8 (876) is flagged
        "currency": "EUR",
        "user_history_hash": f"h{i}",
        "event_time": T0 + 1000 * i,
    }


def by_amount(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.minimum(cols["amount"] / 1000.0, 1.0)


def h(rec: OutRecord, name: str) -> str | None:
    raw = header(rec.headers, name)
    return raw.decode() if raw is not None else None


def eid(rec: OutRecord) -> str | None:
    return h(rec, "event_id")


def refuse(error: str, *, topic: str | None = None, events: set[str] | None = None) -> RejectFor:
    """Refuse records of `topic` (any, when None) whose event is in `events` (any, when None)."""

    def reject_for(rec: OutRecord) -> str | None:
        if topic is not None and rec.topic != topic:
            return None
        if events is not None and eid(rec) not in events:
            return None
        return error

    return reject_for


def either(*fns: RejectFor) -> RejectFor:
    def reject_for(rec: OutRecord) -> str | None:
        for fn in fns:
            err = fn(rec)
            if err is not None:
                return err
        return None

    return reject_for


def rejected_count(cfg: PipelineConfig, error: str, record: str) -> float:
    lab = {"pipeline": cfg.name, "error": error, "record": record}
    return float(METRICS.publish_rejected.labels(**lab)._value.get())


class Rig:
    """One ingress loop on fakes, all logging to one EventLog."""

    def __init__(self, *, reject_for: RejectFor | None = None) -> None:
        self.cfg = cfg = loop_cfg()
        self.log = log = EventLog()
        self.codec = Codec.for_contract(cfg.input.contract)
        self.consumer = FakeConsumer({TOPIC: 1}, log=log)
        self.sink = FakeSink(log=log, reject_for=reject_for)
        self.model = FakeModel(by_amount, log=log)
        self.pipeline = fake_pipeline(
            cfg,
            model=self.model,
            windows=FakeWindows(cfg.features.windows, log=log),
            online=FakeOnline(cfg.features.online, log=log),
        )
        self.loop = IngressLoop(
            cfg, processor=self.pipeline.processor, consumer=self.consumer, sink=self.sink
        )
        self.offset: dict[str, int] = {}
        self.values: dict[str, bytes] = {}
        self.task: asyncio.Task[None] | None = None

    def send(self, *events: dict[str, Any]) -> None:
        for ev in events:
            value = self.codec.encode(ev)
            self.offset[ev["event_id"]] = self.consumer.produce(
                TOPIC, value, key=ev["user_id"].encode(), timestamp_ms=ev["event_time"]
            )
            self.values[ev["event_id"]] = value

    def send_raw(self, value: bytes) -> int:
        return self.consumer.produce(TOPIC, value, key=b"k", timestamp_ms=T0)

    async def start(self) -> None:
        await self.loop.start()
        self.task = asyncio.get_running_loop().create_task(self.loop.run())

    async def until(self, cond: Callable[[], bool], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not cond():
            if self.task is not None and self.task.done():
                self.task.result()
                pytest.fail(f"the loop ended before {what}")
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"timed out waiting for {what}; log: {self.log.kinds()[-20:]}")
            await asyncio.sleep(0.001)

    async def all_committed(self) -> None:
        await self.until(lambda: self.consumer.uncommitted() == 0, "every offset committed")

    async def close(self) -> None:
        await self.loop.close()
        assert self.task is not None
        await asyncio.wait_for(self.task, WAIT_S)

    def dead_letters(self) -> list[OutRecord]:
        return self.sink.on(self.cfg.input.dlq)


async def test_a_refused_output_dead_letters_its_input_and_the_rest_is_published() -> None:
    rig = Rig(reject_for=refuse(TOO_LARGE, topic=SCORED, events={"e2"}))
    before = rejected_count(rig.cfg, TOO_LARGE, "output")
    rig.send(*[payment(i) for i in range(6)])
    await rig.start()
    await rig.all_committed()

    # every other output is published, once
    assert [eid(r) for r in rig.sink.on(SCORED)] == ["e0", "e1", "e3", "e4", "e5"]
    assert [(r.topic, eid(r)) for r in rig.sink.rejected] == [(SCORED, "e2")]
    # the input of the refused output is dead-lettered, with the standard headers
    (dl,) = rig.dead_letters()
    assert h(dl, D.H_CLASS) == "PublishRejected" and h(dl, D.H_STAGE) == "publish"
    assert h(dl, D.H_TOPIC) == TOPIC and h(dl, D.H_PARTITION) == "0"
    assert h(dl, D.H_OFFSET) == str(rig.offset["e2"])
    assert h(dl, D.H_CORRELATION) == "c2" and h(dl, D.H_GENERATED) is None
    message = h(dl, D.H_MESSAGE) or ""
    assert TOO_LARGE in message and SCORED in message and "max.message.bytes" in message
    assert dl.value == rig.values["e2"] and dl.key == b"u2"  # small: the original bytes
    assert h(dl, D.H_TRUNCATED) is None
    # acknowledged, then the dead letter, then the commit
    writes, commits = rig.log.positions("write"), rig.log.positions("commit")
    assert rig.log.positions("write-rejected")[0] < writes[1] < commits[0]
    assert rig.consumer.commits == [{TP0: 6}]
    s = rig.loop.stats
    assert (s.rejected, s.dlq, s.scored, s.dead_letters_lost) == (1, 1, 6, 0)
    assert s.retries == 0 and not s.paused
    assert rejected_count(rig.cfg, TOO_LARGE, "output") == before + 1

    # the loop goes on with the next batch
    rig.send(*[payment(i) for i in range(6, 8)])
    await rig.all_committed()
    await rig.close()
    assert [eid(r) for r in rig.sink.on(SCORED)][-2:] == ["e6", "e7"]
    assert rig.consumer.commits[-1] == {TP0: 8} and len(rig.dead_letters()) == 1


async def test_an_input_whose_outputs_are_all_refused_gets_one_dead_letter() -> None:
    # e8 scores 0.876: a scored and a flagged output, both refused
    rig = Rig(reject_for=refuse(TOO_LARGE, events={"e8"}))
    rig.send(*[payment(i) for i in range(7, 10)])
    await rig.start()
    await rig.all_committed()
    await rig.close()

    assert sorted((r.topic, eid(r)) for r in rig.sink.rejected) == [(FLAGGED, "e8"), (SCORED, "e8")]
    (dl,) = rig.dead_letters()
    assert h(dl, D.H_OFFSET) == str(rig.offset["e8"])
    assert SCORED in (h(dl, D.H_MESSAGE) or "") and FLAGGED in (h(dl, D.H_MESSAGE) or "")
    assert [eid(r) for r in rig.sink.on(SCORED)] == ["e7", "e9"]
    assert [eid(r) for r in rig.sink.on(FLAGGED)] == ["e9"]  # e9 scores 0.973
    assert rig.loop.stats.rejected == 2 and rig.consumer.commits == [{TP0: 3}]


async def test_one_refused_output_of_an_input_still_dead_letters_it_once() -> None:
    rig = Rig(reject_for=refuse(UNAUTHORIZED, topic=FLAGGED))
    rig.send(*[payment(i) for i in range(7, 10)])
    await rig.start()
    await rig.all_committed()
    await rig.close()

    # every event's scored output is out; the flagged topic refuses e8 and e9
    assert [eid(r) for r in rig.sink.on(SCORED)] == ["e7", "e8", "e9"]
    dls = rig.dead_letters()
    assert [h(d, D.H_OFFSET) for d in dls] == [str(rig.offset["e8"]), str(rig.offset["e9"])]
    assert all(UNAUTHORIZED in (h(d, D.H_MESSAGE) or "") for d in dls)
    assert rig.consumer.commits == [{TP0: 3}]


async def test_a_refused_dead_letter_is_dropped_counted_and_the_batch_committed() -> None:
    # the scored output of e1 is too large, and the DLQ topic refuses everything
    rig = Rig(
        reject_for=either(
            refuse(TOO_LARGE, topic=SCORED, events={"e1"}),
            refuse(UNAUTHORIZED, topic="payments.initiated.dlq"),
        )
    )
    assert rig.cfg.input.dlq == "payments.initiated.dlq"
    before = rejected_count(rig.cfg, UNAUTHORIZED, "dead_letter")
    rig.send(payment(0), payment(1))
    rig.send_raw(b"\x00not an event")  # a decode failure: its own dead letter, refused too
    rig.send(payment(3))
    await rig.start()
    await rig.all_committed()

    # no loop: the batch's write, then the one minimal dead letter's; then the commit
    assert rig.sink.attempts == 2
    assert rig.consumer.commits == [{TP0: 4}]
    assert [eid(r) for r in rig.sink.on(SCORED)] == ["e0", "e3"]
    assert rig.dead_letters() == []
    refused_dls = [r for r in rig.sink.rejected if r.topic == rig.cfg.input.dlq]
    classes = [h(d, D.H_CLASS) for d in refused_dls]  # the decode failure's, then e1's
    assert len(classes) == 2 and classes[1] == "PublishRejected" != classes[0]
    s = rig.loop.stats
    assert (s.rejected, s.dead_letters_lost, s.dlq) == (1, 2, 0)
    assert rejected_count(rig.cfg, UNAUTHORIZED, "dead_letter") == before + 2

    rig.send(payment(4))  # and the loop goes on
    await rig.all_committed()
    await rig.close()
    assert rig.consumer.commits[-1] == {TP0: 5}


async def test_outages_are_retried_without_dead_lettering() -> None:
    rig = Rig()
    before = rejected_count(rig.cfg, TOO_LARGE, "output")
    rig.sink.outages.fail_next(3)
    rig.send(*[payment(i) for i in range(4)])
    await rig.start()
    await rig.all_committed()
    await rig.close()

    assert rig.sink.attempts == 4 and len(rig.log.of("write-fail")) == 3
    assert [eid(r) for r in rig.sink.on(SCORED)] == ["e0", "e1", "e2", "e3"]
    assert rig.dead_letters() == [] and rig.sink.rejected == []
    s = rig.loop.stats
    assert s.retries == 3 and s.rejected == 0 and s.dlq == 0
    assert rejected_count(rig.cfg, TOO_LARGE, "output") == before


async def test_an_outage_while_dead_lettering_retries_only_the_dead_letter() -> None:
    rig = Rig(reject_for=refuse(TOO_LARGE, topic=SCORED, events={"e1"}))
    rig.send(*[payment(i) for i in range(3)])
    # the batch's write is refused in part; the next two writes (the dead letter's) fail
    rig.sink.outages.fail_next(2, after=1)
    await rig.start()
    await rig.all_committed()
    await rig.close()

    assert rig.sink.attempts == 4
    failed = rig.log.of("write-fail")
    assert len(failed) == 2 and all(
        [h(r, D.H_CLASS) for r in f] == ["PublishRejected"] for f in failed
    )
    assert [eid(r) for r in rig.sink.on(SCORED)] == ["e0", "e2"]  # published once each
    (dl,) = rig.dead_letters()
    assert h(dl, D.H_OFFSET) == str(rig.offset["e1"])
    assert rig.loop.stats.retries == 2 and rig.consumer.commits == [{TP0: 3}]


def test_the_minimal_dead_letter_fits_any_broker_limit() -> None:
    rig = Rig()
    big = InRecord(
        TOPIC,
        2,
        41,
        key=b"k" * 5000,
        value=b"v" * (900 << 10),
        headers=[("correlation_id", b"c9"), ("blob", b"x" * (20 << 10))],
    )
    out = OutRecord(
        SCORED, b"k", b"o" * (2 << 20), [("correlation_id", b"c9"), ("event_id", b"e9")]
    )
    dl = rig.loop._rejected_letter(big, [(out, TOO_LARGE)])

    assert dl.topic == rig.cfg.input.dlq
    assert len(dl.value) == D.DLQ_KEEP_BYTES and h(dl, D.H_TRUNCATED) == "true"
    assert h(dl, D.H_ORIGINAL_SIZE) == str(900 << 10)
    assert dl.key is not None and len(dl.key) == 1024 and h(dl, D.H_KEY_TRUNCATED) == "5000"
    assert h(dl, "blob") is None and h(dl, D.H_HEADERS_DROPPED) is not None
    assert h(dl, D.H_TOPIC) == TOPIC and h(dl, D.H_PARTITION) == "2" and h(dl, D.H_OFFSET) == "41"
    assert h(dl, D.H_CORRELATION) == "c9" and h(dl, D.H_GENERATED) is None
    size = len(dl.value) + len(dl.key) + sum(len(k) + len(v) for k, v in dl.headers)
    assert size < 100 << 10  # far under the 1 MB default of max.message.bytes


def test_an_output_without_a_correlation_header_gets_a_generated_one() -> None:
    rig = Rig()
    src = InRecord(TOPIC, 0, 7, key=None, value=b"{}")
    dl = rig.loop._rejected_letter(src, [(OutRecord(SCORED, None, b"o", []), TOO_LARGE)])
    assert h(dl, D.H_GENERATED) == "true" and h(dl, D.H_CORRELATION)


async def test_each_output_records_its_input() -> None:
    cfg = loop_cfg()
    pipe = fake_pipeline(cfg, model=FakeModel(by_amount))
    codec = Codec.for_contract(cfg.input.contract)
    records = [
        InRecord(TOPIC, 0, i, key=b"k", value=codec.encode(payment(i)), timestamp_ms=T0)
        for i in range(10)
    ]
    records.insert(3, InRecord(TOPIC, 0, 99, key=b"k", value=b"\x00bad", timestamp_ms=T0))
    result = await pipe.processor.process(records)

    assert len(result.dlq) == 1 and len(result.sources) == len(result.outputs)
    assert {o.topic for o in result.outputs} == {SCORED, FLAGGED}
    for out, src in zip(result.outputs, result.sources, strict=True):
        assert eid(out) == codec.decode(src.value or b"")["event_id"]
    # halves merged in order keep their sources in step
    merged = result.merge(await pipe.processor.process(records[:2]))
    assert len(merged.sources) == len(merged.outputs)
    assert [s.offset for s in merged.sources[-2:]] == [0, 1]
