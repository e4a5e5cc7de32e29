"""docs/your-own-use-case.md, followed literally for a scaffolded use case.

`raylane init tutorial --flavor sklearn` in an empty project, `raylane bootstrap -f
serve_configs/tutorial.yaml`, the Serve app of that config (as `serve run` runs it, with
this test's own topics), then the scaffold's producer snippet: every valid event comes out
scored exactly once, by the scikit-learn primary with the XGBoost shadow compared, with the
categorical feature encoded, the custom event-time field and entity key honoured, and the
malformed records on the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from raylane.testing.kafka import collect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

NAME = "tutorial"


def _cli(*argv: str) -> str:
    from raylane.cli import app

    res = CliRunner().invoke(app, list(argv))
    assert res.exit_code == 0, f"raylane {' '.join(argv)}:\n{res.output}\n{res.exception!r}"
    return res.output


def test_the_tutorial_scores_a_scaffolded_use_case(
    stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from raylane.config import load_serve_config
    from raylane.contracts import Codec, open_registry
    from raylane.kafka.admin import ensure_topics
    from raylane.loading import import_file
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.kafka import isolated_args, isolated_topics

    # a project of its own, using the running stack (its state folder, as `raylane dev up`
    # in the project would have made it: addresses, the broker's producer settings)
    monkeypatch.setenv("RAYLANE_HOME", str(stack.home))
    monkeypatch.chdir(tmp_path)
    timings: dict[str, float] = {}

    t = time.monotonic()
    _cli("init", NAME, "--flavor", "sklearn")
    timings["init"] = time.monotonic() - t
    config = Path("serve_configs") / f"{NAME}.yaml"
    _, cfg = load_serve_config(config)
    assert cfg.input.key_field == "account_id" and cfg.input.event_time.field == "occurred_at"
    assert cfg.models.primary.flavor == "sklearn" and cfg.models.shadows[0].flavor == "xgboost"
    assert [c.field for c in cfg.features.categorical] == ["channel"]
    _cli("schema", "check")

    t = time.monotonic()
    _cli("bootstrap", "-f", str(config))
    timings["bootstrap"] = time.monotonic() - t

    suffix = f"tut-{uuid.uuid4().hex[:6]}"
    args = isolated_args(config, suffix)
    ensure_topics(stack.kafka_bootstrap, isolated_topics(args), partitions=2)
    produce = import_file(Path("models") / NAME / "produce.py", f"_tut_produce_{suffix}").produce
    t = time.monotonic()
    with run_pipeline(config, overrides=args) as running:
        running.wait_assigned()
        timings["serve"] = time.monotonic() - t
        t = time.monotonic()
        sent = asyncio.run(produce(200, bad=3, topic=args["input"]["topic"]))
        scored_t, dlq_t = args["outputs"]["scored"]["topic"], args["input"]["topic"] + ".dlq"
        shadow_t = args["outputs"]["shadow"]["topic"]
        registry = open_registry(cfg.schema_registry)
        out = Codec.for_contract(cfg.outputs.scored.contract, registry)

        def done(got: dict[str, list[Any]]) -> bool:
            ids = {out.decode(m.value)["event_id"] for m in got[scored_t]}
            # the shadow runs after the batch is committed, off the critical path
            return len(got[dlq_t]) >= 3 and ids >= set(sent) and bool(got[shadow_t])

        got = asyncio.run(
            collect(stack.kafka_bootstrap, [scored_t, dlq_t, shadow_t], done, timeout_s=120)
        )
        timings["scored"] = time.monotonic() - t
    scored = [out.decode(m.value) for m in got[scored_t]]
    with capsys.disabled():
        print(
            f"\ntutorial: scored={len(scored)} dlq={len(got[dlq_t])} "
            f"shadow={len(got[shadow_t])} " + " ".join(f"{k}={v:.1f}s" for k, v in timings.items())
        )
    # every valid event scored exactly once, the malformed ones on the DLQ
    assert sorted(r["event_id"] for r in scored) == sorted(sent)
    assert sorted(m.value for m in got[dlq_t]) == [b"\x07not-an-event"] * 3
    # keyed by the custom entity, stamped from the custom event-time field
    assert all(m.key == out.decode(m.value)["account_id"].encode() for m in got[scored_t])
    assert all(r["event_time"] > 0 and r["scored_at"] >= r["event_time"] for r in scored)
    # the scikit-learn primary scored; the categorical channel reached it one-hot encoded
    assert {r["model_name"] for r in scored} == {NAME}
    assert all(0.0 <= r["score"] <= 1.0 for r in scored)
    for r in scored:
        hot = {c: r["features"][f"channel__{c}"] for c in ("web", "mobile", "store")}
        assert hot[r["channel"]] == 1.0 and sum(hot.values()) == 1.0
        assert r["features"]["channel__unknown"] == 0.0
    # the XGBoost shadow compared events with the primary, stamped with their event time
    shadow = Codec.for_contract(cfg.outputs.shadow.contract, registry)
    comparisons = [shadow.decode(m.value) for m in got[shadow_t]]
    assert comparisons, "the XGBoost shadow compared no event"
    by_id = {r["event_id"]: r for r in scored}
    for c in comparisons:
        assert c["shadow_model"] == NAME and c["event_id"] in by_id
        assert c["shadow_version"] != c["primary_version"]  # the challenger, not the champion
        assert c["primary_score"] == by_id[c["event_id"]]["score"]
        assert c["event_time"] == by_id[c["event_id"]]["event_time"]
