"""The SDK's pure parts: time arguments and the topic -> contract table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from raylane.errors import ConfigError
from raylane.sdk import Pipeline, to_ms

ROOT = Path(__file__).resolve().parents[2]


def test_every_time_form_gives_epoch_ms():
    t = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    ms = 1_796_526_000_000
    assert to_ms(t) == ms
    assert to_ms(t.replace(tzinfo=None)) == ms  # naive means UTC
    assert to_ms(t.astimezone(timezone(timedelta(hours=2)))) == ms
    assert to_ms(pd.Timestamp(t)) == ms
    assert to_ms(ms) == ms and to_ms(float(ms)) == ms
    assert to_ms("2026-12-06T03:00:00") == ms
    assert to_ms("30m", now_ms=ms) == ms - 30 * 60_000
    assert to_ms(None) is None
    with pytest.raises(TypeError):
        to_ms(True)


def test_contracts_name_every_topic_of_the_fraud_config():
    p = Pipeline.load(ROOT / "serve_configs" / "fraud.yaml")
    c = p.contracts()
    assert c["payments.initiated"] == "payments.initiated"
    assert c["payments.scored"] == "payments.scored"
    assert c["fraud.shadow"] == "fraud.shadow"
    assert c["model.drift"] == "model.drift"
    assert c["payments.blocked"] == "payments.blocked"


def test_a_topic_without_contract_is_refused_with_the_known_ones():
    p = Pipeline.load(ROOT / "serve_configs" / "fraud.yaml")
    with pytest.raises(ConfigError, match="known topics"):
        p.read_topic("no.such.topic")


def test_replay_refuses_the_live_input_topic():
    p = Pipeline.load(ROOT / "serve_configs" / "fraud.yaml")
    with pytest.raises(ConfigError, match="live input"):
        p.replay("payments.initiated", "payments.initiated")


def test_replay_sends_each_archived_record_with_its_key_bytes_and_headers(monkeypatch):
    import asyncio

    import raylane.kafka.admin as admin
    import raylane.kafka.client as client
    from raylane.sdk import _publish

    sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []

    class Producer:
        async def start(self) -> None: ...

        async def stop(self) -> None: ...

        async def send(self, topic, value, key, headers):
            sent.append((topic, value, key, headers))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    class Conn:
        def producer(self, client_id: str) -> Producer:
            return Producer()

    monkeypatch.setattr(client, "connection", lambda bootstrap: Conn())
    created: list[list[str]] = []

    async def ensure(bootstrap, topics):  # type: ignore[no-untyped-def]
        created.append(list(topics))

    monkeypatch.setattr(admin, "ensure_topics_async", ensure)
    df = pd.DataFrame(
        {
            "_key": [b"u1", None, b"u3"],
            "_value": [b"\x00one", b"\x00two", None],  # the last was archived without bytes
            "_headers": ['{"raylane.correlation_id": "c1"}', None, "{}"],
            "_partition": [0, 1, 2],
            "_offset": [10, 11, 12],
            "event_id": ["e1", "e2", "e3"],
        }
    )
    res = asyncio.run(_publish("127.0.0.1:1", "payments.initiated", "staging", df))
    assert (res.read, res.replayed, res.skipped) == (3, 2, 1)
    assert created == [["staging"]]
    assert [(t, v, k) for t, v, k, _ in sent] == [
        ("staging", b"\x00one", b"u1"),
        ("staging", b"\x00two", None),
    ]
    assert sent[0][3] == [
        ("raylane.correlation_id", b"c1"),
        ("raylane.replay.of", b"payments.initiated[0]@10"),
    ]
    assert sent[1][3] == [("raylane.replay.of", b"payments.initiated[1]@11")]


def test_served_features_take_the_prediction_from_the_record_itself():
    from raylane.sdk import served_features

    scored = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e1"],  # e1 scored twice: its first scoring counts
            "score": [0.9, 0.1, 0.5],
            "features": [{"amount": 12.5}, '{"amount": 3.0}', {"amount": 99.0}],
            "_timestamp": pd.to_datetime([1, 2, 3], unit="s"),
        }
    )
    got = served_features(scored, ["amount", "score", "missing"])
    assert list(got.index) == ["e1", "e2"]
    assert got["amount"].tolist() == [12.5, 3.0]
    assert got["score"].tolist() == [0.9, 0.1]
    assert got["missing"].isna().all()


def test_an_empty_range_still_has_the_contracts_columns():
    from raylane.sdk import _frame

    empty = _frame([], [], ["event_id", "amount"])
    assert list(empty.columns) == ["event_id", "amount", "_partition", "_offset", "_timestamp"]
    assert len(empty) == 0 and str(empty["_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert set(empty["event_id"]) == set()
    one = _frame([{"event_id": "e1"}], [(3, 7, 1_000)], ["event_id", "amount"])
    assert one.to_dict("records") == [
        {
            "event_id": "e1",
            "_partition": 3,
            "_offset": 7,
            "_timestamp": pd.Timestamp(1_000, unit="ms", tz="UTC"),
        }
    ]
