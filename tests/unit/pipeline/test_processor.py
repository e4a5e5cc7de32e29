"""BatchProcessor on in-memory fakes: decode + DLQ, correlation ids, outputs per rule topic,
dependency failures, poison isolation and BatchResult.merge. No services, no Ray."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.errors import ContractError, DependencyError, RaylaneError
from raylane.features.window import reference_window_features
from raylane.kafka import deadletters as D
from raylane.kafka.records import InRecord, OutRecord, header
from raylane.pipeline.breaker import GuardedModel, make_breaker
from raylane.pipeline.decode import CORRELATION_HEADER, GENERATED_HEADER
from raylane.pipeline.ports import Prediction, ShadowJob
from raylane.pipeline.processor import BatchResult, is_outage
from raylane.testing.fakes import FakeModel, FakeOnline, FakePipeline, FakeWindows, fake_pipeline

ROOT = Path(__file__).resolve().parents[3]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
T0 = 1_700_000_000_000
THRESHOLD = 0.85  # the fraud config's rule: score > 0.85 => flagged, published to payments.flagged

ROWS = {
    "user_risk_profile": {
        "u0": {"risk_score": 0.1, "avg_amount": 100.0, "txn_count_30d": 3, "account_age_days": 40},
        "u1": {"risk_score": 0.7, "avg_amount": 50.0, "txn_count_30d": 9, "account_age_days": 2},
        # u2 is unknown to the store: its profile columns are missing (NaN -> null)
    },
    "merchant_profile": {
        "m0": {"category_risk": 0.2, "fraud_rate_90d": 0.01},
        "m1": {"category_risk": 0.9, "fraud_rate_90d": 0.2},
    },
}


def fraud_cfg() -> PipelineConfig:
    args = copy.deepcopy(yaml.safe_load(FRAUD.read_text())["applications"][0]["args"])
    args["breaker"] = {"fail_max": 3, "reset_timeout_s": 0.01}
    return PipelineConfig.from_args(args)


def payment(i: int, *, amount: float | None = None, cid: str | None = "auto") -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "correlation_id": f"c{i}" if cid == "auto" else cid,
        "user_id": f"u{i % 3}",
        "merchant_id": f"m{i % 2}",
        "merchant_category": "electronics",
        "amount": float(amount if amount is not None else 100 + 97 * i),
        "currency": "EUR",
        "user_history_hash": f"h{i}",
        "event_time": T0 + 1000 * i,
    }


def by_amount(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """Score = amount / 1000 (capped at 1), so a test knows which events the rule flags."""
    return np.minimum(cols["amount"] / 1000.0, 1.0)


def flagged(ev: Mapping[str, Any]) -> bool:
    return min(ev["amount"] / 1000.0, 1.0) > THRESHOLD


def pipeline(
    cfg: PipelineConfig | None = None,
    *,
    model: FakeModel | None = None,
    windows: FakeWindows | None = None,
    online: FakeOnline | None = None,
) -> FakePipeline:
    cfg = cfg or fraud_cfg()
    return fake_pipeline(
        cfg,
        model=model or FakeModel(by_amount),
        windows=windows or FakeWindows(cfg.features.windows),
        online=online or FakeOnline(cfg.features.online, ROWS),
    )


def in_codec() -> Codec:
    return Codec.for_contract("payments.initiated")


def record(
    offset: int,
    value: bytes | None,
    *,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    partition: int = 0,
    timestamp_ms: int = T0,
) -> InRecord:
    return InRecord(
        topic="payments.initiated",
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=headers or [],
        timestamp_ms=timestamp_ms,
    )


def records_of(events: list[dict[str, Any]], *, first_offset: int = 100) -> list[InRecord]:
    codec = in_codec()
    return [
        record(
            first_offset + i,
            codec.encode(ev),
            key=ev["user_id"].encode(),
            timestamp_ms=ev["event_time"],  # appended when it happened
        )
        for i, ev in enumerate(events)
    ]


def decoded(recs: list[OutRecord], contract: str) -> list[dict[str, Any]]:
    codec = Codec.for_contract(contract)
    return [codec.decode(r.value) for r in recs]


def on(recs: list[OutRecord], topic: str) -> list[OutRecord]:
    return [r for r in recs if r.topic == topic]


def h(rec: OutRecord, name: str) -> str | None:
    raw = header(rec.headers, name)
    return raw.decode() if raw is not None else None


# -- decode, score, decide, publish ---------------------------------------------------------------


async def test_scores_every_event_and_publishes_flagged_ones_to_the_rule_topic() -> None:
    p = pipeline()
    events = [payment(i) for i in range(12)]  # amounts 100..1167: some above the threshold
    assert any(flagged(e) for e in events) and not all(flagged(e) for e in events)
    recs = records_of(events)
    # the same contract as JSON is accepted too (formats: avro, json by default)
    recs[5] = record(recs[5].offset, json.dumps(events[5]).encode(), key=recs[5].key)

    result = await p.processor.process(recs)

    cfg = p.cfg
    assert result.dlq == [] and result.n_in == 12 and result.n_scored == 12
    scored = on(result.outputs, cfg.outputs.scored.topic)
    rule = cfg.decision.rules[0]
    assert rule.publish is not None
    flagged_out = on(result.outputs, rule.publish.topic)
    assert len(result.outputs) == len(scored) + len(flagged_out)

    body = decoded(scored, "payments.scored")
    assert [b["event_id"] for b in body] == [e["event_id"] for e in events]
    assert [r.key for r in scored] == [e["user_id"].encode() for e in events]
    for b, ev in zip(body, events, strict=True):
        assert b["score"] == pytest.approx(min(ev["amount"] / 1000.0, 1.0))
        assert b["decision"] == ("flagged" if flagged(ev) else cfg.decision.default)
        assert b["rule"] == (rule.name if flagged(ev) else None)
        assert b["correlation_id"] == ev["correlation_id"]
        assert (b["model_name"], b["model_version"]) == ("fraud", "1")
        assert b["pipeline"] == "fraud"

    want = [e["event_id"] for e in events if flagged(e)]
    fbody = decoded(flagged_out, rule.publish.contract)
    assert [b["event_id"] for b in fbody] == want
    assert all(b["decision"] == "flagged" and b["rule"] == rule.name for b in fbody)
    assert result.decisions == {
        "flagged": len(want),
        cfg.decision.default: len(events) - len(want),
    }
    for r in scored + flagged_out:  # every output names its input, for de-duplication
        assert h(r, "event_id") is not None and h(r, CORRELATION_HEADER) is not None
        assert header(r.headers, GENERATED_HEADER) is None
    assert result.shadow is not None and result.shadow.primary_decisions == [
        b["decision"] for b in body
    ]
    assert result.model_version == "1"


async def test_outputs_carry_window_and_online_features() -> None:
    cfg = fraud_cfg()
    p = pipeline(cfg)
    events = [payment(i) for i in range(7)]
    result = await p.processor.process(records_of(events))

    body = decoded(on(result.outputs, cfg.outputs.scored.topic), "payments.scored")
    windows = reference_window_features(events, cfg.features.windows)
    for i, (b, ev) in enumerate(zip(body, events, strict=True)):
        feats = b["features"]
        for name, col in windows.items():
            assert feats[name] == pytest.approx(col[i])
        profile = ROWS["user_risk_profile"].get(ev["user_id"])
        if profile is None:  # unknown entity: missing, never a made-up number
            assert feats["user_risk_profile__avg_amount"] is None
            assert feats["amount_to_user_avg"] is None
        else:
            assert feats["user_risk_profile__avg_amount"] == profile["avg_amount"]
            assert feats["amount_to_user_avg"] == pytest.approx(
                ev["amount"] / profile["avg_amount"]
            )
        merchant = ROWS["merchant_profile"][ev["merchant_id"]]
        assert feats["merchant_profile__category_risk"] == merchant["category_risk"]
    assert p.online is not None and len(p.online.calls) == 1  # one read per batch
    assert p.windows is not None and p.windows.calls == [[e["event_id"] for e in events]]
    assert p.model.batch_sizes == [len(events)]  # one model call per batch


async def test_malformed_records_go_to_the_dlq_with_original_bytes_and_headers() -> None:
    cfg = fraud_cfg()
    p = pipeline(cfg)
    codec = in_codec()
    good = [payment(0), payment(1)]
    missing_user = {k: v for k, v in payment(9).items() if k != "user_id"}
    raws: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
        (codec.encode(good[0]), b"u0", []),
        (b"\x07not an event", b"k1", [(CORRELATION_HEADER, b"cid-bad"), ("trace", b"t1")]),
        (codec.encode(payment(7))[:9], b"k2", []),  # Avro body cut short
        (None, b"k3", []),  # a tombstone
        (json.dumps(missing_user).encode(), None, [("raylane.error.class", b"spoofed")]),
        (codec.encode(good[1]), b"u1", []),
    ]
    recs = [record(10 + i, v, key=k, headers=hs, partition=3) for i, (v, k, hs) in enumerate(raws)]

    result = await p.processor.process(recs)

    assert result.n_in == 6 and result.n_scored == 2
    scored = decoded(on(result.outputs, cfg.outputs.scored.topic), "payments.scored")
    assert [b["event_id"] for b in scored] == ["e0", "e1"]
    assert [d.topic for d in result.dlq] == [cfg.input.dlq] * 4 == ["payments.initiated.dlq"] * 4
    want = {
        11: ("BadMagicByte", "decode"),
        12: ("TruncatedEvent", "decode"),
        13: ("EmptyEvent", "decode"),
        14: ("MissingField", "validate"),
    }
    by_offset = {int(h(d, D.H_OFFSET) or -1): d for d in result.dlq}
    assert sorted(by_offset) == sorted(want)
    for off, (cls, stage) in want.items():
        d, src = by_offset[off], recs[off - 10]
        assert d.value == (src.value or b"")  # the original bytes
        assert d.key == src.key
        assert (h(d, D.H_CLASS), h(d, D.H_STAGE)) == (cls, stage)
        assert h(d, D.H_TOPIC) == "payments.initiated" and h(d, D.H_PARTITION) == "3"
        assert h(d, D.H_MESSAGE) and int(h(d, D.H_TIME) or 0) > 0
        assert h(d, D.H_CORRELATION)
    assert result.dlq_by_class == {cls: 1 for cls, _ in want.values()}

    # a correlation id header is kept; the record's own headers follow unchanged
    bad = by_offset[11]
    assert h(bad, D.H_CORRELATION) == "cid-bad" and h(bad, D.H_GENERATED) is None
    assert ("trace", b"t1") in bad.headers and (CORRELATION_HEADER, b"cid-bad") in bad.headers
    # no id at all: one is made up and marked generated
    tomb = by_offset[13]
    uuid.UUID(h(tomb, D.H_CORRELATION) or "")
    assert h(tomb, D.H_GENERATED) == "true"
    # a producer cannot forge the error headers
    assert [v for k, v in by_offset[14].headers if k == D.H_CLASS] == [b"MissingField"]


async def test_a_batch_of_only_bad_records_calls_no_dependency() -> None:
    p = pipeline()
    result = await p.processor.process([record(0, b"\x07x"), record(1, b"")])
    assert result.outputs == [] and len(result.dlq) == 2 and result.n_scored == 0
    assert p.model.calls == 0 and p.windows is not None and p.windows.calls == []


async def test_correlation_id_from_event_then_header_else_generated() -> None:
    cfg = fraud_cfg()
    p = pipeline(cfg)
    codec = in_codec()
    evs = [
        payment(0, cid="body-0"),
        payment(1, cid=None),  # taken from the header
        payment(2, cid=None),  # none anywhere: generated
        payment(3, cid=None),  # replayed: header plus the generated mark of its first pass
        payment(4, cid="body-4"),  # the body wins over a header
    ]
    hdrs: list[list[tuple[str, bytes]]] = [
        [],
        [(CORRELATION_HEADER, b"hdr-1")],
        [],
        [(CORRELATION_HEADER, b"gen-3"), (GENERATED_HEADER, b"true")],
        [(CORRELATION_HEADER, b"hdr-4")],
    ]
    recs = [
        record(i, codec.encode(ev), headers=hs)
        for i, (ev, hs) in enumerate(zip(evs, hdrs, strict=True))
    ]

    result = await p.processor.process(recs)

    scored = on(result.outputs, cfg.outputs.scored.topic)
    body = decoded(scored, "payments.scored")
    cids = [b["correlation_id"] for b in body]
    assert cids[0] == "body-0" and cids[1] == "hdr-1" and cids[3] == "gen-3" and cids[4] == "body-4"
    uuid.UUID(cids[2])
    assert cids[2] not in {"body-0", "hdr-1", "gen-3", "body-4"}
    assert [h(r, CORRELATION_HEADER) for r in scored] == cids
    assert [h(r, "event_id") for r in scored] == [e["event_id"] for e in evs]
    assert [h(r, GENERATED_HEADER) for r in scored] == [None, None, "true", "true", None]
    # the same ids on the rule topic's records
    for r in result.outputs:
        if r.topic != cfg.outputs.scored.topic:
            i = int((h(r, "event_id") or "e-1")[1:])
            assert h(r, CORRELATION_HEADER) == cids[i]


# -- dependency failures --------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["model", "windows", "online"])
async def test_a_dependency_failure_raises_retriable_and_produces_nothing(failing: str) -> None:
    cfg = fraud_cfg()
    model = FakeModel(by_amount)
    windows = FakeWindows(cfg.features.windows)
    online = FakeOnline(cfg.features.online, ROWS)
    {"model": model, "windows": windows, "online": online}[failing].outages.fail_next(1)
    p = pipeline(cfg, model=model, windows=windows, online=online)
    events = [payment(i) for i in range(4)]

    with pytest.raises(DependencyError) as ei:
        await p.processor.process(records_of(events))
    assert ei.value.retriable and is_outage(ei.value)
    # nothing to publish or commit came out; the same batch succeeds once it is back
    again = await p.processor.process(records_of(events))
    assert again.n_scored == 4 and again.dlq == []


async def test_isolate_lets_an_outage_through_rather_than_dead_lettering() -> None:
    p = pipeline(model=FakeModel(by_amount, fail_times=1))
    with pytest.raises(DependencyError):
        await p.processor.isolate(records_of([payment(i) for i in range(4)]))
    assert p.model.calls == 1  # not split: an outage is not a poison record


async def test_a_model_returning_the_wrong_number_of_scores_is_a_dependency_failure() -> None:
    p = pipeline(model=FakeModel(lambda cols: np.zeros(1)))
    with pytest.raises(DependencyError) as ei:
        await p.processor.process(records_of([payment(i) for i in range(3)]))
    assert ei.value.retriable and ei.value.stage == "score"


# -- poison isolation -----------------------------------------------------------------------------


def poison_ids(*ids: str, error: type[Exception] = ContractError) -> Any:
    def raise_for(ev: Mapping[str, Any]) -> BaseException | None:
        if ev["event_id"] in ids:
            if issubclass(error, RaylaneError):
                return error(f"window input of {ev['event_id']} is unusable", stage="features")
            return error(f"cannot aggregate {ev['event_id']}")
        return None

    return raise_for


def assert_isolated(
    p: FakePipeline,
    result: BatchResult,
    recs: list[InRecord],
    events: list[dict[str, Any]],
    poison: dict[str, str],
) -> None:
    """Exactly the poison records (event id -> error class) are dead letters, in input order;
    every other event is scored once, in input order, on every topic."""
    cfg = p.cfg
    src = {e["event_id"]: r for e, r in zip(events, recs, strict=True)}
    good = [e for e in events if e["event_id"] not in poison]
    assert result.n_in == len(recs) and result.n_scored == len(good)
    assert result.poison == len(poison)
    assert [h(d, D.H_OFFSET) for d in result.dlq] == [
        str(src[e["event_id"]].offset) for e in events if e["event_id"] in poison
    ]
    poison_ids_in_order = [e["event_id"] for e in events if e["event_id"] in poison]
    for d, eid in zip(result.dlq, poison_ids_in_order, strict=True):
        assert h(d, D.H_CLASS) == poison[eid]
        assert d.value == src[eid].value and d.key == src[eid].key
        assert h(d, D.H_TOPIC) == "payments.initiated"
        assert h(d, D.H_PARTITION) == str(src[eid].partition)
    by_class: dict[str, int] = {}
    for cls in poison.values():
        by_class[cls] = by_class.get(cls, 0) + 1
    assert result.dlq_by_class == by_class

    scored = decoded(on(result.outputs, cfg.outputs.scored.topic), "payments.scored")
    assert [b["event_id"] for b in scored] == [e["event_id"] for e in good]
    rule = cfg.decision.rules[0]
    assert rule.publish is not None
    fl = decoded(on(result.outputs, rule.publish.topic), rule.publish.contract)
    assert [b["event_id"] for b in fl] == [e["event_id"] for e in good if flagged(e)]
    assert len(result.outputs) == len(scored) + len(fl)
    assert sum(result.decisions.values()) == len(good)
    assert result.shadow is not None
    assert [e["event_id"] for e in result.shadow.events] == [e["event_id"] for e in good]


async def test_isolate_dead_letters_only_the_record_a_source_rejects() -> None:
    cfg = fraud_cfg()
    windows = FakeWindows(cfg.features.windows, raise_for=poison_ids("e5"))
    p = pipeline(cfg, windows=windows)
    events = [payment(i) for i in range(10)]
    recs = records_of(events)

    with pytest.raises(ContractError):  # the batch as a whole fails, not as an outage
        await p.processor.process(recs)
    result = await p.processor.isolate(recs)

    assert_isolated(p, result, recs, events, {"e5": "ContractError"})
    d = result.dlq[0]
    assert h(d, D.H_STAGE) == "features" and "e5" in (h(d, D.H_MESSAGE) or "")
    # the window state saw every good event exactly as if the poison one had never come
    good = [e for e in events if e["event_id"] != "e5"]
    ref = reference_window_features(good, cfg.features.windows)
    body = decoded(on(result.outputs, cfg.outputs.scored.topic), "payments.scored")
    for i, b in enumerate(body):
        for name, col in ref.items():
            assert b["features"][name] == pytest.approx(col[i])


async def test_an_unexpected_exception_is_a_processing_error_for_that_record() -> None:
    def bad_amount(row: Mapping[str, Any]) -> BaseException | None:
        return ValueError("model cannot handle amount 13.37") if row["amount"] == 13.37 else None

    p = pipeline(model=FakeModel(by_amount, raise_for=bad_amount))
    events = [payment(i) for i in range(8)]
    events[3]["amount"] = 13.37
    recs = records_of(events)

    result = await p.processor.isolate(recs)

    assert_isolated(p, result, recs, events, {"e3": "ProcessingError"})
    d = result.dlq[0]
    assert h(d, D.H_STAGE) == "process"
    assert "ValueError" in (h(d, D.H_MESSAGE) or "") and "13.37" in (h(d, D.H_MESSAGE) or "")


async def test_several_poison_records_in_one_batch() -> None:
    cfg = fraud_cfg()
    # the first, two adjacent ones and the last; mixed with a record that fails decoding
    windows = FakeWindows(cfg.features.windows, raise_for=poison_ids("e0", "e6", "e7", "e15"))
    p = pipeline(cfg, windows=windows, model=FakeModel(by_amount))
    events = [payment(i) for i in range(16)]
    recs = records_of(events)
    bad_bytes = record(999, b"\x07garbage")
    recs_with_bad = [*recs[:10], bad_bytes, *recs[10:]]

    result = await p.processor.isolate(recs_with_bad)

    poison = {e: "ContractError" for e in ("e0", "e6", "e7", "e15")}
    dlq_poison = [d for d in result.dlq if h(d, D.H_CLASS) == "ContractError"]
    dlq_bad = [d for d in result.dlq if h(d, D.H_CLASS) == "BadMagicByte"]
    assert len(dlq_bad) == 1 and dlq_bad[0].value == b"\x07garbage"
    assert len(result.dlq) == 5
    # the DLQ keeps input order too (the undecodable record sits between e9 and e10)
    assert [h(d, D.H_OFFSET) for d in result.dlq] == ["100", "106", "107", "999", "115"]
    without_bad = BatchResult(
        outputs=result.outputs,
        dlq=dlq_poison,
        n_in=result.n_in - 1,
        n_scored=result.n_scored,
        decisions=result.decisions,
        shadow=result.shadow,
        poison=result.poison,
    )
    without_bad.count_dead_letters()
    assert_isolated(p, without_bad, recs, events, poison)


async def test_poison_behind_a_circuit_breaker_is_isolated_and_does_not_open_it() -> None:
    cfg = fraud_cfg()
    assert cfg.breaker.fail_max == 3

    def bad_amount(row: Mapping[str, Any]) -> BaseException | None:
        return ValueError("model cannot handle amount 13.37") if row["amount"] == 13.37 else None

    inner = FakeModel(by_amount, raise_for=bad_amount)
    breaker = make_breaker(cfg.breaker, "fraud", "test-model")
    p = pipeline(cfg, model=GuardedModel(inner, breaker))
    events = [payment(i) for i in range(16)]
    events[9]["amount"] = 13.37
    recs = records_of(events)

    result = await p.processor.isolate(recs)

    # a failing call per split level (16, 8, 4, 2, 1): more than fail_max, yet it stays closed
    assert inner.failures > cfg.breaker.fail_max
    assert breaker.current_state == "closed"
    assert_isolated(p, result, recs, events, {"e9": "ProcessingError"})


async def test_a_poison_record_keeps_its_correlation_id_in_the_dlq() -> None:
    cfg = fraud_cfg()
    p = pipeline(cfg, windows=FakeWindows(cfg.features.windows, raise_for=poison_ids("e2")))
    events = [payment(i) for i in range(4)]
    result = await p.processor.isolate(records_of(events))
    (d,) = result.dlq
    assert h(d, D.H_CORRELATION) == events[2]["correlation_id"]
    assert h(d, D.H_GENERATED) is None


async def test_an_outage_during_isolation_propagates() -> None:
    cfg = fraud_cfg()
    windows = FakeWindows(cfg.features.windows, raise_for=poison_ids("e6"))
    model = FakeModel(by_amount)
    model.outages.fail_next(1, after=1)  # the model goes down after the first half is scored
    p = pipeline(cfg, windows=windows, model=model)

    with pytest.raises(DependencyError):
        await p.processor.isolate(records_of([payment(i) for i in range(8)]))
    assert model.outages.raised == 1


async def test_isolate_of_a_healthy_batch_is_process() -> None:
    p = pipeline()
    events = [payment(i) for i in range(5)]
    result = await p.processor.isolate(records_of(events))
    assert result.dlq == [] and result.n_scored == 5
    assert p.model.batch_sizes == [5]  # no splitting without a failure


# -- BatchResult.merge ----------------------------------------------------------------------------


def _dead(cls: str, offset: int) -> OutRecord:
    return OutRecord("t.dlq", None, b"x", [(D.H_CLASS, cls.encode()), (D.H_OFFSET, b"%d" % offset)])


def _job(version: str, scores: list[float], ids: list[str]) -> ShadowJob:
    return ShadowJob(
        columns={"amount": np.array(scores) * 10},
        events=[{"event_id": i} for i in ids],
        primary=Prediction(np.array(scores), "fraud", version, latency_ms=len(ids)),
        primary_decisions=["approved"] * len(ids),
    )


def test_merge_concatenates_in_order_and_sums() -> None:
    a = BatchResult(
        outputs=[OutRecord("s", b"1", b"a1"), OutRecord("s", b"2", b"a2")],
        dlq=[_dead("ContractError", 3)],
        n_in=3,
        n_scored=2,
        decisions={"approved": 1, "flagged": 1},
        stage_ms={"decode_ms": 1.0, "score_ms": 2.0},
        shadow=_job("3", [0.1, 0.2], ["e1", "e2"]),
        model_version="3",
        poison=0,
    )
    b = BatchResult(
        outputs=[OutRecord("s", b"4", b"b4")],
        dlq=[_dead("ProcessingError", 5), _dead("ContractError", 6)],
        n_in=3,
        n_scored=1,
        decisions={"approved": 1},
        stage_ms={"decode_ms": 0.5, "features_ms": 4.0},
        shadow=_job("3", [0.9], ["e4"]),
        model_version="3",
        poison=1,
    )
    m = a.merge(b)
    assert m.outputs == a.outputs + b.outputs and m.dlq == a.dlq + b.dlq
    assert (m.n_in, m.n_scored, m.poison) == (6, 3, 1)
    assert m.decisions == {"approved": 2, "flagged": 1}
    assert m.dlq_by_class == {"ContractError": 2, "ProcessingError": 1}
    assert m.stage_ms == {"decode_ms": 1.5, "score_ms": 2.0, "features_ms": 4.0}
    assert m.model_version == "3"
    assert m.shadow is not None
    assert [e["event_id"] for e in m.shadow.events] == ["e1", "e2", "e4"]
    assert m.shadow.primary.scores.tolist() == [0.1, 0.2, 0.9]
    assert m.shadow.columns["amount"].tolist() == pytest.approx([1.0, 2.0, 9.0])
    assert m.shadow.primary_decisions == ["approved"] * 3
    # the inputs are left as they were
    assert len(a.outputs) == 2 and a.decisions == {"approved": 1, "flagged": 1}


def test_merge_with_empty_halves_and_a_model_swap_between_them() -> None:
    scored = BatchResult(n_in=2, n_scored=2, shadow=_job("3", [0.1, 0.2], ["e1", "e2"]))
    poison = BatchResult(n_in=1, dlq=[_dead("ProcessingError", 9)], poison=1)
    poison.count_dead_letters()
    m = poison.merge(scored)
    assert m.shadow is scored.shadow and m.n_in == 3 and m.n_scored == 2 and m.poison == 1
    assert m.dlq_by_class == {"ProcessingError": 1}
    assert scored.merge(poison).shadow is scored.shadow
    assert BatchResult().merge(BatchResult()).shadow is None

    swapped = BatchResult(n_in=1, n_scored=1, shadow=_job("4", [0.5], ["e3"]), model_version="4")
    m2 = BatchResult(n_in=2, n_scored=2, shadow=scored.shadow, model_version="3").merge(swapped)
    # a hot swap between the halves: compare the first half only, report the newer version
    assert m2.shadow is scored.shadow and m2.model_version == "4"
