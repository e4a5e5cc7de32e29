"""Promotion, rollback and history against the real MLflow registry, Redis and broker.

Each test registers its own model name, pipeline name and audit topic, so aliases it
moves never touch fraud@champion.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from raylane.config import PipelineConfig
from raylane.errors import ConfigError
from raylane.lifecycle.audit import read_audit_topic
from raylane.lifecycle.gates import DriftStatus
from raylane.lifecycle.promotion import GatesFailed, history, promote, rollback
from raylane.lifecycle.shadow_stats import ShadowStore, batch_entry, entries_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[3]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"


@pytest.fixture(scope="module")
def logged_model(stack) -> str:
    """A tiny XGBoost model logged once; tests register versions of it under their own names."""
    import mlflow
    import mlflow.xgboost
    import pandas as pd
    import xgboost as xgb
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(stack.mlflow_tracking_uri)
    mlflow.set_experiment("it-promotion")
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"amount": rng.uniform(0, 1000, 200)})
    y = (x["amount"] > 500).astype(int)
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, y), num_boost_round=3)
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(booster, name="model", signature=infer_signature(x, y))
    return str(info.model_uri)


def _versions(logged: str, name: str, n: int = 3) -> list[str]:
    from raylane.registry import register

    return [str(register(logged, name).version) for _ in range(n)]


def _args(name: str, unique: str) -> dict[str, Any]:
    args = copy.deepcopy(yaml.safe_load(FRAUD.read_text())["applications"][0]["args"])
    args["name"] = f"promo_{unique}"
    args["models"]["primary"]["uri"] = f"models:/{name}@champion"
    args["models"]["shadows"][0]["uri"] = f"models:/{name}@challenger"
    args["promotion"].update(
        min_samples=200,
        min_agreement=0.9,
        max_p95_abs_delta=0.1,
        max_latency_p99_ratio=2.0,
        audit_topic=f"models.promoted.{unique}",
    )
    return args


def _fill(
    store_url: str,
    pipeline: str,
    pv: str,
    sv: str,
    n_batches: int,
    *,
    delta: float = 0.01,
    sl: float = 3.0,
) -> None:
    """Write shadow aggregates as the ingress does (same entry format, real Redis)."""
    import redis

    r = redis.Redis.from_url(store_url)
    rng = np.random.default_rng(1)
    for _ in range(n_batches):
        p = rng.uniform(0, 0.8, 50)
        recs = [
            {
                "primary_version": pv,
                "shadow_version": sv,
                "primary_model": "m",
                "shadow_model": "m",
                "primary_score": float(a),
                "shadow_score": float(a + delta),
                "primary_decision": "approved",
                "shadow_decision": "approved",
                "agreement": True,
                "primary_latency_ms": 2.0,
                "shadow_latency_ms": sl,
            }
            for a in p
        ]
        r.lpush(entries_key(pipeline, "challenger"), json.dumps(batch_entry(recs, "approved")))


def _aliases(name: str, tracking_uri: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return {
        a: str(v) for a, v in MlflowClient(tracking_uri).get_registered_model(name).aliases.items()
    }


def test_gates_refuse_then_promote_audit_and_roll_back(
    stack, logged_model: str, unique: str
) -> None:
    from raylane.registry import set_alias

    name = f"promo_{unique}"
    v1, v2, _ = _versions(logged_model, name)
    set_alias(name, "champion", v1)
    set_alias(name, "challenger", v2)
    cfg = PipelineConfig.from_args(_args(name, unique))
    store = ShadowStore(stack.redis_url)

    def no_drift(p):
        return None

    # too few samples: refused, nothing moved, nothing published
    _fill(stack.redis_url, cfg.name, v1, v2, 2)
    with pytest.raises(GatesFailed) as ei:
        promote(cfg, store=store, drift_check=no_drift)
    failed = {g.name: g for g in ei.value.gates if not g.passed}
    assert set(failed) == {"min_samples"} and failed["min_samples"].measured == 100
    assert "min_samples" in ei.value.message and "threshold 200" in ei.value.message
    assert _aliases(name, stack.mlflow_tracking_uri) == {"champion": v1, "challenger": v2}

    # enough samples, but an open drift alert (the pluggable check)
    _fill(stack.redis_url, cfg.name, v1, v2, 4)
    with pytest.raises(GatesFailed) as ei:
        promote(
            cfg,
            store=store,
            drift_check=lambda p: DriftStatus(open=True, drift_share=0.7, threshold=0.5),
        )
    assert [g.name for g in ei.value.gates if not g.passed] == ["require_no_drift_alert"]

    out = promote(
        cfg, store=store, drift_check=no_drift, actor="alice@test", reason="beat champion"
    )
    assert all(g.passed for g in out.gates)
    assert _aliases(name, stack.mlflow_tracking_uri) == {
        "champion": v2,
        "challenger": v2,
        "previous": v1,
    }
    assert store.entries(cfg.name, "challenger") == []  # aggregates start afresh for the new pair
    ev = out.event
    assert (ev["action"], ev["from_version"], ev["to_version"], ev["actor"]) == (
        "promote",
        v1,
        v2,
        "alice@test",
    )

    from mlflow import MlflowClient

    mv = MlflowClient(stack.mlflow_tracking_uri).get_model_version(name, v2)
    assert (
        mv.tags["raylane.promoted_by"] == "alice@test"
        and mv.tags["raylane.promote_reason"] == "beat champion"
    )

    rb = rollback(cfg, actor="bob@test", reason="incident 42").event
    assert (rb["action"], rb["from_version"], rb["to_version"]) == ("rollback", v2, v1)
    assert _aliases(name, stack.mlflow_tracking_uri)["champion"] == v1
    assert _aliases(name, stack.mlflow_tracking_uri)["previous"] == v2

    audit = read_audit_topic(cfg, stack.kafka_bootstrap)
    assert [(e["action"], e["to_version"]) for e in audit] == [("promote", v2), ("rollback", v1)]
    assert {g["name"] for g in audit[0]["gates"]} >= {
        "min_samples",
        "min_agreement",
        "require_no_drift_alert",
    }
    hist = history(cfg, bootstrap=stack.kafka_bootstrap)
    assert [(e["action"], e["actor"], e["source"]) for e in hist] == [
        ("promote", "alice@test", "mlflow+kafka"),
        ("rollback", "bob@test", "mlflow+kafka"),
    ]


def test_force_needs_a_reason_and_records_it(stack, logged_model: str, unique: str) -> None:
    from raylane.registry import set_alias

    name = f"promo_{unique}"
    v1, _, v3 = _versions(logged_model, name)
    set_alias(name, "champion", v1)
    cfg = PipelineConfig.from_args(_args(name, unique))
    store = ShadowStore(stack.redis_url)
    with pytest.raises(ConfigError, match="--reason"):
        promote(cfg, version=int(v3), force=True, store=store, drift_check=lambda p: None)
    out = promote(
        cfg,
        version=int(v3),
        force=True,
        reason="hotfix for CVE",
        store=store,
        drift_check=lambda p: None,
    )
    ev = out.event
    assert ev["forced"] and ev["reason"] == "hotfix for CVE" and ev["to_version"] == v3
    assert any(not g["passed"] for g in ev["gates"])  # recorded even though overridden
    assert _aliases(name, stack.mlflow_tracking_uri)["champion"] == v3


def test_cli_prints_the_failed_gate_and_exits_non_zero(
    stack, logged_model: str, unique: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from raylane.cli import app
    from raylane.registry import set_alias

    name = f"promo_{unique}"
    v1, v2, _ = _versions(logged_model, name)
    set_alias(name, "champion", v1)
    set_alias(name, "challenger", v2)
    args = _args(name, unique)
    args["promotion"]["require_no_drift_alert"] = False
    doc = yaml.safe_load(FRAUD.read_text())
    doc["applications"][0]["args"] = args
    path = tmp_path / "promo.yaml"
    path.write_text(yaml.safe_dump(doc))
    pipeline = args["name"]
    _fill(stack.redis_url, pipeline, v1, v2, 5, delta=0.3)  # p95 |Δ| 0.3 > 0.1

    runner = CliRunner()
    res = runner.invoke(app, ["promote", pipeline, "--config", str(path)], terminal_width=200)
    assert res.exit_code == 1, res.output
    assert "max_p95_abs_delta" in res.output and "0.3" in res.output and "0.1" in res.output
    report = runner.invoke(
        app,
        ["shadow", "report", pipeline, "--config", str(path), "--json", str(tmp_path / "r.json")],
        terminal_width=200,
    )
    assert report.exit_code == 0, report.output
    data = json.loads((tmp_path / "r.json").read_text())["shadows"][0]
    assert data["n"] == 250 and data["p95_abs_delta"] == pytest.approx(0.3)
    ok = runner.invoke(
        app,
        ["promote", pipeline, "--config", str(path), "--force", "--reason", "ok by QA"],
        terminal_width=200,
    )
    assert ok.exit_code == 0, ok.output
    hist = runner.invoke(
        app,
        ["history", pipeline, "--config", str(path), "--json", str(tmp_path / "h.json")],
        terminal_width=200,
    )
    assert hist.exit_code == 0, hist.output
    events = json.loads((tmp_path / "h.json").read_text())
    assert [(e["action"], e["forced"], e["reason"]) for e in events] == [
        ("promote", True, "ok by QA")
    ]
    rb = runner.invoke(app, ["rollback", pipeline, "--config", str(path)], terminal_width=200)
    assert rb.exit_code == 0 and _aliases(name, stack.mlflow_tracking_uri)["champion"] == v1


def test_open_drift_alert_from_the_monitor_state_blocks_promote_and_shows_in_the_report(
    stack, logged_model: str, unique: str, tmp_path: Path
) -> None:
    """The state the drift monitor writes (monitoring.drift_state) is what gate and report read."""
    import redis
    from typer.testing import CliRunner

    from raylane.cli import app
    from raylane.monitoring.drift_state import DriftState, drift_key
    from raylane.registry import set_alias

    name = f"promo_{unique}"
    v1, v2, _ = _versions(logged_model, name)
    set_alias(name, "champion", v1)
    set_alias(name, "challenger", v2)
    args = _args(name, unique)
    doc = yaml.safe_load(FRAUD.read_text())
    doc["applications"][0]["args"] = args
    path = tmp_path / "promo.yaml"
    path.write_text(yaml.safe_dump(doc))
    pipeline = args["name"]
    _fill(stack.redis_url, pipeline, v1, v2, 5, delta=0.0)  # every shadow gate passes
    state = DriftState(
        open=True,
        model_name=name,
        model_version=v1,
        drift_share=0.62,
        threshold=0.5,
        drifted_columns=["amount", "score"],
        window_end="2026-11-26T17:00:00+00:00",
        updated_at="2026-11-26T17:00:02+00:00",
    )
    r = redis.Redis.from_url(stack.redis_url)
    r.set(drift_key(pipeline), state.to_json())
    try:
        runner = CliRunner()
        report = runner.invoke(
            app,
            [
                "shadow",
                "report",
                pipeline,
                "--config",
                str(path),
                "--json",
                str(tmp_path / "r.json"),
            ],
            terminal_width=200,
        )
        assert report.exit_code == 0, report.output
        assert "OPEN ALERT" in report.output and "amount, score" in report.output
        assert json.loads((tmp_path / "r.json").read_text())["drift"]["open"] is True
        res = runner.invoke(app, ["promote", pipeline, "--config", str(path)], terminal_width=200)
        assert res.exit_code == 1, res.output
        assert "require_no_drift_alert" in res.output
        assert _aliases(name, stack.mlflow_tracking_uri)["champion"] == v1
        # a clean window closes the alert; the same promote then passes
        r.set(
            drift_key(pipeline), DriftState(open=False, model_name=name, model_version=v1).to_json()
        )
        ok = runner.invoke(app, ["promote", pipeline, "--config", str(path)], terminal_width=200)
        assert ok.exit_code == 0, ok.output
        assert _aliases(name, stack.mlflow_tracking_uri)["champion"] == v2
    finally:
        r.delete(drift_key(pipeline))
        r.close()


def test_only_versions_promote_approved_pass_the_replica_check(
    stack, logged_model: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a promotion key, promote and rollback sign the versions they move aliases to (in
    MLflow); the replica's check (the same one ModelServer runs) refuses a version an alias
    was moved to by hand."""
    from raylane.lifecycle.approval import NotApproved, approval_tag, approver
    from raylane.registry import set_alias, version_tags

    monkeypatch.setenv("RAYLANE_PROMOTION_KEY", "integration-test-key-0123456789")
    name = f"promo_{unique}"
    v1, v2, v3 = _versions(logged_model, name)
    set_alias(name, "champion", v1)
    cfg = PipelineConfig.from_args(_args(name, unique))
    store = ShadowStore(stack.redis_url)
    promote(
        cfg,
        version=int(v2),
        force=True,
        reason="approval test",
        store=store,
        drift_check=lambda p: None,
    )
    approve = approver(name, "champion", lambda v: version_tags(name, v))
    assert approve is not None
    approve(v2)  # promoted: approved
    assert approval_tag("champion") in version_tags(name, v2)
    set_alias(name, "champion", v3)  # moved outside `raylane promote`
    with pytest.raises(NotApproved, match="outside `raylane promote`"):
        approve(v3)
    # v1 became @previous when v2 was promoted; rolling back re-approves it for @champion
    rollback(cfg, reason="approval test")
    assert _aliases(name, stack.mlflow_tracking_uri)["champion"] == v1
    approve(v1)
    with pytest.raises(NotApproved):  # someone else's key signs nothing valid here
        monkeypatch.setenv("RAYLANE_PROMOTION_KEY", "another-key-0123456789abcdef")
        other = approver(name, "champion", lambda v: version_tags(name, v))
        assert other is not None
        other(v1)


