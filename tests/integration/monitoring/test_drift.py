"""The drift monitor's consumer loop against the real broker, Redis and an MLflow registry.

A fraud model is trained and registered (with its reference sample) in a throwaway
MLflow store; scored events are synthesized from the same simulated world the way
training builds features (event fields, profile tables, window features in arrival
order) and scored by the registered model, then produced to a one-partition scored
topic (one partition keeps arrival order, so "the next 2 windows" is exact). The loop
runs without Ray, exactly as the Serve deployment runs it.

The drift settings are serve_configs/fraud.yaml's (PSI per column with Evidently's
default PSI threshold 0.1, dataset drift at a share of 0.5, windows of 500); nothing
here is tuned for these tests. See docs/drift-actions.md for why PSI.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from raylane.config import PipelineConfig
from raylane.contracts import Codec
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.producer import EventProducer
from raylane.loading import import_file
from raylane.monitoring.drift_monitor import DriftLoop, DriftMonitor, mlflow_reference
from raylane.monitoring.drift_state import read_state_async, read_windows, windows_key
from raylane.registry import load_model
from raylane.testing import LabeledEvent, World
from raylane.testing.kafka import isolated_args

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[3]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
END = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
USERS = 2000  # a prefix of the bootstrap world; 20 events/s keeps its per-user rate
WARMUP = 2400  # the first 2 minutes of a stream start with empty 60 s windows: not traffic
RISKY = ("electronics", "travel", "digital_goods", "gambling", "gift_cards", "crypto")


def _train_module() -> ModuleType:
    return import_file(ROOT / "models" / "fraud" / "train.py", "raylane_models_fraud_train_drift")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fraud@champion registered in a throwaway MLflow (sqlite), with its reference sample."""
    T = _train_module()
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    world = World(seed=7, n_users=USERS)
    T.train(world=world, hours=0.4, end=END, tracking_uri=uri, specs=(T.CHAMPION,), progress=False)
    return {
        "T": T,
        "uri": uri,
        "world": world,
        "model": load_model("models:/fraud@champion", tracking_uri=uri),
    }


def _shift(events: list[LabeledEvent], world: World, seed: int) -> list[LabeledEvent]:
    """Amounts x5 for half the users (even ids) and half the payments moved to risky categories."""
    rng = random.Random(seed)
    risky = [i for i, c in enumerate(world.merchant_category) if c in RISKY]
    out = []
    for e in events:
        ev = dict(e.event)
        if int(ev["user_id"][1:]) % 2 == 0:
            ev["amount"] = round(ev["amount"] * 5, 2)
        if rng.random() < 0.5:
            m = rng.choice(risky)
            ev["merchant_id"], ev["merchant_category"] = (
                world.merchant_ids[m],
                world.merchant_category[m],
            )
        out.append(LabeledEvent(ev, e.is_fraud, e.kind))
    return out


def _scored(
    trained: dict[str, Any], n_stationary: int, n_shifted: int, seed: int
) -> list[dict[str, Any]]:
    """payments.scored records of a fresh stream (later than training, another seed)."""
    T, world, model = trained["T"], trained["world"], trained["model"]
    feats = T.load_features(FRAUD)
    start = END.timestamp() * 1000 + 3_600_000 * (1 + seed)
    n_live = WARMUP + n_stationary + n_shifted
    stream = world.stream(int(start), seed=seed)
    live = stream.take(n_live)
    live = live[: WARMUP + n_stationary] + _shift(live[WARMUP + n_stationary :], world, seed)
    events = world.prior_events(int(start)) + live
    data = T.build_dataset(events, world, feats, END)
    frame = data.frame.iloc[WARMUP:].reset_index(drop=True)
    scores = model.predict({c: frame[c].to_numpy() for c in frame.columns})
    out = []
    for i, le in enumerate(live[WARMUP:]):
        ev = le.event
        row = frame.iloc[i]
        out.append(
            {
                **{
                    k: ev[k]
                    for k in (
                        "event_id",
                        "correlation_id",
                        "user_id",
                        "merchant_id",
                        "amount",
                        "currency",
                        "event_time",
                    )
                },
                "pipeline": "fraud",
                "score": float(scores[i]),
                "decision": "flagged" if scores[i] > 0.85 else "approved",
                "rule": "high_risk" if scores[i] > 0.85 else None,
                "model_name": model.name,
                "model_version": str(model.version),
                "features": {c: (None if np.isnan(v) else float(v)) for c, v in row.items()},
                "latency_ms": {},
                "scored_at": int(time.time() * 1000),
            }
        )
    return out


