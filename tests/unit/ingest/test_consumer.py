"""The ingress loop on in-memory fakes (raylane.testing.fakes): batching, commit after the
sink's acknowledgement, pause + retry on outages, poison isolation, publish retries,
rebalances and close. No broker, no Redis, no Ray; every wait is bounded (a hang fails)."""

from __future__ import annotations

import asyncio
import contextlib
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
from raylane.errors import ContractError
from raylane.ingest.consumer import IngressLoop
from raylane.kafka import deadletters as D
from raylane.kafka.records import OutRecord, header
from raylane.testing.fakes import (
    EventLog,
    FakeConsumer,
    FakeModel,
    FakeOnline,
    FakeSink,
    FakeWindows,
    fake_pipeline,
)

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[3]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
TOPIC = "payments.initiated"
TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
T0 = 1_700_000_000_000
WAIT_S = 5.0  # upper bound on any wait for the loop; hit only when the loop is stuck


def loop_cfg(**ingress: Any) -> PipelineConfig:
    args = copy.deepcopy(yaml.safe_load(FRAUD.read_text())["applications"][0]["args"])
    args["ingress"].update({"max_batch_size": 100, "max_wait_ms": 0, **ingress})
    args["breaker"] = {"fail_max": 3, "reset_timeout_s": 0.005}  # back-off sleeps <= 5 ms
    return PipelineConfig.from_args(args)


def payment(i: int, amount: float | None = None) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "correlation_id": f"c{i}",
        "user_id": f"u{i % 3}",
        "merchant_id": f"m{i % 2}",
        "merchant_category": "electronics",
        "amount": float(amount if amount is not None else 100 + 97 * i),
        "currency": "EUR",
        "user_history_hash": f"h{i}",
        "event_time": T0 + 1000 * i,
    }


