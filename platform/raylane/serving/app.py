"""The application builder named by every serve config's ``import_path``.

``serve run serve_configs/<pipeline>.yaml`` calls :func:`build_app` with the
application's ``args``; it validates them (errors name the YAML path) and binds
one model deployment per model (given the columns the pipeline produces, so a model
needing another one is refused; a model with ``placement: ingress`` is hosted by the
ingress replica instead) plus the Kafka ingress. Connection settings come
from the environment and are handed to every replica, so the same config runs
locally and on a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application

from raylane.config import ModelConfig, PipelineConfig
from raylane.serving._deployments import KafkaIngress, ModelServer
from raylane.serving._monitors import monitor_apps
from raylane.settings import Settings

__all__ = ["build_app", "deployment_names", "model_options"]


def _actor_options(opts: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"num_cpus": opts.num_cpus}
    if opts.num_gpus:
        out["num_gpus"] = opts.num_gpus
    if opts.resources:
        out["resources"] = dict(opts.resources)
    return out


def deployment_names(cfg: PipelineConfig) -> dict[str, str]:
    """Deployment name per role: ``ingress`` and each model's label. A model placed in the
    ingress keeps its name as the ``deployment`` label of its metrics, with no deployment."""
    names = {
        "ingress": f"{cfg.name}-ingress",
        cfg.models.primary.name: f"{cfg.name}-model-{cfg.models.primary.name}",
    }
    for s in cfg.models.shadows:
        names[s.name] = f"{cfg.name}-model-{s.name}"
    return names


def model_options(m: ModelConfig) -> dict[str, Any]:
    """Serve deployment options of one model: fixed replicas or autoscaling, resources."""
    opts: dict[str, Any] = {
        "ray_actor_options": _actor_options(m.ray_actor_options),
        "max_ongoing_requests": m.max_ongoing_requests,
    }
    if m.autoscaling_config is not None:
        opts["autoscaling_config"] = m.autoscaling_config.to_serve()
    else:
        opts["num_replicas"] = m.num_replicas
    return opts


def _model(cfg: PipelineConfig, m: ModelConfig, env: dict[str, str]) -> Application | None:
    """One model deployment; it refuses a version needing a column the pipeline lacks.
    None for a model with ``placement: ingress`` (scored inside the ingress replica)."""
    if m.placement == "ingress":
        return None
    name = deployment_names(cfg)[m.name]
    return ModelServer.options(  # type: ignore[attr-defined,no-any-return]
        name=name, **model_options(m)
    ).bind(
        m.model_dump(mode="json"),
        env,
        name,
        columns=cfg.features.columns(),
        config=f"the serve config of pipeline {cfg.name} (serve_configs/{cfg.name}.yaml)",
        # with a promotion key, every model serves only versions raylane approved: the
        # primary's by `raylane promote`, a shadow's by `raylane shadow set` (a shadow loads
        # code too: a pyfunc or pickled model runs when it loads)
        verify_approval=True,
    )


def build_app(args: dict[str, Any]) -> Application:
    """Ray Serve application builder: validate the pipeline, bind its deployments."""
    cfg = PipelineConfig.from_args(args)
    # Paths in the config are relative to where `serve run` was started; pin them now.
    repo = Path(cfg.features.feast_repo)
    if not repo.is_absolute():
        args = {**args, "features": {**args.get("features", {}), "feast_repo": str(repo.resolve())}}
    cfg = PipelineConfig.from_args(args)
    env = Settings.load().replica_env()  # no secrets in init args: replicas read their own
    # a model placed in the ingress has no deployment: the ingress replica hosts it
    primary = _model(cfg, cfg.models.primary, env)
    shadows = [_model(cfg, s, env) for s in cfg.models.shadows]
    return KafkaIngress.options(  # type: ignore[attr-defined,no-any-return]
        name=deployment_names(cfg)["ingress"],
        num_replicas=cfg.ingress.num_replicas,
        ray_actor_options=_actor_options(cfg.ingress.ray_actor_options),
        health_check_period_s=2,
        graceful_shutdown_timeout_s=20,
    ).bind(
        cfg.model_dump(mode="json"),
        env,
        primary,
        shadows,
        monitors=monitor_apps(cfg, env, _actor_options),
    )  # drift monitor, action runner
