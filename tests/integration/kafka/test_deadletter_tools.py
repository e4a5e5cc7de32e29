"""DLQ tools and correlation ids against the real broker and Redis, with the real ingress loop.

Bad events go to the DLQ through the real loop; after a fix (the missing schema is
registered) `replay` re-publishes them and they are scored exactly once, even when
replay runs twice; one correlation id is followed from payments.initiated through the
DLQ to payments.scored, payments.flagged and fraud.shadow.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from raylane.bootstrap import pipeline_topics
from raylane.config import PipelineConfig
from raylane.contracts import (
    BUILTIN_REGISTRY_DIR,
    Codec,
    FileSchemaRegistry,
    load_contract,
    register_checked,
)
from raylane.errors import RaylaneError
from raylane.ingest import build_ingress
from raylane.kafka import deadletters as D
from raylane.kafka.admin import ensure_topics_async
from raylane.kafka.producer import EventProducer
from raylane.kafka.reader import read_topic
from raylane.kafka.replay import read_dead_letters, replay, summarize
from raylane.pipeline.processor import Prediction
from raylane.testing import World

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[3]
SUBJECT = "payments.initiated-value"


def _cfg(unique: str, registry: Path | None = None, **input_: Any) -> PipelineConfig:
    """The fraud pipeline on unique topics: windows only, an in-process shadow, flagged rule."""
    doc = yaml.safe_load((ROOT / "serve_configs/fraud.yaml").read_text())
    args = copy.deepcopy(doc["applications"][0]["args"])
    args["name"] = f"dlq_{unique}"
    args["input"]["topic"] = f"dlq.payments.{unique}"
    args["input"].update(input_)
    args["ingress"]["group_id"] = f"dlq-{unique}"
    args["features"]["online"] = []
    args["features"]["derived"] = []
    args["models"]["shadows"] = [{"name": "shadow", "uri": "models:/fraud@challenger"}]
    args["outputs"] = {
        "scored": {"topic": f"dlq.scored.{unique}", "contract": "payments.scored"},
        "shadow": {"topic": f"dlq.shadow.{unique}", "contract": "fraud.shadow"},
    }
    args["decision"]["rules"][0]["publish"]["topic"] = f"dlq.flagged.{unique}"
    if registry is not None:
        args["schema_registry"] = {"type": "file", "path": str(registry)}
    return PipelineConfig.from_args(args)


class AmountModel:
    """Scores by amount: amounts over 850 are flagged by the fraud rule (score > 0.85)."""

    def __init__(self, name: str = "amount") -> None:
        self.name = name

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        s = np.clip(columns["amount"] / 1000.0, 0, 1)
        return Prediction(scores=s, model_name=self.name, model_version="1", latency_ms=0.1)


async def _run(cfg: PipelineConfig, until: Any, timeout_s: float = 60) -> Any:
    loop = await build_ingress(cfg, AmountModel(), [AmountModel("shadow")], metrics_endpoint=False)
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        deadline = time.monotonic() + timeout_s
        while not until(loop.stats) and time.monotonic() < deadline:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    finally:
        await loop.close()
        task.cancel()
    return loop.stats


def _headers(m: Any) -> dict[str, bytes]:
    return {k: v for k, v in m.headers}


def _v3() -> dict[str, Any]:
    v3 = load_contract("payments.initiated")
    v3["fields"].append(
        {
            "name": "channel",
            "type": ["null", "string"],
            "default": None,
            "doc": "Sales channel (test-only v3).",
        }
    )
    return v3


async def test_replay_after_fix_scores_once_and_one_correlation_id_goes_everywhere(
    stack: Any, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The ingress's registry lacks v3; the producing team already registered it elsewhere.
    ingress_reg = tmp_path / "ingress-registry"
    producer_reg = tmp_path / "producer-registry"
    shutil.copytree(BUILTIN_REGISTRY_DIR, ingress_reg)
    shutil.copytree(BUILTIN_REGISTRY_DIR, producer_reg)
    v3_id = register_checked(FileSchemaRegistry(producer_reg), SUBJECT, _v3())
    cfg = _cfg(unique, ingress_reg)
    await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=2)

    world = World(seed=11, n_users=40)
    events = [le.event for le in world.stream(start=0, rate=10).take(12)]
    for ev in events[:3]:
        ev["amount"] = 950.0  # flagged
    for ev in events[:4]:
        ev["correlation_id"] = None  # ids come from headers, or are made up by the ingress
    v3 = Codec(SUBJECT, FileSchemaRegistry(producer_reg))
    v2 = Codec(SUBJECT, FileSchemaRegistry(ingress_reg))
    assert v3.schema_id == v3_id != v2.schema_id
    async with EventProducer(
        stack.kafka_bootstrap, cfg.input.topic, v3, key_field=cfg.input.key_field
    ) as prod:
        # v3 events: one with a correlation id header, one with no headers at all, one plain
        await prod.send_raw(
            v3.encode({**events[0], "channel": "web"}),
            key=b"u0",
            headers=[
                ("correlation_id", b"cid-follow"),
                ("event_id", events[0]["event_id"].encode()),
            ],
        )
        await prod.send_raw(v3.encode(events[1]), key=b"u1")
        await prod.send_raw(v3.encode(events[2]), key=b"u2", headers=[("correlation_id", b"cid-2")])
        # v2 events the ingress reads fine, one without any correlation id
        await prod.send_raw(v2.encode(events[3]), key=b"u3")
        for ev in events[4:]:
            await prod.send_raw(
                v2.encode(ev),
                key=ev["user_id"].encode(),
                headers=[("correlation_id", f"c-{ev['event_id']}".encode())],
            )
        await prod.flush()

    with caplog.at_level(logging.WARNING, logger="raylane.ingest"):
        stats = await _run(cfg, lambda s: s.scored + s.dlq >= 12)
    assert (stats.scored, stats.dlq) == (9, 3)

    letters = await read_dead_letters(stack.kafka_bootstrap, cfg.input.dlq)
    assert summarize(letters) == {("UnknownSchemaId", "decode"): 3}
    by_cid = {d.correlation_id: d for d in letters}
    assert "cid-follow" in by_cid and "cid-2" in by_cid
    made = [d for d in letters if d.correlation_id not in ("cid-follow", "cid-2")]
    assert len(made) == 1 and _headers(made[0]).get(D.H_GENERATED) == b"true"
    generated_cid = made[0].correlation_id
    # every log line about a dead letter names it and its correlation id
    for cid in ("cid-follow", "cid-2", generated_cid):
        assert any(
            cid in r.getMessage() and "UnknownSchemaId" in r.getMessage() for r in caplog.records
        ), cid

    # the fix: the ingress's registry learns v3 (same id as the producer's)
    assert register_checked(FileSchemaRegistry(ingress_reg), SUBJECT, _v3()) == v3_id
    with pytest.raises(RaylaneError, match="allowed_topics"):  # no target: refused
        await replay(stack.kafka_bootstrap, cfg.input.dlq, registry=FileSchemaRegistry(ingress_reg))
    first = await replay(
        stack.kafka_bootstrap,
        cfg.input.dlq,
        registry=FileSchemaRegistry(ingress_reg),
        allowed_topics={cfg.input.topic},
    )
    assert (first.selected, first.replayed, first.by_target) == (3, 3, {cfg.input.topic: 3})
    second = await replay(
        stack.kafka_bootstrap,
        cfg.input.dlq,
        registry=FileSchemaRegistry(ingress_reg),
        allowed_topics={cfg.input.topic},
    )
    assert (second.replayed, second.already_replayed) == (0, 3)

    stats = await _run(cfg, lambda s: s.scored >= 3)
    assert (stats.scored, stats.dlq) == (3, 0)

    scored_msgs = await read_topic(stack.kafka_bootstrap, cfg.outputs.scored.topic)
    out = Codec.for_contract("payments.scored")
    scored = [(out.decode(m.value), _headers(m)) for m in scored_msgs]
    ids = [r["event_id"] for r, _ in scored]
    assert sorted(ids) == sorted(e["event_id"] for e in events)  # each exactly once
    by_event = {r["event_id"]: (r, h) for r, h in scored}

    def follow(event_id: str, cid: str, generated: bool) -> None:
        rec, h = by_event[event_id]
        assert rec["correlation_id"] == cid and h["correlation_id"] == cid.encode()
        assert (h.get("raylane.correlation_id.generated") == b"true") is generated

    follow(events[0]["event_id"], "cid-follow", False)
    follow(events[1]["event_id"], generated_cid, True)  # made at the DLQ, kept through replay
    follow(events[2]["event_id"], "cid-2", False)
    rec3, h3 = by_event[events[3]["event_id"]]
    assert h3.get("raylane.correlation_id.generated") == b"true" and rec3["correlation_id"]

    flagged = await read_topic(stack.kafka_bootstrap, f"dlq.flagged.{unique}")
    fl = Codec.for_contract("payments.flagged")
    flagged_cids = {fl.decode(m.value)["correlation_id"]: _headers(m) for m in flagged}
    assert {"cid-follow", "cid-2", generated_cid} <= set(flagged_cids)
    assert flagged_cids["cid-follow"]["correlation_id"] == b"cid-follow"

    shadow = await read_topic(stack.kafka_bootstrap, cfg.outputs.shadow.topic)  # type: ignore[union-attr]
    sh = Codec.for_contract("fraud.shadow")
    shadow_by_cid = {sh.decode(m.value)["correlation_id"]: _headers(m) for m in shadow}
    assert {"cid-follow", "cid-2", generated_cid, rec3["correlation_id"]} <= set(shadow_by_cid)
    assert shadow_by_cid["cid-follow"]["correlation_id"] == b"cid-follow"
    assert shadow_by_cid["cid-follow"]["event_id"] == events[0]["event_id"].encode()

    # the replayed input records name where they came from
    replayed = [
        m
        for m in await read_topic(stack.kafka_bootstrap, cfg.input.topic)
        if "raylane.replay.of" in _headers(m)
    ]
    assert len(replayed) == 3
    assert all(
        _headers(m)["raylane.replay.of"].startswith(cfg.input.dlq.encode()) for m in replayed
    )


async def test_oversized_event_goes_to_dlq_truncated_and_the_consumer_goes_on(
    stack: Any, unique: str
) -> None:
    limit = 256 << 10
    cfg = _cfg(unique, max_event_bytes=limit)
    await ensure_topics_async(stack.kafka_bootstrap, pipeline_topics(cfg), partitions=1)
    events = [le.event for le in World(seed=12, n_users=20).stream(start=0, rate=10).take(6)]
    codec = Codec.for_contract("payments.initiated")
    big = json.dumps(
        {**events[0], "event_id": "big", "user_history_hash": "x" * (3 << 20)}
    ).encode()
    assert len(big) > 3 << 20  # over the default 1 MiB and the ingress's 1 MiB partition fetch
    async with EventProducer(
        stack.kafka_bootstrap,
        cfg.input.topic,
        codec,
        max_request_size=4 << 20,
        key_field=cfg.input.key_field,
    ) as prod:
        await prod.send_many(events[:3])
        await (await prod.send_raw(big, key=b"big", headers=[("correlation_id", b"cid-big")]))
        await prod.send_many(events[3:])

    stats = await _run(cfg, lambda s: s.scored + s.dlq >= 7)
    assert (stats.scored, stats.dlq) == (6, 1)
    [d] = await read_dead_letters(stack.kafka_bootstrap, cfg.input.dlq)
    h = _headers(d)
    assert d.error_class == "EventTooLarge" and str(limit) in d.message
    assert h[D.H_TRUNCATED] == b"true" and int(h[D.H_ORIGINAL_SIZE]) == len(big)
    assert d.value == big[: D.DLQ_KEEP_BYTES] and d.correlation_id == "cid-big"
    # a truncated record is never replayed
    rep = await replay(stack.kafka_bootstrap, cfg.input.dlq, allowed_topics={cfg.input.topic})
    assert (rep.selected, rep.replayed, rep.truncated) == (1, 0, 1)


def test_dlq_cli_inspect_counts_and_decodes_replay_dry_run(
    stack: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from raylane.cli import app
    from raylane.contracts import ContractViolation, UnknownSchemaId
    from raylane.kafka.deadletters import dlq_record
    from raylane.kafka.records import InRecord

    dlq, source = f"cli.{unique}.dlq", f"cli.{unique}"
    codec = Codec(SUBJECT)
    ev = _events_for_cli()
    good = codec.encode(ev)
    recs = [
        dlq_record(
            InRecord(source, 0, i, b"k", raw, [("event_id", f"e{i}".encode())]),
            err,
            f"cid-{i}",
            dlq,
        )
        for i, (raw, err) in enumerate(
            [
                (b"\x00\x00\x00\x99\x99" + good[5:], UnknownSchemaId("schema id 39321 unknown")),
                (
                    json.dumps({"event_id": "e1", "amount": "x"}).encode(),
                    ContractViolation("amount: expected double", path="amount"),
                ),
                (b"\x07garbage", UnknownSchemaId("x")),
            ]
        )
    ]

    async def write() -> None:
        async with EventProducer(stack.kafka_bootstrap, dlq, codec, key_field="user_id") as prod:
            for r in recs:
                await prod.send_raw(r.value, key=r.key, headers=r.headers)
            await prod.flush()

    asyncio.run(write())
    monkeypatch.setenv("RAYLANE_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)
    runner = CliRunner()
    res = runner.invoke(app, ["dlq", "inspect", dlq], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "3 dead letters" in res.output
    assert "UnknownSchemaId" in res.output and "decode" in res.output and "2" in res.output
    assert "ContractViolation" in res.output and "validate" in res.output
    assert "cid-1" in res.output and '"amount": "x"' in res.output  # JSON decoded
    assert "Avro schema id 39321 (unknown)" in res.output and "garbage" in res.output
    # no pipeline config dead-letters to this DLQ: replay refuses to pick a target itself
    res = runner.invoke(app, ["dlq", "replay", dlq, "--dry-run"], env={"COLUMNS": "250"})
    assert res.exit_code == 1 and "no pipeline in" in res.output and "--to" in res.output
    res = runner.invoke(
        app,
        [
            *("dlq", "replay", dlq, "--error-class", "UnknownSchemaId", "--since", "1h"),
            *("--dry-run", "--to", source),
        ],
        env={"COLUMNS": "250"},
    )
    assert res.exit_code == 0, res.output
    assert "read 3 dead letters, 2 selected; would replay 2" in res.output
    # a record's source header is data: it goes back only to a configured input topic
    rep = asyncio.run(
        replay(stack.kafka_bootstrap, dlq, dry_run=True, allowed_topics={"payments.initiated"})
    )
    assert (rep.read, rep.selected, rep.foreign, rep.event_ids) == (3, 3, 3, [])
    res = runner.invoke(app, ["dlq", "replay", dlq, "--since", "yesterday-ish"])
    assert res.exit_code == 1 and "--since" in res.output


def _events_for_cli() -> dict[str, Any]:
    return World(seed=13, n_users=5).stream(start=0, rate=10).take(1)[0].event
