"""A use case's names come from its config, never from platform defaults: the event-time
field and unit, the entity key, categorical encodings, and output fields filled from a
documented set of sources."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from raylane.config import CategoricalFeature, EventTimeConfig, PipelineConfig, WindowFeature
from raylane.contracts import Codec
from raylane.errors import ConfigError, ContractError
from raylane.features import categorical_columns, encode_categorical
from raylane.features.window import reference_window_features
from raylane.kafka.producer import EventProducer
from raylane.kafka.records import InRecord
from raylane.testing.fakes import FakeModel, fake_pipeline

T0 = 1_700_000_000_000


def args(**over: Any) -> dict[str, Any]:
    a: dict[str, Any] = {
        "name": "tutorial",
        "input": {"topic": "t.in", "contract": "churn.activity", "key_field": "user_id"},
        "ingress": {"group_id": "g"},
        "features": {
            "event": ["session_minutes"],
            "categorical": [
                {"field": "plan", "encoding": "one_hot", "categories": ["free", "pro"]},
                {
                    "field": "event_type",
                    "encoding": "ordinal",
                    "categories": ["login", "page_view"],
                    "name": "kind",
                },
            ],
            "windows": [{"name": "n_60s", "kind": "count", "key_fields": ["user_id"]}],
        },
        "models": {"primary": {"name": "champion", "uri": "models:/tutorial@champion"}},
        "outputs": {
            "scored": {
                "topic": "t.out",
                "contract": "churn-risk-scored",
                "fields": {"plan": "input.event_type", "scored_at": "event_time"},
            }
        },
    }
    a.update(over)
    return a


def activity(i: int, plan: Any, kind: str) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "correlation_id": f"c{i}",
        "user_id": f"u{i % 2}",
        "event_type": kind,
        "session_minutes": float(i),
        "pages_viewed": i,
        "days_since_last_login": 1.0,
        "plan": plan,
        "event_time": T0 + 1000 * i,
    }


def test_key_field_has_no_default_and_event_time_defaults_to_event_time_ms() -> None:
    a = args()
    del a["input"]["key_field"]
    with pytest.raises(ConfigError, match=r"input\.key_field: required key is missing"):
        PipelineConfig.from_args(a)
    cfg = PipelineConfig.from_args(args())
    assert cfg.input.event_time == EventTimeConfig(field="event_time", unit="ms")


def test_event_time_in_another_field_and_unit() -> None:
    et = EventTimeConfig(field="occurred_at", unit="s")
    assert et.ms({"occurred_at": 1_700_000_000}) == T0
    assert EventTimeConfig(field="t", unit="us").ms({"t": T0 * 1000 + 999}) == T0
    assert et.ms_or_none({"event_time": T0}) is None
    with pytest.raises(TypeError, match="occurred_at is 'x'"):
        et.ms({"occurred_at": "x"})
    spec = [WindowFeature(name="n", kind="count", key_fields=("k",), window_s=2.5)]
    in_ms = [{"event_id": str(i), "k": "a", "event_time": T0 + 1000 * i} for i in range(6)]
    in_s = [{"event_id": str(i), "k": "a", "occurred_at": T0 / 1000 + i} for i in range(6)]
    want = reference_window_features(in_ms, spec)["n"]
    assert list(want) == [1, 2, 3, 3, 3, 3]
    assert np.array_equal(reference_window_features(in_s, spec, et)["n"], want)


def test_categorical_encodings_with_an_unknown_bucket() -> None:
    hot = CategoricalFeature(field="country", encoding="one_hot", categories=("US", "de-AT"))
    assert hot.columns() == ["country__US", "country__de_AT", "country__unknown"]
    cols = encode_categorical(["US", "FR", None, "de-AT"], hot)
    assert cols["country__US"].tolist() == [1, 0, 0, 0]
    assert cols["country__de_AT"].tolist() == [0, 0, 0, 1]
    assert cols["country__unknown"].tolist() == [0, 1, 1, 0]
    ordinal = CategoricalFeature(field="tier", encoding="ordinal", categories=("1", "2"))
    assert encode_categorical([2, 1, 3, None], ordinal)["tier"].tolist() == [2, 1, 0, 0]
    with pytest.raises(ValueError, match="map to the same column"):
        CategoricalFeature(field="c", encoding="one_hot", categories=("a b", "a-b"))
    events = [{"country": "US", "tier": 2}]
    assert set(categorical_columns(events, [hot, ordinal])) == {*hot.columns(), "tier"}


def test_output_field_sources_are_validated() -> None:
    a = args()
    a["outputs"]["scored"]["fields"] = {"plan": "the_plan"}
    with pytest.raises(ConfigError, match=r"fields\.plan is 'the_plan', not a source"):
        PipelineConfig.from_args(a)
    a["outputs"]["scored"]["fields"] = {"plan": "feature.nope"}
    with pytest.raises(ConfigError, match=r"'feature\.nope', which is not a feature column"):
        PipelineConfig.from_args(a)


async def test_serving_encodes_categoricals_and_fills_output_fields_from_sources() -> None:
    cfg = PipelineConfig.from_args(args())
    assert cfg.features.columns() == [
        "session_minutes",
        "plan__free",
        "plan__pro",
        "plan__unknown",
        "kind",
        "n_60s",
    ]
    p = fake_pipeline(cfg, model=FakeModel(lambda cols: cols["plan__pro"] * 0.5))
    codec = Codec.for_contract("churn.activity")
    events = [activity(0, "pro", "login"), activity(1, "enterprise", "page_view")]
    events.append(activity(2, "free", "support_ticket"))
    recs = [
        InRecord("t.in", 0, i, ev["user_id"].encode(), codec.encode(ev), [], ev["event_time"])
        for i, ev in enumerate(events)
    ]
    res = await p.processor.process(recs)
    out = Codec.for_contract("churn-risk-scored")
    scored = [out.decode(r.value) for r in res.outputs if r.topic == "t.out"]
    assert [s["event_id"] for s in scored] == ["e0", "e1", "e2"]
    assert [r.key for r in res.outputs] == [b"u0", b"u1", b"u0"]  # input.key_field
    assert [s["score"] for s in scored] == [0.5, 0.0, 0.0]
    assert [s["plan"] for s in scored] == ["login", "page_view", "support_ticket"]  # input.*
    assert [s["scored_at"] for s in scored] == [ev["event_time"] for ev in events]  # event_time
    f = [s["features"] for s in scored]
    assert [(x["plan__free"], x["plan__pro"], x["plan__unknown"]) for x in f] == [
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 1.0),
        (1.0, 0.0, 0.0),
    ]
    assert [x["kind"] for x in f] == [1.0, 2.0, 0.0]
    assert [x["n_60s"] for x in f] == [1.0, 1.0, 2.0]


async def test_producer_key_comes_from_the_pipeline_and_a_keyless_event_is_refused() -> None:
    cfg = PipelineConfig.from_args(
        args(input={"topic": "t.in", "contract": "churn.activity", "key_field": "plan"})
    )
    codec = Codec.for_contract("churn.activity")
    prod = EventProducer.for_pipeline(cfg, "127.0.0.1:1", codec)
    assert prod.topic == "t.in" and prod.key_field == "plan"
    key, _, _ = prod.encode(activity(0, "pro", "login"))
    assert key == b"pro"
    other = EventProducer("127.0.0.1:1", "t.in", codec, key_field="account_id")
    with pytest.raises(ContractError, match=r"has no .account_id., the key field of topic t\.in"):
        other.encode(activity(0, "pro", "login"))


async def test_the_event_time_check_reads_the_configured_field_and_unit() -> None:
    a = args()
    a["input"]["event_time"] = {"field": "event_time", "unit": "s"}
    cfg = PipelineConfig.from_args(a)
    p = fake_pipeline(cfg, model=FakeModel(lambda cols: cols["session_minutes"] * 0.0))
    codec = Codec.for_contract("churn.activity")
    ok = {**activity(0, "pro", "login"), "event_time": T0 // 1000}  # seconds, on time
    ahead = {**activity(1, "pro", "login"), "event_time": T0 // 1000 + 3600}  # 1 h ahead
    recs = [
        InRecord("t.in", 0, i, b"k", codec.encode(ev), [], T0) for i, ev in enumerate([ok, ahead])
    ]
    res = await p.processor.process(recs)
    assert [
        Codec.for_contract("churn-risk-scored").decode(r.value)["event_id"] for r in res.outputs
    ] == ["e0"]
    assert len(res.dlq) == 1 and res.dlq_by_class == {"EventTimeOutOfRange": 1}
    # scored_at <- event_time: the input's time in ms, whatever its unit
    scored = Codec.for_contract("churn-risk-scored").decode(res.outputs[0].value)
    assert scored["scored_at"] == T0


async def test_training_rows_equal_the_serving_columns() -> None:
    """raylane.training.training_set computes what the feature stage computes, column by
    column, for the same events (categorical, window and derived columns included)."""
    from raylane.pipeline.enrich import FeatureStage
    from raylane.testing.fakes import FakeWindows
    from raylane.training import training_set

    a = args()
    a["input"]["event_time"] = {"field": "event_time", "unit": "ms"}
    a["features"]["derived"] = [
        {"name": "minutes_per_event", "op": "ratio", "left": "session_minutes", "right": "n_60s"}
    ]
    cfg = PipelineConfig.from_args(a)
    plans = ["free", "pro", "team", None]
    kinds = ["login", "page_view", "other"]
    events = [activity(i, plans[i % 4], kinds[i % 3]) for i in range(40)]
    stage = FeatureStage(cfg, FakeWindows(cfg.features.windows), None)
    served = await stage(events, {})
    data = training_set(events, [i % 2 for i in range(40)], cfg.features, warmup_s=0)
    assert data.columns == cfg.features.columns()
    for c in data.columns:
        assert np.array_equal(data.frame[c].to_numpy(), served[c], equal_nan=True), c
