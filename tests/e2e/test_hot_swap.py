"""Hot swap on the Ray Serve app: promote in the middle of a 5,000-event stream.

The test registers the fraud champion and challenger under its own model name (so it
never moves fraud@champion), runs the pipeline under its own name and topics with two
primary replicas, promotes through the real gates on the live shadow aggregates while
events flow, and checks: every event_id is scored (none lost), every output names the
version that scored it (both versions appear, nothing else), and each primary replica
switched version exactly once, without a restart. The run holds a promotion key, so
every version is approved (bootstrap's aliases, the promotion); afterwards the champion
alias is moved in MLflow directly to a version nobody approved, and every replica must
refuse it: the promoted version keeps serving, and the refusal shows in each replica's
record and in ``raylane_model_swaps_refused_total``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from raylane.contracts import Codec
from raylane.kafka.producer import EventProducer
from raylane.settings import Settings
from raylane.testing import World

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
N = 5000
RATE = 250.0  # events per second: the stream lasts ~20 s


def _produce(bootstrap: str, topic: str, events: list[dict[str, Any]], sent: list[int]) -> None:
    async def run() -> None:
        codec = Codec.for_contract("payments.initiated")
        async with EventProducer(bootstrap, topic, codec, key_field="user_id") as prod:
            t0 = time.monotonic()
            for i in range(0, len(events), 50):
                await prod.send_many(events[i : i + 50])
                sent[0] = i + 50
                await asyncio.sleep(max(0.0, t0 + (i + 50) / RATE - time.monotonic()))

    asyncio.run(run())


async def _read_scored(
    bootstrap: str, topic: str, want: set[str], timeout_s: float
) -> list[dict[str, Any]]:
    codec = Codec.for_contract("payments.scored")
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await c.start()
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not want <= seen:
            for msgs in (await c.getmany(timeout_ms=250, max_records=5000)).values():
                for m in msgs:
                    r = codec.decode(m.value)
                    out.append(r)
                    seen.add(r["event_id"])
    finally:
        await c.stop()
    return out


def _replicas(running: Any, n: int = 2) -> dict[str, dict[str, Any]]:
    """info() of every primary replica (the handle routes calls to replicas at random)."""
    out: dict[str, dict[str, Any]] = {}
    handle = running.model("champion")
    deadline = time.monotonic() + 60
    while len(out) < n and time.monotonic() < deadline:
        info = handle.info.remote().result(timeout_s=30)
        out[info["replica"]] = info
    return out


def _refused(running: Any, version: str) -> dict[str, dict[str, Any]]:
    """info() of both primary replicas once each has refused `version` (or after 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        replicas = _replicas(running)
        done = all(version in [r["version"] for r in i["refusals"]] for i in replicas.values())
        if (done and len(replicas) == 2) or time.monotonic() > deadline:
            return replicas
        time.sleep(0.5)


def test_promotion_mid_stream_swaps_every_replica_once_and_loses_nothing(
    bootstrapped, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from raylane.kafka.admin import ensure_topics
    from raylane.lifecycle.promotion import promote, sign_aliases
    from raylane.lifecycle.shadow_stats import ShadowStore
    from raylane.monitoring.live import scrape
    from raylane.registry import register
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.faults import use_own_model
    from raylane.testing.kafka import isolated_args, isolated_topics, place_models

    stack = bootstrapped
    unique = uuid.uuid4().hex[:8]
    name = f"fraud_hs_{unique}"
    # model deployments: the swap of a deployment's replicas (tests/e2e/test_in_process_model.py
    # swaps models placed in the ingress, as the shipped config places them)
    args = place_models(isolated_args(FRAUD, f"hs-{unique}", num_replicas=1), "deployment")
    args["name"] = f"hs_{unique}"
    v_old, v_new = use_own_model(
        args,
        stack.mlflow_tracking_uri,
        name,
        min_samples=500,
        audit_topic=f"models.promoted.hs-{unique}",
    )
    args["models"]["primary"]["num_replicas"] = 2
    # signed promotions: the replicas (started below, they inherit it) and promote() share it
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY", f"e2e-promotion-key-{unique}")
    assert sign_aliases(name, ["champion", "challenger"]) == ["champion", "challenger"]
    ensure_topics(stack.kafka_bootstrap, isolated_topics(args), partitions=4)
    meta = json.loads((Settings.load().home / "world-fraud.json").read_text())
    world = World(seed=meta["seed"], n_users=meta["users"])  # the users bootstrap put in Feast
    events = [le.event for le in world.stream(rate=RATE, seed=21).take(N)]
    ids = {e["event_id"] for e in events}
    store = ShadowStore(stack.redis_url)

    with run_pipeline(FRAUD, overrides=args) as running:
        running.wait_assigned()
        from raylane.config import PipelineConfig

        cfg = PipelineConfig.from_args(args)
        before = _replicas(running)
        assert {i["version"] for i in before.values()} == {v_old}
        sent = [0]
        producer = threading.Thread(
            target=_produce,
            args=(stack.kafka_bootstrap, args["input"]["topic"], events, sent),
            daemon=True,
        )
        producer.start()
        while sent[0] < N // 2 and producer.is_alive():
            time.sleep(0.05)
        # the live aggregates must hold enough comparisons of this pair for the gates
        deadline = time.monotonic() + 60
        while store.aggregate(cfg.name, "challenger").n < 500 and time.monotonic() < deadline:
            time.sleep(0.2)
        at_promotion = sent[0]
        t_promote = time.time()
        out = promote(cfg, actor="e2e@test", reason="hot swap test")
        t_promoted = time.time()
        assert all(g.passed for g in out.gates), [g.describe() for g in out.gates]
        assert (out.event["from_version"], out.event["to_version"]) == (v_old, v_new)
        print(f"promoted v{v_old} -> v{v_new} after {at_promotion} of {N} events were sent")
        producer.join(timeout=120)
        assert not producer.is_alive() and sent[0] >= N

        recs = asyncio.run(
            _read_scored(stack.kafka_bootstrap, args["outputs"]["scored"]["topic"], ids, 300)
        )

        replicas = _replicas(running)

        # an alias moved outside `raylane promote` (the MLflow API, as the UI does it)
        mlflow = MlflowClient(stack.mlflow_tracking_uri)
        src = mlflow.get_model_version(name, v_old)
        v_rogue = str(
            register(str(src.source), name, tracking_uri=stack.mlflow_tracking_uri).version
        )
        deployment = f"{args['name']}-model-champion"
        refused_key = f"raylane_model_swaps_refused_total{{deployment={deployment}}}"
        refused_before = scrape(Settings.load().home).get(refused_key, 0.0)
        mlflow.set_registered_model_alias(name, "champion", v_rogue)
        after_rogue = _refused(running, v_rogue)
        refused_after = scrape(Settings.load().home).get(refused_key, 0.0)

    for rid, info in after_rogue.items():
        assert info["version"] == v_new, (rid, info)  # the approved version keeps serving
        assert [r["version"] for r in info["refusals"]] == [v_rogue], (rid, info["refusals"])
        assert "outside `raylane promote`" in info["refusals"][0]["reason"], info["refusals"]
    assert len(after_rogue) == 2
    assert refused_after - refused_before == 2, (refused_before, refused_after)
    print(f"both replicas refused v{v_rogue} (alias moved in MLflow) and kept v{v_new}")

    scored_ids = {r["event_id"] for r in recs}
    assert scored_ids == ids, f"{len(ids - scored_ids)} events were never scored"
    versions = {r["model_version"] for r in recs}
    assert versions == {v_old, v_new}, versions
    assert {r["model_name"] for r in recs} == {name}
    by_version = {v: sum(r["model_version"] == v for r in recs) for v in sorted(versions)}
    print(f"outputs: {len(recs)} records for {len(ids)} events; by version {by_version}")

    assert len(replicas) == 2, f"saw replicas {sorted(replicas)}"
    for rid, info in replicas.items():
        swaps = info["swaps"]
        assert info["version"] == v_new, (rid, info)
        assert [(s["from_version"], s["to_version"]) for s in swaps] == [(v_old, v_new)], (
            rid,
            swaps,
        )
        # the delay bound: the replica checked the alias before the promotion completed,
        # saw the old version, and swapped at its very next check (one poll interval + load)
        assert 0 < swaps[0]["previous_poll_at"] <= t_promoted, (rid, swaps[0], t_promoted)
        assert swaps[0]["at"] >= t_promote, (rid, swaps[0], t_promote)
        print(
            f"replica {rid}: switched v{v_old} -> v{v_new} "
            f"{swaps[0]['at'] - t_promote:.2f} s after the "
            f"promotion (load {swaps[0]['load_s']:.2f} s), pid {info['pid']}"
        )
    # no restart: the same replicas (same processes) that served v_old now serve v_new
    assert {r: i["pid"] for r, i in replicas.items()} == {r: i["pid"] for r, i in before.items()}