def by_amount(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.minimum(cols["amount"] / 1000.0, 1.0)


def eid(rec: OutRecord) -> str:
    raw = header(rec.headers, "event_id")
    assert raw is not None
    return raw.decode()


def h(rec: OutRecord, name: str) -> str | None:
    raw = header(rec.headers, name)
    return raw.decode() if raw is not None else None


class Rig:
    """One ingress loop on fakes, all logging to one EventLog."""

    def __init__(
        self,
        *,
        partitions: int = 1,
        max_per_fetch: int | None = None,
        model: FakeModel | None = None,
        windows_raise_for: Callable[[Mapping[str, Any]], BaseException | None] | None = None,
        sink_gate: asyncio.Event | None = None,
        **ingress: Any,
    ) -> None:
        self.cfg = cfg = loop_cfg(**ingress)
        self.log = log = EventLog()
        self.codec = Codec.for_contract(cfg.input.contract)
        self.consumer = FakeConsumer({TOPIC: partitions}, log=log, max_per_fetch=max_per_fetch)
        self.sink = FakeSink(log=log, gate=sink_gate)
        self.model = model or FakeModel(by_amount)
        self.model.log = log
        self.windows = FakeWindows(cfg.features.windows, raise_for=windows_raise_for, log=log)
        self.pipeline = fake_pipeline(
            cfg,
            model=self.model,
            windows=self.windows,
            online=FakeOnline(cfg.features.online, log=log),
        )
        self.loop = IngressLoop(
            cfg, processor=self.pipeline.processor, consumer=self.consumer, sink=self.sink
        )
        self.where: dict[str, tuple[int, int]] = {}  # event id -> (partition, offset)
        self.values: dict[str, bytes] = {}
        self.task: asyncio.Task[None] | None = None

    def send(self, *events: dict[str, Any], partition: int = 0) -> None:
        for ev in events:
            value = self.codec.encode(ev)
            off = self.consumer.produce(
                TOPIC,
                value,
                key=ev["user_id"].encode(),
                partition=partition,
                timestamp_ms=ev["event_time"],
            )
            self.where[ev["event_id"]] = (partition, off)
            self.values[ev["event_id"]] = value

    async def start(self) -> None:
        await self.loop.start()
        self.task = asyncio.get_running_loop().create_task(self.loop.run())

    async def until(self, cond: Callable[[], bool], what: str) -> None:
        """Let the loop run until `cond` holds (bounded: a stuck loop fails the test)."""
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not cond():
            if self.task is not None and self.task.done():
                self.task.result()  # the loop died: raise its error
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

    def expected_commit(self, written: list[OutRecord]) -> dict[TopicPartition, int]:
        """Offsets a write's inputs commit, from what the test produced (not the code's)."""
        out: dict[TopicPartition, int] = {}
        for r in written:
            src = h(r, D.H_OFFSET)  # a dead letter names its source; an output its event
            if src is not None:
                tp = TopicPartition(TOPIC, int(h(r, D.H_PARTITION) or -1))
                off = int(src)
            else:
                p, off = self.where[eid(r)]
                tp = TopicPartition(TOPIC, p)
            out[tp] = max(out.get(tp, 0), off + 1)
        return out


async def settle_ticks(n: int = 20) -> None:
    """Give every ready task a chance to run (no timing involved)."""
    for _ in range(n):
        await asyncio.sleep(0)


# -- batching -------------------------------------------------------------------------------------


async def test_batches_are_at_most_max_batch_size() -> None:
    rig = Rig(max_batch_size=4)
    rig.send(*[payment(i) for i in range(10)])
    await rig.start()
    await rig.all_committed()
    await rig.close()

    assert rig.model.batch_sizes == [4, 4, 2]
    assert rig.consumer.commits == [{TP0: 4}, {TP0: 8}, {TP0: 10}]
    scored = [[eid(r) for r in w if r.topic == "payments.scored"] for w in rig.sink.writes]
    assert scored == [["e0", "e1", "e2", "e3"], ["e4", "e5", "e6", "e7"], ["e8", "e9"]]
    s = rig.loop.stats
    assert (s.batches, s.events_in, s.scored, s.commits, s.dlq) == (3, 10, 10, 3, 0)


async def test_a_batch_fills_across_fetches_up_to_max_batch_size() -> None:
    # the broker hands out 2 records per fetch; max_wait_ms is long but the batch fills first
    rig = Rig(max_batch_size=5, max_wait_ms=60_000, max_per_fetch=2)
    rig.send(*[payment(i) for i in range(5)])
    await rig.start()
    await rig.all_committed()
    await rig.close()
    assert rig.model.batch_sizes == [5]
    assert len(rig.log.of("fetch")) == 3


async def test_a_batch_waits_for_late_records_within_max_wait_ms() -> None:
    rig = Rig(max_batch_size=2, max_wait_ms=60_000)
    rig.send(payment(0))
    await rig.start()
    await rig.until(lambda: bool(rig.log.of("fetch")), "the first record fetched")
    await settle_ticks()
    assert rig.model.calls == 0  # still waiting for the batch to fill
    rig.send(payment(1))
    await rig.all_committed()
    await rig.close()
    assert rig.model.batch_sizes == [2]
    assert rig.consumer.commits == [{TP0: 2}]


async def test_a_partial_batch_goes_when_max_wait_ms_is_up() -> None:
    rig = Rig(max_batch_size=100, max_wait_ms=20)
    rig.send(*[payment(i) for i in range(3)])
    await rig.start()
    await rig.all_committed()  # would hang if the loop waited for a full batch
    await rig.close()
    assert rig.model.batch_sizes == [3]


# -- commit order ---------------------------------------------------------------------------------


async def test_offsets_are_committed_only_after_the_sink_acknowledged_in_batch_order() -> None:
    gate = asyncio.Event()
    rig = Rig(partitions=2, max_batch_size=3, sink_gate=gate)
    rig.send(*[payment(i) for i in range(6)], partition=0)
    rig.send(*[payment(i) for i in range(6, 9)], partition=1)
    await rig.start()

    await rig.until(lambda: bool(rig.log.of("write-start")), "the first write")
    await settle_ticks()
    # the sink has not acknowledged: nothing is committed and the next batch is not published
    assert rig.consumer.commits == [] and rig.sink.writes == []
    assert len(rig.log.of("write-start")) == 1
    gate.set()
    await rig.all_committed()
    await rig.close()

    writes, commits = rig.log.positions("write"), rig.log.positions("commit")
    starts = rig.log.positions("write-start")
    assert len(writes) == len(commits) == len(starts) == 3
    for k in range(3):
        assert writes[k] < commits[k]  # acknowledged, then committed
        if k + 1 < 3:
            assert commits[k] < starts[k + 1]  # batch k+1 goes out after batch k committed
    assert rig.consumer.commits == [rig.expected_commit(w) for w in rig.sink.writes]
    assert rig.consumer.commits == [{TP0: 3}, {TP0: 6}, {TP1: 3}]
    ids = [eid(r) for r in rig.sink.records if r.topic == "payments.scored"]
    assert ids == [f"e{i}" for i in range(9)]  # every event once, in order


# -- outages --------------------------------------------------------------------------------------


async def test_an_outage_pauses_and_retries_the_same_batch_until_it_succeeds() -> None:
    rig = Rig(model=FakeModel(by_amount, fail_times=3))
    rig.send(*[payment(i) for i in range(5)])
    await rig.start()
    await rig.all_committed()
    kinds = rig.log.kinds()
    await rig.close()

    fails = rig.log.positions("predict-fail")
    ok = rig.log.positions("predict")
    assert len(fails) == 3 and len(ok) == 1 and max(fails) < ok[0]
    # paused before the first retry, resumed only once the batch went through
    first_retry = rig.log.positions("predict-start")[1]
    pauses, resumes = rig.log.positions("pause"), rig.log.positions("resume")
    assert pauses and fails[0] < pauses[0] < first_retry
    assert rig.log.of("pause")[0] == [TP0]
    assert resumes and ok[0] < resumes[0] and all(r > ok[0] for r in resumes)
    # nothing published or committed while failing
    assert min(rig.log.positions("write-start")) > ok[0]
    assert min(rig.log.positions("commit")) > ok[0]
    # the same batch each time (window features recomputed for the same events)
    assert rig.windows.calls == [[f"e{i}" for i in range(5)]] * 4
    assert len(rig.sink.writes) == 1
    assert [eid(r) for r in rig.sink.on("payments.scored")] == [f"e{i}" for i in range(5)]
    assert rig.consumer.commits == [{TP0: 5}]
    s = rig.loop.stats
    assert s.retries == 3 and not s.paused and s.poison == 0 and s.isolations == 0
    assert rig.consumer.paused() == set()
    assert "fetch" not in kinds[rig.log.positions("pause")[0] : ok[0]]  # paused: no fetching


async def test_a_sink_failure_retries_publishing_without_reprocessing() -> None:
    rig = Rig()
    rig.sink.outages.fail_next(2)
    rig.send(*[payment(i) for i in range(4)])
    await rig.start()
    await rig.all_committed()
    await rig.close()

    assert rig.model.calls == 1 and rig.windows.calls == [[f"e{i}" for i in range(4)]]
    assert rig.sink.attempts == 3 and len(rig.sink.writes) == 1
    # the retried write is the same records
    failed = rig.log.of("write-fail")
    assert len(failed) == 2 and failed[0] == failed[1] == rig.sink.writes[0]
    (commit,) = rig.log.positions("commit")
    assert commit > max(rig.log.positions("write-fail")) and commit > rig.log.positions("write")[0]
    assert rig.consumer.commits == [{TP0: 4}]
    assert rig.loop.stats.retries == 2 and not rig.loop.stats.paused
    assert rig.consumer.paused() == set()


# -- poison records -------------------------------------------------------------------------------


def _window_poison(event_id: str) -> Callable[[Mapping[str, Any]], BaseException | None]:
    def raise_for(ev: Mapping[str, Any]) -> BaseException | None:
        if ev["event_id"] == event_id:
            return ContractError(f"window input of {event_id} is unusable", stage="features")
        return None

    return raise_for


def _model_poison(amount: float) -> Callable[[Mapping[str, Any]], BaseException | None]:
    def raise_for(row: Mapping[str, Any]) -> BaseException | None:
        return ValueError(f"cannot score amount {amount}") if row["amount"] == amount else None

    return raise_for


@pytest.mark.parametrize("poison_retries", [0, 2])
@pytest.mark.parametrize("source", ["windows", "model"])
async def test_a_poison_record_is_isolated_and_the_rest_scored_and_committed(
    source: str, poison_retries: int
) -> None:
    events = [payment(i) for i in range(6)]
    events[3]["amount"] = 13.37
    if source == "windows":
        rig = Rig(windows_raise_for=_window_poison("e3"), poison_retries=poison_retries)
        cls = "ContractError"
    else:
        rig = Rig(
            model=FakeModel(by_amount, raise_for=_model_poison(13.37)),
            poison_retries=poison_retries,
        )
        cls = "ProcessingError"
    rig.send(*events)
    await rig.start()
    await rig.all_committed()

    # the batch was tried 1 + poison_retries times (isolate() may try it once more), then split
    # (sizes of the calls to the failing source)
    if source == "windows":
        sizes = [len(c) for c in rig.windows.calls]
    else:
        sizes = list(rig.model.batch_sizes)
    full = next(i for i, n in enumerate(sizes) if n < len(events))
    assert sizes[:full] == [len(events)] * full
    assert full in (poison_retries + 1, poison_retries + 2)

    (written,) = rig.sink.writes
    dlq = [r for r in written if r.topic == rig.cfg.input.dlq]
    assert len(dlq) == 1
    (d,) = dlq
    assert h(d, D.H_CLASS) == cls and d.value == rig.values["e3"]
    assert (h(d, D.H_PARTITION), h(d, D.H_OFFSET)) == ("0", str(rig.where["e3"][1]))
    good = [e["event_id"] for e in events if e["event_id"] != "e3"]
    assert [eid(r) for r in written if r.topic == "payments.scored"] == good
    assert rig.consumer.commits == [{TP0: 6}]
    assert rig.log.positions("write")[0] < rig.log.positions("commit")[0]
    s = rig.loop.stats
    assert (s.poison, s.isolations, s.dlq, s.scored, s.events_in) == (1, 1, 1, 5, 6)
    assert s.retries == poison_retries + 1
    assert not s.paused and rig.consumer.paused() == set()

    # the loop goes on: later events are scored as usual
    rig.send(payment(10), payment(11))
    await rig.all_committed()
    await rig.close()
    assert [eid(r) for r in rig.sink.writes[-1] if r.topic == "payments.scored"] == ["e10", "e11"]
    assert rig.loop.stats.isolations == 1 and rig.loop.stats.scored == 7


async def test_several_poison_records_and_bad_bytes_in_one_batch() -> None:
    poison = {"e0", "e4", "e5"}

    def raise_for(ev: Mapping[str, Any]) -> BaseException | None:
        return ContractError("unusable", stage="features") if ev["event_id"] in poison else None

    rig = Rig(windows_raise_for=raise_for, poison_retries=1)
    events = [payment(i) for i in range(8)]
    rig.send(*events[:6])
    rig.consumer.produce(TOPIC, b"\x07garbage", partition=0)  # offset 6: fails decoding
    rig.send(*events[6:])
    await rig.start()
    await rig.all_committed()
    await rig.close()

    (written,) = rig.sink.writes
    dlq = [r for r in written if r.topic == rig.cfg.input.dlq]
    assert [(h(d, D.H_OFFSET), h(d, D.H_CLASS)) for d in dlq] == [
        ("0", "ContractError"),
        ("4", "ContractError"),
        ("5", "ContractError"),
        ("6", "BadMagicByte"),
    ]
    scored = [eid(r) for r in written if r.topic == "payments.scored"]
    assert scored == [e["event_id"] for e in events if e["event_id"] not in poison]
    assert rig.consumer.commits == [{TP0: 9}]
    s = rig.loop.stats
    assert s.isolations == 1 and s.dlq == 4 and s.scored == 5 and s.poison == 3


async def test_stats_count_as_poison_only_the_records_isolated_by_splitting() -> None:
    rig = Rig(windows_raise_for=_window_poison("e1"), poison_retries=0)
    rig.send(payment(0), payment(1))
    rig.consumer.produce(TOPIC, b"\x07garbage", partition=0)
    await rig.start()
    await rig.all_committed()
    await rig.close()
    assert rig.loop.stats.dlq == 2 and rig.loop.stats.isolations == 1
    assert rig.loop.stats.poison == 1


# -- rebalance and close --------------------------------------------------------------------------


@pytest.mark.parametrize("held_at", ["model", "sink"])
async def test_a_rebalance_waits_for_the_in_flight_batch_to_commit(held_at: str) -> None:
    gate = asyncio.Event()
    model = FakeModel(by_amount, gate=gate if held_at == "model" else None)
    rig = Rig(partitions=2, model=model, sink_gate=gate if held_at == "sink" else None)
    rig.send(payment(0), payment(1), partition=0)
    rig.send(payment(2), partition=1)
    await rig.start()
    assert rig.loop.stats.assignment == [f"{TOPIC}[0]", f"{TOPIC}[1]"]
    await rig.until(
        lambda: bool(rig.log.of("predict-start" if held_at == "model" else "write-start")),
        "the batch in flight",
    )

    revoke = asyncio.get_running_loop().create_task(rig.consumer.rebalance([TP0]))
    await settle_ticks()
    assert not revoke.done() and not rig.log.of("revoked")  # held by the batch in flight
    gate.set()
    await asyncio.wait_for(revoke, WAIT_S)

    write, commit = rig.log.positions("write")[0], rig.log.positions("commit")[0]
    assert write < commit < rig.log.positions("revoked")[0]
    assert rig.consumer.commits == [{TP0: 2, TP1: 1}]
    assert rig.loop.stats.assignment == [f"{TOPIC}[0]"]

    # after the rebalance: only partition 0 is consumed, and nothing is scored twice
    rig.send(payment(3), partition=0)
    rig.send(payment(4), partition=1)
    await rig.until(lambda: rig.consumer.committed_offsets.get(TP0) == 3, "e3 committed")
    await rig.close()
    ids = [eid(r) for r in rig.sink.records if r.topic == "payments.scored"]
    assert ids == ["e0", "e1", "e2", "e3"]
    assert rig.consumer.committed_offsets == {TP0: 3, TP1: 1}


async def test_close_lets_the_batch_in_flight_commit_then_stops_the_clients() -> None:
    gate = asyncio.Event()
    rig = Rig(max_batch_size=3, sink_gate=gate)
    rig.send(*[payment(i) for i in range(3)])
    await rig.start()
    await rig.until(lambda: bool(rig.log.of("write-start")), "the batch being published")

    closing = asyncio.get_running_loop().create_task(rig.loop.close())
    await settle_ticks()
    assert not closing.done() and not rig.consumer.stopped and not rig.sink.closed
    gate.set()
    await asyncio.wait_for(closing, WAIT_S)
    assert rig.task is not None
    await asyncio.wait_for(rig.task, WAIT_S)

    assert rig.consumer.uncommitted() == 0
    commit = rig.log.positions("commit")[-1]
    assert commit < rig.log.positions("consumer-stop")[0] < rig.log.positions("sink-close")[0]
    assert rig.consumer.stopped and rig.sink.closed
    assert len(rig.log.positions("write")) == 1


async def test_close_when_idle_commits_everything_published() -> None:
    rig = Rig(max_batch_size=2)
    rig.send(*[payment(i) for i in range(5)])
    await rig.start()
    await rig.all_committed()
    await rig.close()
    assert rig.consumer.uncommitted() == 0 and rig.consumer.commits[-1] == {TP0: 5}
    # every acknowledged write was committed: one commit per write, after it
    assert len(rig.log.positions("write")) == len(rig.log.positions("commit")) == 3
    assert rig.task is not None and rig.task.exception() is None


async def test_close_while_a_batch_is_filling_ends_the_loop_without_publishing() -> None:
    rig = Rig(max_batch_size=10, max_wait_ms=60_000)
    rig.send(payment(0))
    await rig.start()
    await rig.until(lambda: bool(rig.log.of("fetch")), "the first record fetched")
    await rig.loop.close()
    assert rig.task is not None
    done, _ = await asyncio.wait({rig.task}, timeout=0.5)
    if not done:
        rig.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await rig.task
    assert done, f"run() still going after close(): {rig.sink.attempts} writes to a closed sink"
    assert rig.sink.writes == [] and rig.consumer.commits == []
