"""The Ray Serve deployments: a model server per model, and the Kafka ingress.

This is the Ray seam: every `ray` / `serve` call of the data path lives in this
package. The logic they host (loading models, the ingress loop) is plain Python
elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from raylane.config import ModelConfig
from raylane.errors import DependencyError
from raylane.pipeline.processor import Prediction
from raylane.serving._host import LoopHost, route_logs_to_serve
from raylane.serving._loopback import bind_serve_grpc_to_loopback
from raylane.serving.hosted import HostedModel, score_merged

if TYPE_CHECKING:
    from raylane.lifecycle.approval import Approver

__all__ = ["KafkaIngress", "ModelServer", "ServeModelClient"]

log = logging.getLogger("raylane.serving")


@serve.deployment
class ModelServer:
    """Hosts one registered model; one call scores a whole batch.

    For an alias URI a background task polls the registry and hot-swaps the version
    without a restart (:class:`~raylane.serving.hosted.HostedModel`). With
    ``batching`` set, concurrent batch calls are merged into one model call.
    `columns` are the columns the pipeline produces: a version (the first, or one the
    alias moves to) that needs another column is refused; `config` names the serve
    config to fix in that message.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        env: dict[str, str],
        deployment: str = "",
        columns: Sequence[str] | None = None,
        config: str = "",
        verify_approval: bool = False,
    ) -> None:
        os.environ.update(env)
        bind_serve_grpc_to_loopback()
        route_logs_to_serve()
        os.environ.setdefault(
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
        )  # no bars in replica logs
        from raylane.registry import (  # heavy import (mlflow), inside the replica only
            load_model,
            resolve,
        )

        self.cfg = ModelConfig.model_validate(spec)
        self.deployment = deployment or self.cfg.name
        self.device = "cuda" if self.cfg.ray_actor_options.num_gpus > 0 else "cpu"
        produced = None if columns is None else list(columns)
        approve = self._approval(verify_approval)
        self.hosted = HostedModel(
            self.cfg,
            load=lambda uri: load_model(
                uri,
                device=self.device,
                flavor=self.cfg.flavor,
                required_columns=produced,
                config=config,
            ),
            resolve_version=lambda uri: str(resolve(uri).version),
            approve=approve,
            fallback=None if approve is None else approve.fallback,
        )
        log.warning(
            "model %s loaded: %s version %s (%s) on %s",
            self.cfg.name,
            self.hosted.model.name,
            self.hosted.version,
            getattr(self.hosted.model, "flavor", "?"),
            self.device,
        )
        b = self.cfg.batching
        if b is not None:
            self._batched.set_max_batch_size(b.max_batch_size)  # type: ignore[attr-defined]
            self._batched.set_batch_wait_timeout_s(b.batch_wait_timeout_s)  # type: ignore[attr-defined]
        self._seen = (0, 0)  # cache hits / misses already counted in the metric
        self._metrics_port: int | None = None
        from raylane.monitoring.metrics import (  # not a global: Serve pickles the class
            METRICS,
            serve_metrics,
        )

        self._metrics = METRICS
        if self.hosted.refusals:  # started on the last approved version, not the alias's
            self._metrics.model_swaps_refused.labels(deployment=self.deployment).inc(
                len(self.hosted.refusals)
            )
        try:
            from raylane.settings import Settings

            self._metrics_port = serve_metrics(Settings.load().home, self.deployment)
        except OSError:
            log.warning("model %s: no metrics endpoint", self.cfg.name, exc_info=True)
        self._poller = (
            asyncio.get_running_loop().create_task(self._poll())
            if self.hosted.watches_alias
            else None
        )

    def _approval(self, wanted: bool) -> Approver | None:
        """The checks of the versions the alias names (with a promotion key)."""
        from raylane.lifecycle.approval import ENV_KEY, approver
        from raylane.registry import model_tags, version_tags

        alias = self.cfg.alias
        if not wanted or alias is None:
            return None
        name = self.cfg.registered_name
        approve = approver(name, alias, lambda v: version_tags(name, v), lambda: model_tags(name))
        if approve is None:
            log.warning(
                "model %s: %s is not set, so moves of %s@%s are served unverified",
                self.cfg.name,
                ENV_KEY,
                self.cfg.registered_name,
                alias,
            )
        return approve

    async def _poll(self) -> None:
        """Check the alias every reload_poll_s; load a moved alias off the event loop."""
        while True:
            await asyncio.sleep(self.cfg.reload_poll_s)
            refused = len(self.hosted.refusals)
            try:  # resolve + download + load off the event loop; the old version keeps scoring
                got = await asyncio.to_thread(self.hosted.fetch)
            except Exception as e:
                self.hosted.poll_errors += 1
                log.warning(
                    "model %s: registry check failed (%s); keeps v%s",
                    self.cfg.name,
                    e,
                    self.hosted.version,
                )
                continue
            if len(self.hosted.refusals) > refused:
                self._metrics.model_swaps_refused.labels(deployment=self.deployment).inc()
            if got is not None:
                self.hosted.swap(*got)  # on the event loop, where batches are scored
                self._metrics.model_swaps.labels(deployment=self.deployment).inc()

    def _score(self, columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        out = self.hosted.score(columns)
        cache = self.hosted.cache
        if cache is not None:
            st = cache.stats
            self._metrics.cache_requests.labels(deployment=self.deployment, result="hit").inc(
                st.hits - self._seen[0]
            )
            self._metrics.cache_requests.labels(deployment=self.deployment, result="miss").inc(
                st.misses - self._seen[1]
            )
            self._seen = (st.hits, st.misses)
            self._metrics.cache_hit_rate.labels(deployment=self.deployment).set(st.hit_rate)
        return out

    async def predict(self, columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        if self.cfg.batching is None:
            return self._score(columns)
        result: dict[str, Any] = await self._batched(columns)
        return result

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.0)
    async def _batched(self, calls: list[Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
        return score_merged(self._score, calls)

    def info(self) -> dict[str, Any]:
        import ray

        ctx = serve.get_replica_context()
        m = self.hosted.model
        cache = self.hosted.cache
        return {
            "label": self.cfg.name,
            "name": m.name,
            "version": self.hosted.version,
            "features": list(m.feature_names),
            "device": getattr(m, "device", self.device),
            "replica": ctx.replica_id.unique_id,
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "swaps": [asdict(s) for s in self.hosted.swaps],
            "poll_errors": self.hosted.poll_errors,
            "refusals": [asdict(r) for r in self.hosted.refusals],
            "flavor": getattr(m, "flavor", None),
            "cache": None
            if cache is None
            else {**asdict(cache.stats), "hit_rate": cache.stats.hit_rate, "size": len(cache)},
        }


class ServeModelClient:
    """A :class:`~raylane.pipeline.processor.ModelClient` over a Serve deployment handle."""

    def __init__(self, name: str, handle: DeploymentHandle[Any], timeout_s: float) -> None:
        self.name = name
        self.handle = handle
        self.timeout_s = timeout_s

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        t0 = time.perf_counter()
        try:
            out = await asyncio.wait_for(self.handle.predict.remote(columns), self.timeout_s)
        except TimeoutError as e:
            raise DependencyError(
                f"model {self.name} timed out after {self.timeout_s:g} s", stage="score"
            ) from e
        except Exception as e:
            raise DependencyError(
                f"model {self.name} failed: {type(e).__name__}: {e}", stage="score"
            ) from e
        return Prediction(
            scores=np.asarray(out["scores"]),
            model_name=out["model_name"],
            model_version=out["model_version"],
            latency_ms=(time.perf_counter() - t0) * 1000.0,
        )


@serve.deployment
class KafkaIngress(LoopHost):
    """A consumer-group member: runs the ingress loop for the replica's lifetime."""

    kind = "ingress"
    close_timeout_s = 15.0

    def __init__(
        self,
        args: dict[str, Any],
        env: dict[str, str],
        primary: DeploymentHandle[Any],
        shadows: Sequence[DeploymentHandle[Any]],
        monitors: Sequence[DeploymentHandle[Any]] = (),  # bound only to deploy with the app
    ) -> None:
        self._handles = (primary, list(shadows))
        super().__init__(args, env)

    async def _build(self) -> Any:
        from raylane.ingest import build_ingress  # keeps the replica's import graph lazy

        primary, shadows = self._handles
        models = self.cfg.models
        return await build_ingress(
            self.cfg,
            ServeModelClient(models.primary.name, primary, models.primary.timeout_s),
            [
                ServeModelClient(m.name, h, m.timeout_s)
                for m, h in zip(models.shadows, shadows, strict=True)
            ],
        )
