"""Model flavors on the Ray Serve app: a scikit-learn primary and an XGBoost shadow.

The test trains a scikit-learn classifier on the fraud features (the bootstrapped world's
history), registers it as version 1 of its own model name (alias champion) and the
bootstrapped XGBoost challenger as version 2 (alias challenger), then serves the fraud
config under its own name and topics with the primary loaded by the sklearn flavor (picked
from the model's own flavors) and the shadow by the xgboost flavor (named in the config).
It checks that every event is scored exactly once, by the sklearn version, with the score
the estimator itself gives for the features the record carries, and that every event's
shadow comparison is published with the XGBoost booster's own score.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer

from raylane.contracts import Codec
from raylane.kafka.producer import EventProducer
from raylane.loading import import_file
from raylane.settings import Settings
from raylane.testing import World

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
N = 1000


def _world() -> World:
    """The world `raylane bootstrap` prepared (its profiles are in Feast)."""
    meta = json.loads((Settings.load().home / "world-fraud.json").read_text())
    return World(seed=meta["seed"], n_users=meta["users"])


def _register_pair(tracking_uri: str, name: str) -> tuple[Any, Any]:
    """v1: a scikit-learn classifier trained here (champion); v2: fraud@challenger (XGBoost)."""
    from mlflow import MlflowClient
    from sklearn.ensemble import HistGradientBoostingClassifier

    from raylane.registry import register

    T = import_file(ROOT / "models" / "fraud" / "train.py", "raylane_models_fraud_train")
    import _training  # models/ is on sys.path once train.py is imported

    spec = _training.SklearnSpec(
        "champion",
        lambda: HistGradientBoostingClassifier(max_iter=80, random_state=0),
        description="scikit-learn histogram gradient boosting, all columns",
    )
    res = T.train(world=_world(), hours=0.03, specs=(spec,), log=False, progress=False)
    fitted = res.champion
    v1 = _training.log_and_register(fitted, registered_name=name, tracking_uri=tracking_uri)
    chall = MlflowClient(tracking_uri).get_model_version_by_alias("fraud", "challenger")
    v2 = register(chall.source, name, alias="challenger", tracking_uri=tracking_uri)
    return fitted, (str(v1.version), str(v2.version))


async def _collect(
    bootstrap: str, topics: dict[str, str], want: set[str], timeout_s: float
) -> dict[str, list[dict[str, Any]]]:
    """Decoded records of `topics` (topic -> contract) until each holds every id of `want`."""
    codecs = {t: Codec.for_contract(c) for t, c in topics.items()}
    got: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
    c = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await c.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(
            want <= {r["event_id"] for r in recs} for recs in got.values()
        ):
            for tp, msgs in (await c.getmany(timeout_ms=250, max_records=5000)).items():
                got[tp.topic].extend(codecs[tp.topic].decode(m.value) for m in msgs)
    finally:
        await c.stop()
    return got


def _frame(recs: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """The feature values each record carries (null -> NaN), in the model's column order."""
    rows = [
        {c: np.nan if r["features"][c] is None else r["features"][c] for c in columns} for r in recs
    ]
    return pd.DataFrame(rows, columns=columns, dtype=np.float64)


def test_sklearn_primary_with_an_xgboost_shadow(bootstrapped, capsys) -> None:  # type: ignore[no-untyped-def]
    from raylane.kafka.admin import ensure_topics
    from raylane.registry import load_model
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.kafka import isolated_args, isolated_topics

    stack = bootstrapped
    unique = uuid.uuid4().hex[:8]
    name = f"fraud_fl_{unique}"
    fitted, (v_sk, v_xgb) = _register_pair(stack.mlflow_tracking_uri, name)
    args = isolated_args(FRAUD, f"fl-{unique}", num_replicas=1)
    args["name"] = f"fl_{unique}"  # its own shadow aggregates and window state
    args["models"]["primary"].update(uri=f"models:/{name}@champion")  # flavor from the model
    args["models"]["shadows"][0].update(uri=f"models:/{name}@challenger", flavor="xgboost")
    ensure_topics(stack.kafka_bootstrap, isolated_topics(args), partitions=4)
    events = [le.event for le in _world().stream(rate=100.0, seed=31).take(N)]
    ids = {e["event_id"] for e in events}
    scored_t, shadow_t = args["outputs"]["scored"]["topic"], args["outputs"]["shadow"]["topic"]

    with run_pipeline(FRAUD, overrides=args) as running:
        running.wait_assigned()
        primary = running.model_info("champion")  # placed as the config says (the ingress)
        shadow = running.model_info("challenger")

        async def produce() -> None:
            codec = Codec.for_contract("payments.initiated")
            async with EventProducer(
                stack.kafka_bootstrap,
                args["input"]["topic"],
                codec,
                key_field=args["input"]["key_field"],
            ) as p:
                await p.send_many(events)

        asyncio.run(produce())
        got = asyncio.run(
            _collect(
                stack.kafka_bootstrap,
                {scored_t: "payments.scored", shadow_t: "fraud.shadow"},
                ids,
                timeout_s=180,
            )
        )

    assert (primary["flavor"], primary["version"], primary["refusals"]) == ("sklearn", v_sk, [])
    assert (shadow["flavor"], shadow["version"], shadow["refusals"]) == ("xgboost", v_xgb, [])

    scored = got[scored_t]
    counts = collections.Counter(r["event_id"] for r in scored)
    with capsys.disabled():
        print(f"\nscored {len(scored)} records for {len(ids)} events; shadow {len(got[shadow_t])}")
    assert set(counts) == ids, f"missing {len(ids - set(counts))}"
    assert all(n == 1 for n in counts.values()), [e for e, n in counts.items() if n > 1]
    assert {(r["model_name"], r["model_version"]) for r in scored} == {(name, v_sk)}
    # the score is the estimator's own probability for the features the record carries
    np.testing.assert_array_equal(
        np.array([r["score"] for r in scored]),
        fitted.predict(_frame(scored, fitted.feature_names)),
    )

    comps = got[shadow_t]
    assert {c["event_id"] for c in comps} == ids
    assert {(c["primary_version"], c["shadow_version"]) for c in comps} == {(v_sk, v_xgb)}
    by_id = {r["event_id"]: r for r in scored}
    assert all(c["primary_score"] == by_id[c["event_id"]]["score"] for c in comps)
    # the shadow score is the XGBoost booster's own, for the same features
    xgb = load_model(f"models:/{name}/{v_xgb}", tracking_uri=stack.mlflow_tracking_uri)
    assert xgb.flavor == "xgboost"
    recs = [by_id[c["event_id"]] for c in comps]
    x = _frame(recs, xgb.feature_names).to_numpy(np.float32)
    np.testing.assert_array_equal(
        np.array([c["shadow_score"] for c in comps]), xgb.predict_matrix(x).astype(np.float64)
    )