def test_approval_records_shadow_set_and_bootstrap_signing(
    stack, logged_model: str, unique: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The registered model records the last approved version per alias (what a starting
    replica falls back to); `raylane shadow set` approves and audits a challenger move, and
    bootstrap's signing approves what the aliases name."""
    from typer.testing import CliRunner

    from raylane.cli import app
    from raylane.lifecycle.approval import NotApproved, approver
    from raylane.lifecycle.promotion import sign_aliases
    from raylane.registry import model_tags, set_alias, version_tags

    name = f"promo_{unique}"
    v1, v2, v3 = _versions(logged_model, name)
    set_alias(name, "champion", v1)
    set_alias(name, "challenger", v2)
    monkeypatch.delenv("RAYLANE_PROMOTION_KEY", raising=False)
    assert sign_aliases(name, ["champion", "challenger"]) == []  # no key: nothing signed
    monkeypatch.setenv("RAYLANE_PROMOTION_KEY", "integration-test-key-0123456789")
    assert sign_aliases(name, ["champion", "challenger", "nope"]) == ["champion", "challenger"]

    def check(alias: str) -> Any:
        a = approver(name, alias, lambda v: version_tags(name, v), lambda: model_tags(name))
        assert a is not None
        return a

    check("champion")(v1)
    check("challenger")(v2)
    assert check("champion").fallback() == v1 and check("challenger").fallback() == v2
    with pytest.raises(NotApproved):
        check("challenger")(v3)

    args = _args(name, unique)
    doc = yaml.safe_load(FRAUD.read_text())
    doc["applications"][0]["args"] = args
    path = tmp_path / "promo.yaml"
    path.write_text(yaml.safe_dump(doc))
    res = CliRunner().invoke(
        app,
        ["shadow", "set", args["name"], v3, "--config", str(path), "--reason", "try v3"],
        terminal_width=200,
    )
    assert res.exit_code == 0, res.output
    assert _aliases(name, stack.mlflow_tracking_uri)["challenger"] == v3
    check("challenger")(v3)
    assert check("challenger").fallback() == v3
    assert check("champion").fallback() == v1  # other aliases' records untouched
    hist = history(PipelineConfig.from_args(args), bootstrap=stack.kafka_bootstrap)
    events = [e for e in hist if e["alias"] == "challenger"]
    assert [(e["action"], e["from_version"], e["to_version"], e["reason"]) for e in events] == [
        ("shadow", v2, v3, "try v3")
    ]
