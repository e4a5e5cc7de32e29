"""Models placed in the ingress (``placement: ingress``) on the Ray Serve app.

The primary and the shadow run inside the ingress replica: the app deploys no model
deployment, and the ingress scores both in process. Everything a model deployment does must
still hold there: every event is scored once by the version its output names, the shadow's
comparisons reach the promotion gates, a promotion mid-stream hot-swaps the in-process
primary without a restart (the same process before and after), and an alias moved outside
`raylane promote` is refused, counted in ``raylane_model_swaps_refused_total``.
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
from ray import serve

from raylane.settings import Settings
from raylane.testing import World

from .test_hot_swap import _produce, _read_scored

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
N = 5000  # 20 s at 250/s: the promotion lands mid-stream even on a slow machine


def _info(running: Any, label: str, want: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        info = running.model_info(label)
        if want(info) or time.monotonic() > deadline:
            return info
        time.sleep(0.5)


def test_models_in_the_ingress_score_swap_and_refuse_like_deployments(
    bootstrapped, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from raylane.config import PipelineConfig
    from raylane.kafka.admin import ensure_topics
    from raylane.lifecycle.promotion import promote, sign_aliases
    from raylane.lifecycle.shadow_stats import ShadowStore
    from raylane.monitoring.live import scrape
    from raylane.registry import register
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.faults import use_own_model
    from raylane.testing.kafka import isolated_args, isolated_topics

    stack = bootstrapped
    unique = uuid.uuid4().hex[:8]
    name = f"fraud_ip_{unique}"
    args = isolated_args(FRAUD, f"ip-{unique}", num_replicas=1)
    args["name"] = f"ip_{unique}"
    v_old, v_new = use_own_model(
        args,
        stack.mlflow_tracking_uri,
        name,
        min_samples=500,
        audit_topic=f"models.promoted.ip-{unique}",
    )
    args["models"]["primary"]["placement"] = "ingress"
    args["models"]["shadows"][0]["placement"] = "ingress"
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY", f"e2e-promotion-key-{unique}")
    assert sign_aliases(name, ["champion", "challenger"]) == ["champion", "challenger"]
    ensure_topics(stack.kafka_bootstrap, isolated_topics(args), partitions=2)
    meta = json.loads((Settings.load().home / "world-fraud.json").read_text())
    world = World(seed=meta["seed"], n_users=meta["users"])
    events = [le.event for le in world.stream(rate=250.0, seed=22).take(N)]
    ids = {e["event_id"] for e in events}
    store = ShadowStore(stack.redis_url)
    cfg = PipelineConfig.from_args(args)

    with run_pipeline(FRAUD, overrides=args) as running:
        running.wait_assigned()
        deployments = set(serve.status().applications[running.app_name].deployments)
        assert f"{args['name']}-ingress" in deployments, deployments
        assert not [d for d in deployments if "-model-" in d], deployments  # none for models
        with pytest.raises(Exception, match="placed in the ingress"):
            running.model("champion")
        ingress_pid = running.stats()["pid"]
        before = running.model_info("champion")
        shadow = running.model_info("challenger")
        assert (before["version"], before["placement"], before["pid"]) == (
            v_old,
            "ingress",
            ingress_pid,
        )
        assert (shadow["version"], shadow["pid"]) == (v_new, ingress_pid)

        sent = [0]
        producer = threading.Thread(
            target=_produce,
            args=(stack.kafka_bootstrap, args["input"]["topic"], events, sent),
            daemon=True,
        )
        producer.start()
        while sent[0] < N // 2 and producer.is_alive():
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        while store.aggregate(cfg.name, "challenger").n < 500 and time.monotonic() < deadline:
            time.sleep(0.2)
        t_promote = time.time()
        out = promote(cfg, actor="e2e@test", reason="in-process hot swap test")
        assert all(g.passed for g in out.gates), [g.describe() for g in out.gates]
        producer.join(timeout=120)
        assert not producer.is_alive() and sent[0] >= N
        recs = asyncio.run(
            _read_scored(stack.kafka_bootstrap, args["outputs"]["scored"]["topic"], ids, 300)
        )
        after = _info(running, "champion", lambda i: i["version"] == v_new)

        mlflow = MlflowClient(stack.mlflow_tracking_uri)
        src = mlflow.get_model_version(name, v_old)
        v_rogue = str(
            register(str(src.source), name, tracking_uri=stack.mlflow_tracking_uri).version
        )
        key = f"raylane_model_swaps_refused_total{{deployment={args['name']}-model-champion}}"
        refused_before = scrape(Settings.load().home).get(key, 0.0)
        mlflow.set_registered_model_alias(name, "champion", v_rogue)
        rogue = _info(running, "champion", lambda i: bool(i["refusals"]))
        deadline = time.monotonic() + 30  # the counter moves on the loop, after the refusal
        while (refused_after := scrape(Settings.load().home).get(key, 0.0)) == refused_before:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        compared = store.aggregate(cfg.name, "challenger").n

    scored = {r["event_id"] for r in recs}
    assert scored == ids, f"{len(ids - scored)} events were never scored"
    assert len(recs) >= N
    assert {r["model_version"] for r in recs} == {v_old, v_new}
    assert {r["model_name"] for r in recs} == {name}
    assert compared >= 500, compared  # the in-process shadow's comparisons reached the store
    assert after["pid"] == ingress_pid  # swapped in place: no restart
    assert [(s["from_version"], s["to_version"]) for s in after["swaps"]] == [(v_old, v_new)]
    assert after["swaps"][0]["at"] >= t_promote
    assert rogue["version"] == v_new, rogue
    assert [r["version"] for r in rogue["refusals"]] == [v_rogue], rogue["refusals"]
    assert "outside `raylane promote`" in rogue["refusals"][0]["reason"]
    assert refused_after - refused_before == 1, (refused_before, refused_after)
