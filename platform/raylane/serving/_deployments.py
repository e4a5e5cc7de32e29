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
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from raylane.config import ModelConfig, PipelineConfig
from raylane.errors import DependencyError
from raylane.pipeline.processor import Prediction
from raylane.serving._host import LoopHost, route_logs_to_serve
from raylane.serving._loopback import bind_serve_grpc_to_loopback
from raylane.serving.hosted import prediction_of, score_merged

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
        from raylane.serving.model_host import ModelHost  # heavy imports: in the replica

        self.cfg = ModelConfig.model_validate(spec)
        self.host = ModelHost(
            self.cfg,
            deployment or self.cfg.name,
            columns=columns,
            config=config,
            verify_approval=verify_approval,
        )
        self.deployment = self.host.deployment
        b = self.cfg.batching
        if b is not None:
            self._batched.set_max_batch_size(b.max_batch_size)  # type: ignore[attr-defined]
            self._batched.set_batch_wait_timeout_s(b.batch_wait_timeout_s)  # type: ignore[attr-defined]
        self._metrics_port: int | None = None
        try:
            from raylane.monitoring.metrics import serve_metrics  # not a global: Serve pickles
            from raylane.settings import Settings

            self._metrics_port = serve_metrics(Settings.load().home, self.deployment)
        except OSError:
            log.warning("model %s: no metrics endpoint", self.cfg.name, exc_info=True)
        self.host.start()

    def _score(self, columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return self.host.score(columns)

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
        return {
            **self.host.info(),
            "replica": ctx.replica_id.unique_id,
            "node_id": ray.get_runtime_context().get_node_id(),
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
        return prediction_of(out, t0)


@serve.deployment
class KafkaIngress(LoopHost):
    """A consumer-group member: runs the ingress loop for the replica's lifetime.

    A model with ``placement: ingress`` has no deployment (its handle is None): the replica
    hosts it (:class:`~raylane.serving.model_host.ModelHost`) and scores it in process.
    """

    kind = "ingress"
    close_timeout_s = 15.0

    def __init__(
        self,
        args: dict[str, Any],
        env: dict[str, str],
        primary: DeploymentHandle[Any] | None,
        shadows: Sequence[DeploymentHandle[Any] | None],
        monitors: Sequence[DeploymentHandle[Any]] = (),  # bound only to deploy with the app
    ) -> None:
        self._handles = (primary, list(shadows))
        # the models placed here load now, as a ModelServer's do in its constructor: one
        # that cannot load (a column the pipeline lacks, an unapproved version) fails the
        # deploy with its message instead of a replica that restarts without end
        os.environ.update(env)
        bind_serve_grpc_to_loopback()
        route_logs_to_serve()
        cfg = PipelineConfig.from_args(args)
        self._hosts: dict[str, Any] = {  # label -> ModelHost of the in-process models
            m.name: _host(cfg, m)
            for m in (cfg.models.primary, *cfg.models.shadows)
            if m.placement == "ingress"
        }
        super().__init__(args, env)
        for host in self._hosts.values():
            host.start()  # alias polling, on this replica's loop

    def _client(self, m: ModelConfig, handle: DeploymentHandle[Any] | None) -> Any:
        if m.placement != "ingress":
            assert handle is not None, f"model {m.name} has no deployment handle"
            return ServeModelClient(m.name, handle, m.timeout_s)
        from raylane.serving.model_host import InProcessModelClient

        return InProcessModelClient(self._hosts[m.name])

    async def _build(self) -> Any:
        from raylane.ingest import build_ingress  # keeps the replica's import graph lazy

        primary, shadows = self._handles
        models = self.cfg.models
        return await build_ingress(
            self.cfg,
            self._client(models.primary, primary),
            [self._client(m, h) for m, h in zip(models.shadows, shadows, strict=True)],
        )

    async def model_info(self, label: str) -> dict[str, Any]:
        """`ModelServer.info` of a model this replica hosts (``placement: ingress``)."""
        host = self._hosts.get(label)
        if host is None:
            raise KeyError(
                f"this ingress replica hosts no model {label!r} (in process: "
                f"{sorted(self._hosts) or 'none'}); a deployment-placed model answers info()"
            )
        return dict(host.info())

    async def __del__(self) -> None:
        await super().__del__()
        for label, host in self._hosts.items():
            try:
                await host.close()
            except Exception:  # one host's failure must not keep the others polling
                log.exception("model %s: closing its host failed", label)


def _host(cfg: PipelineConfig, m: ModelConfig) -> Any:
    """A :class:`~raylane.serving.model_host.ModelHost` for a model placed in the ingress."""
    from raylane.serving.app import deployment_names
    from raylane.serving.model_host import ModelHost

    return ModelHost(
        m,
        deployment_names(cfg)[m.name],
        columns=cfg.features.columns(),
        config=f"the serve config of pipeline {cfg.name} (serve_configs/{cfg.name}.yaml)",
        verify_approval=True,
    )
