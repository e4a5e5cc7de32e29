"""Model lifecycle config: autoscaling, batching, cache, shadow sampling, promotion gates."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from raylane.config import PipelineConfig
from raylane.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"


def _args() -> dict:
    return copy.deepcopy(yaml.safe_load(FRAUD.read_text())["applications"][0]["args"])


def _error(args: dict) -> str:
    with pytest.raises(ConfigError) as ei:
        PipelineConfig.from_args(args)
    return str(ei.value)


def test_shipped_config_has_promotion_gates_and_labels() -> None:
    cfg = PipelineConfig.from_args(_args())
    assert cfg.promotion.min_samples == 1000 and cfg.promotion.require_no_drift_alert
    assert cfg.gating_shadow() is not None and cfg.gating_shadow().name == "challenger"  # type: ignore[union-attr]
    assert cfg.models.primary.alias == "champion"


def test_autoscaling_bounds_name_path_and_values() -> None:
    a = _args()
    a["models"]["primary"]["placement"] = "deployment"  # the fraud config's is ingress
    a["models"]["primary"]["autoscaling_config"] = {"min_replicas": 3, "max_replicas": 2}
    msg = _error(a)
    assert "args.models.primary.autoscaling_config" in msg
    assert "max_replicas (2) must be >= min_replicas (3)" in msg


def test_initial_replicas_must_lie_within_bounds() -> None:
    a = _args()
    a["models"]["shadows"][0]["autoscaling_config"] = {
        "min_replicas": 1,
        "max_replicas": 2,
        "initial_replicas": 5,
    }
    msg = _error(a)
    assert "args.models.shadows[0].autoscaling_config" in msg and "initial_replicas (5)" in msg


def test_autoscaling_maps_to_serve_options() -> None:
    pytest.importorskip("ray")
    from raylane.serving.app import model_options

    a = _args()
    a["models"]["primary"]["placement"] = "deployment"  # the fraud config's is ingress
    a["models"]["primary"]["autoscaling_config"] = {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 1,
        "downscale_delay_s": 2,
    }
    a["models"]["primary"]["ray_actor_options"] = {
        "num_cpus": 0.5,
        "num_gpus": 1,
        "resources": {"gpu_node": 1},
    }
    cfg = PipelineConfig.from_args(a)
    opts = model_options(cfg.models.primary)
    assert "num_replicas" not in opts
    auto = opts["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == (
        1,
        3,
        1.0,
    )
    assert (auto["upscale_delay_s"], auto["downscale_delay_s"]) == (1.0, 2.0)
    assert "initial_replicas" not in auto  # unset: Serve starts at min_replicas
    assert opts["ray_actor_options"] == {
        "num_cpus": 0.5,
        "num_gpus": 1.0,
        "resources": {"gpu_node": 1.0},
    }
    fixed = model_options(cfg.models.shadows[0])
    assert fixed["num_replicas"] == 1 and "autoscaling_config" not in fixed


def test_sample_fraction_bounds_and_primary_scores_everything() -> None:
    a = _args()
    a["models"]["shadows"][0]["sample_fraction"] = 1.5
    assert "args.models.shadows[0].sample_fraction" in _error(a)
    a = _args()
    a["models"]["shadows"][0]["sample_fraction"] = 0
    assert "args.models.shadows[0].sample_fraction" in _error(a)
    a = _args()
    a["models"]["primary"]["sample_fraction"] = 0.5
    assert "the primary scores every event" in _error(a)


def test_cache_needs_a_ttl_and_a_bound() -> None:
    a = _args()
    a["models"]["primary"]["cache"] = {"max_entries": 10}
    assert "args.models.primary.cache.ttl_s: required key is missing" in _error(a)
    a = _args()
    a["models"]["primary"]["cache"] = {"ttl_s": 30, "max_entries": 0}
    assert "args.models.primary.cache.max_entries" in _error(a)


def test_promotion_gates_are_checked() -> None:
    a = _args()
    a["promotion"]["min_agreement"] = 1.2
    assert "args.promotion.min_agreement" in _error(a)
    a = _args()
    a["promotion"]["shadow"] = "nope"
    msg = _error(a)
    assert "promotion.shadow is 'nope'" in msg and "challenger" in msg
    a = _args()
    a["promotion"]["gates"] = {}
    assert "args.promotion.gates: unknown key" in _error(a)


def test_batching_limits() -> None:
    a = _args()
    a["models"]["primary"].update(placement="deployment", batching={"max_batch_size": 0})
    assert "args.models.primary.batching.max_batch_size" in _error(a)
    a = _args()
    a["models"]["primary"]["placement"] = "deployment"  # batching merges calls to a deployment
    a["models"]["primary"]["batching"] = {"max_batch_size": 8, "batch_wait_timeout_s": 0.002}
    assert PipelineConfig.from_args(a).models.primary.batching.max_batch_size == 8  # type: ignore[union-attr]


def test_the_docs_example_is_a_valid_config() -> None:
    import re

    text = (ROOT / "docs" / "lifecycle.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert block is not None
    doc = yaml.safe_load(block.group(1))
    a = _args()
    a["models"] = doc["models"]
    a["promotion"] = doc["promotion"]
    cfg = PipelineConfig.from_args(a)
    assert cfg.models.primary.autoscaling_config is not None
    assert (
        cfg.models.shadows[0].sample_fraction == 0.25 and cfg.promotion.max_latency_p99_ratio == 1.5
    )