def _cfg(unique: str) -> PipelineConfig:
    args = isolated_args(FRAUD, unique)
    args["name"] = f"drift_{unique}"
    args["drift"] = {
        **args["drift"],
        "group_id": f"drift-{unique}",
        "output": {"topic": f"model.drift.{unique}", "contract": "model.drift"},
    }
    return PipelineConfig.from_args(args)


async def _run_monitor(
    cfg: PipelineConfig,
    records: list[dict[str, Any]],
    trained: dict[str, Any],
    bootstrap: str,
    redis_url: str,
    report_dir: Path,
) -> DriftLoop:
    assert cfg.drift is not None
    await ensure_topics_async(
        bootstrap, [cfg.outputs.scored.topic, cfg.drift.output.topic], partitions=1
    )
    async with EventProducer(
        bootstrap,
        cfg.outputs.scored.topic,
        Codec.for_contract("payments.scored"),
        key_field="user_id",
    ) as p:
        for i in range(0, len(records), 1000):
            await p.send_many(records[i : i + 1000])
    expected = len(records) // cfg.drift.window_size
    redis = aioredis.from_url(redis_url)
    monitor = DriftMonitor(cfg, mlflow_reference(trained["uri"]), report_dir=report_dir)
    loop = DriftLoop(cfg, bootstrap=bootstrap, redis=redis, monitor=monitor)
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        deadline = time.monotonic() + 400
        while loop.stats["windows"] < expected and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.5)
    finally:
        loop.stop()
        await task
        await loop.close()
    assert loop.stats["windows"] == expected, loop.stats
    state = await read_state_async(redis, cfg.name)
    loop.stats["recorded"] = await asyncio.to_thread(read_windows, redis_url, cfg.name)
    await redis.delete(f"raylane:drift:{cfg.name}", windows_key(cfg.name))
    await redis.aclose()
    loop.stats["state"] = state
    return loop


async def _drift_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    from aiokafka import AIOKafkaConsumer

    codec = Codec.for_contract("model.drift")
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await c.start()
    out: list[dict[str, Any]] = []
    try:
        idle = time.monotonic() + 2
        while time.monotonic() < idle:
            for msgs in (await c.getmany(timeout_ms=200)).values():
                oks, errs = codec.decode_batch([m.value for m in msgs])
                assert not errs
                out += [ev for _, ev in oks]
                idle = time.monotonic() + 2
    finally:
        await c.stop()
    return out


async def test_stationary_stream_over_21_windows_publishes_no_drift(
    trained, stack, unique: str, tmp_path: Path
) -> None:
    cfg = _cfg(unique)
    assert cfg.drift is not None
    records = _scored(trained, 21 * cfg.drift.window_size, 0, seed=1)
    loop = await _run_monitor(
        cfg, records, trained, stack.kafka_bootstrap, stack.redis_url, tmp_path
    )
    assert loop.stats["windows"] == 21
    # caught up: no closed window waits, none is being evaluated
    assert (loop.stats["pending"], loop.stats["evaluating"]) == (0, None), loop.stats
    assert loop.stats["evaluating_since"] is None
    assert await _drift_events(stack.kafka_bootstrap, cfg.drift.output.topic) == []
    state = loop.stats["state"]
    assert state is not None and state.open is False and state.model_name == "fraud"
    assert not list(tmp_path.glob("*.html"))
    # every window is recorded for the dashboard, newest first, each column with its score
    recorded = loop.stats["recorded"]
    assert len(recorded) == 21 and not any(w["drifted"] or w["report"] for w in recorded)
    assert [w["window_end"] for w in recorded] == sorted(
        (w["window_end"] for w in recorded), reverse=True
    )
    assert recorded[0]["window_end"] == state.window_end
    assert all(w["count"] == cfg.drift.window_size for w in recorded)
    assert {c["column"] for c in recorded[0]["columns"]} >= {"amount", "score"}


