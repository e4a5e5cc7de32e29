"""Config validation: every error names the YAML path, the bad value and the fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from raylane.config import PipelineConfig, load_serve_config
from raylane.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"


def _args() -> dict:
    return copy.deepcopy(yaml.safe_load(FRAUD.read_text())["applications"][0]["args"])


def _error(args: dict) -> str:
    with pytest.raises(ConfigError) as ei:
        PipelineConfig.from_args(args)
    return str(ei.value)


def test_shipped_fraud_config_is_valid() -> None:
    doc, cfg = load_serve_config(FRAUD)
    assert doc["applications"][0]["import_path"] == "raylane.serving.app:build_app"
    assert cfg.input.dlq == "payments.initiated.dlq"
    assert "user_txn_count_60s" in cfg.features.columns()
    assert cfg.models.primary.registered_name == "fraud"


def test_unknown_key_names_its_path() -> None:
    a = _args()
    a["ingress"]["max_batch"] = 10
    msg = _error(a)
    assert "args.ingress.max_batch: unknown key" in msg


def test_bad_model_uri_names_path_and_value() -> None:
    a = _args()
    a["models"]["shadows"][0]["uri"] = "mlflow:/fraud"
    msg = _error(a)
    assert "args.models.shadows[0].uri" in msg and "'mlflow:/fraud'" in msg


def test_rule_on_unknown_column_lists_known_columns() -> None:
    a = _args()
    a["decision"]["rules"][0]["when"] = "scor > 0.85"
    msg = _error(a)
    assert "'scor'" in msg and "user_txn_count_60s" in msg


def test_rule_syntax_error_says_how_to_write_it() -> None:
    a = _args()
    a["decision"]["rules"][0]["when"] = "score >> 0.85"
    msg = _error(a)
    assert "args.decision.rules[0].when" in msg and "<column> <op> <number>" in msg


def test_missing_required_section() -> None:
    a = _args()
    del a["outputs"]
    assert "args.outputs: required key is missing" in _error(a)


def test_sum_window_without_value_field() -> None:
    a = _args()
    a["features"]["windows"][1].pop("value_field")
    msg = _error(a)
    assert "args.features.windows[1]" in msg and "value_field" in msg


def test_shadows_need_a_shadow_output() -> None:
    a = _args()
    del a["outputs"]["shadow"]
    assert "outputs.shadow" in _error(a)


def test_negative_batch_size_rejected() -> None:
    a = _args()
    a["ingress"]["max_batch_size"] = 0
    assert "args.ingress.max_batch_size" in _error(a)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    doc = yaml.safe_load(FRAUD.read_text())
    doc["applications"][0]["args"]["ingress"]["num_replicas"] = -1
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as ei:
        load_serve_config(p)
    assert str(p) in str(ei.value) and "applications[0].args.ingress.num_replicas" in str(ei.value)
    with pytest.raises(ConfigError, match="no such file"):
        load_serve_config(tmp_path / "missing.yaml")


def test_fraud_archives_its_topics_and_names_its_labels() -> None:
    _, cfg = load_serve_config(FRAUD)
    assert cfg.labels is not None
    assert (cfg.labels.topic, cfg.labels.contract) == ("payments.labels", "payments.labels")
    assert cfg.archive is not None and cfg.archive.enabled
    assert {t.topic: t.contract for t in cfg.archive.topics} == {
        "payments.initiated": "payments.initiated",
        "payments.scored": "payments.scored",
        "fraud.shadow": "fraud.shadow",
        "model.drift": "model.drift",
        "payments.labels": "payments.labels",
    }
    assert cfg.archive.path is None and cfg.archive.group_id is None


def test_archive_defaults_and_topic_shorthand() -> None:
    a = _args()
    a["archive"] = {"topics": ["raw.events", {"topic": "payments.scored", "contract": "x"}]}
    a["labels"] = {}
    cfg = PipelineConfig.from_args(a)
    assert cfg.archive is not None and cfg.labels is not None
    assert [(t.topic, t.contract) for t in cfg.archive.topics] == [
        ("raw.events", None),
        ("payments.scored", "x"),
    ]
    assert cfg.archive.max_file_records == 50_000
    assert cfg.archive.max_file_bytes == 64 * 1024 * 1024
    assert cfg.archive.flush_interval_s == 10.0
    assert cfg.labels.topic == "payments.labels"
    a.pop("archive")
    a.pop("labels")
    bare = PipelineConfig.from_args(a)
    assert bare.archive is None and bare.labels is None


def test_archive_errors_name_their_path() -> None:
    a = _args()
    a["archive"] = {"topics": ["t1", "t1"]}
    assert "['t1'] more than once" in _error(a)
    a["archive"] = {"topics": []}
    assert "args.archive.topics" in _error(a)
    a["archive"] = {"topics": ["t1"], "storage_options_env": "not a name"}
    assert "args.archive.storage_options_env" in _error(a)
    a["archive"] = {"topics": ["t1"], "max_file_records": 0}
    assert "args.archive.max_file_records" in _error(a)


def test_model_placement_defaults_to_a_deployment_and_ingress_refuses_deployment_options() -> None:
    a = _args()
    # the shipped fraud config places its models in the ingress; the schema's default is a
    # deployment of their own
    assert a["models"]["primary"].pop("placement") == "ingress"
    assert a["models"]["shadows"][0].pop("placement") == "ingress"
    cfg = PipelineConfig.from_args(a)
    assert cfg.models.primary.placement == "deployment"
    a["models"]["primary"]["placement"] = "ingress"
    a["models"]["shadows"][0]["placement"] = "ingress"
    cfg = PipelineConfig.from_args(a)
    assert [m.placement for m in (cfg.models.primary, *cfg.models.shadows)] == ["ingress"] * 2
    for key, value, named in [
        ("ray_actor_options", {"num_gpus": 1}, "num_gpus"),
        ("autoscaling_config", {"min_replicas": 1, "max_replicas": 3}, "autoscaling_config"),
        ("num_replicas", 2, "num_replicas"),
        ("batching", {"max_batch_size": 8}, "batching"),
    ]:
        bad = _args()
        bad["models"]["primary"].update(placement="ingress", **{key: value})
        msg = _error(bad)
        assert "args.models.primary" in msg and named in msg, msg
        assert "placement: deployment" in msg, msg  # the fix
    bad = _args()
    bad["models"]["primary"]["placement"] = "inline"
    msg = _error(bad)
    assert "args.models.primary.placement" in msg and "'inline'" in msg, msg
