"""Serve deployments of the loops beside the ingress: drift monitor, action runner, archiver.

Each is a one-replica deployment bound into the pipeline's app by
:func:`raylane.serving.app.build_app` when the config has a ``drift`` / ``actions`` /
``archive`` section (and it is enabled), so ``serve run serve_configs/<pipeline>.yaml``
starts them from the same config. Like :class:`~raylane.serving._deployments.KafkaIngress`
they only host a plain asyncio loop (:class:`~raylane.monitoring.drift_monitor.DriftLoop`,
:class:`~raylane.actions.ActionRunner`, :class:`~raylane.sinks.archive_loop.ArchiveLoop`);
a dead loop makes the replica unhealthy and Serve replaces it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ray import serve
from ray.serve import Application

from raylane.config import ActorOptions, PipelineConfig
from raylane.serving._host import LoopHost

__all__ = [
    "ActionRunnerDeployment",
    "ArchiverDeployment",
    "DriftMonitorDeployment",
    "monitor_apps",
]

log = logging.getLogger("raylane.serving")


@serve.deployment
class DriftMonitorDeployment(LoopHost):
    """The pipeline's drift monitor (one consumer of the scored topic in its own group)."""

    kind = "drift"

    def __init__(self, args: dict[str, Any], env: dict[str, str]) -> None:
        # sets env and cfg and schedules the loop task, which first runs when this
        # constructor returns: self._monitor is set by then
        super().__init__(args, env)
        from raylane.monitoring.drift_monitor import DriftMonitor, mlflow_reference, report_dir_for
        from raylane.registry import resolve
        from raylane.settings import Settings

        s, cfg = Settings.load(), self.cfg
        self._monitor = DriftMonitor(
            cfg, mlflow_reference(s.mlflow_tracking_uri), report_dir=report_dir_for(cfg, s.home)
        )
        # Before the replica reports ready: the first window's imports and reference load
        # are paid at deploy time, not beside the scoring path under traffic.
        t0 = time.perf_counter()
        try:
            ref = resolve(cfg.models.primary.uri, tracking_uri=s.mlflow_tracking_uri)
            self._monitor.warm(ref.name, str(ref.version))
            log.info(
                "drift monitor of %s warmed on %s in %.1f s",
                cfg.name,
                ref.uri_pinned,
                time.perf_counter() - t0,
            )
        except Exception as e:
            log.warning(
                "drift monitor of %s could not warm up (%s: %s); the first window will "
                "load the reference",
                cfg.name,
                type(e).__name__,
                e,
            )

    async def _build(self) -> Any:
        from raylane.monitoring.drift_monitor import DriftLoop
        from raylane.redis_clients import connect
        from raylane.settings import Settings

        s = Settings.load()
        return DriftLoop(
            self.cfg,
            bootstrap=s.kafka_bootstrap,
            redis=connect(s.redis_url),
            monitor=self._monitor,
        )


@serve.deployment
class ActionRunnerDeployment(LoopHost):
    """The pipeline's action runner (its action topics, in its own group)."""

    kind = "actions"

    async def _build(self) -> Any:
        from raylane.actions import build_runner

        return await asyncio.to_thread(build_runner, self.cfg)  # Feast loads its registry: seconds


@serve.deployment
class ArchiverDeployment(LoopHost):
    """The pipeline's event archiver (its archive topics, in its own group, to Parquet)."""

    kind = "archive"
    #: A replica being stopped writes and commits its pending records first.
    close_timeout_s = 30.0

    async def _build(self) -> Any:
        from raylane.sinks.archive_loop import build_archiver

        return build_archiver(self.cfg)


def monitor_apps(
    cfg: PipelineConfig,
    env: dict[str, str],
    actor_options: Callable[[ActorOptions], dict[str, Any]],
) -> list[Application]:
    """The drift monitor, action runner and archiver deployments the config asks for
    (maybe none)."""
    apps: list[Application] = []
    args = cfg.model_dump(mode="json")
    if cfg.drift is not None and cfg.drift.enabled:
        apps.append(
            DriftMonitorDeployment.options(  # type: ignore[attr-defined]
                name=f"{cfg.name}-drift",
                num_replicas=1,
                health_check_period_s=5,
                ray_actor_options=actor_options(cfg.drift.ray_actor_options),
                graceful_shutdown_timeout_s=15,
            ).bind(args, env)
        )
    if cfg.actions is not None and cfg.actions.enabled and cfg.actions.topics:
        apps.append(
            ActionRunnerDeployment.options(  # type: ignore[attr-defined]
                name=f"{cfg.name}-actions",
                num_replicas=1,
                health_check_period_s=5,
                ray_actor_options=actor_options(cfg.actions.ray_actor_options),
                graceful_shutdown_timeout_s=15,
            ).bind(args, env)
        )
    if cfg.archive is not None and cfg.archive.enabled:
        apps.append(
            ArchiverDeployment.options(  # type: ignore[attr-defined]
                name=f"{cfg.name}-archive",
                num_replicas=1,
                health_check_period_s=5,
                ray_actor_options=actor_options(cfg.archive.ray_actor_options),
                graceful_shutdown_timeout_s=40,
            ).bind(args, env)
        )
    return apps