async def test_shift_is_reported_within_two_windows_naming_the_shifted_columns(
    trained, stack, unique: str, tmp_path: Path
) -> None:
    cfg = _cfg(unique)
    assert cfg.drift is not None
    w = cfg.drift.window_size
    records = _scored(trained, 4 * w, 4 * w, seed=2)
    shift_start = records[4 * w]["event_time"]
    loop = await _run_monitor(
        cfg, records, trained, stack.kafka_bootstrap, stack.redis_url, tmp_path
    )
    events = await _drift_events(stack.kafka_bootstrap, cfg.drift.output.topic)
    assert events, f"no model.drift event for a shifted stream: {loop.stats}"
    first = events[0]
    # no stationary window drifted, and the first shifted or the next one did
    assert first["window_start"] >= shift_start
    assert first["window_end"] <= records[6 * w - 1]["event_time"]
    assert first["window_count"] == w and first["pipeline"] == cfg.name
    assert first["model_name"] == "fraud" and first["drift_share"] >= first["threshold"]
    drifted = {c["column"] for c in first["drifted_columns"]}
    assert {"amount", "merchant_profile__category_risk"} <= drifted, drifted
    assert all(c["test"] and c["score"] >= c["threshold"] for c in first["drifted_columns"])
    # the window's last event names the correlation id, and the report exists
    ids = {r["correlation_id"] for r in records[4 * w :]}
    assert first["correlation_id"] in ids
    report = Path(first["report_uri"].removeprefix("file://"))
    assert report.is_file() and "merchant_profile__category_risk" in report.read_text()
    state = loop.stats["state"]
    assert state.open is True and "amount" in state.drifted_columns
    # the recorded windows: the drifted one with its report and the same columns as the event
    recorded = {w["window_end"]: w for w in loop.stats["recorded"]}
    mine = next(w for w in recorded.values() if w["report"] == report.name)
    assert mine["drifted"] and mine["drift_share"] == first["drift_share"]
    assert {c["column"] for c in mine["columns"] if c["drifted"]} == drifted


def test_drift_status_shows_the_state_the_monitor_keeps(stack, unique: str) -> None:
    import redis
    from typer.testing import CliRunner

    from raylane.cli import app
    from raylane.monitoring.drift_state import DriftState, drift_key

    name = f"status_{unique}"
    state = DriftState(
        open=True,
        model_name="fraud",
        model_version="4",
        drift_share=0.62,
        threshold=0.5,
        drifted_columns=["amount", "score"],
        window_end="2026-11-26T17:00:00+00:00",
        updated_at="2026-11-26T17:00:02+00:00",
    )
    client = redis.Redis.from_url(stack.redis_url)
    client.set(drift_key(name), state.to_json())
    try:
        out = CliRunner().invoke(app, ["drift", "status", name])
        assert out.exit_code == 0, out.output
        assert "OPEN" in out.output and "fraud v4" in out.output and "amount, score" in out.output
        raw = CliRunner().invoke(app, ["drift", "status", name, "--json"])
        assert DriftState.from_json(raw.output) == state
    finally:
        client.delete(drift_key(name))
        client.close()
    out = CliRunner().invoke(app, ["drift", "status", name])
    assert out.exit_code == 0 and "has not evaluated a window yet" in out.output.replace("\n", " ")
