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
