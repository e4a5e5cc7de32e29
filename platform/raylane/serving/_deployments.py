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
from raylane.ingest.processor import Prediction

__all__ = ["KafkaIngress", "ModelServer", "ServeModelClient"]

log = logging.getLogger("raylane.serving")


@serve.deployment
class ModelServer:
    """Hosts one registered model version; one call scores a whole batch."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str]) -> None:
        os.environ.update(env)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in replica logs
        from raylane.registry import load_model  # heavy import (mlflow), inside the replica only

        self.cfg = ModelConfig.model_validate(spec)
        device = "cuda" if self.cfg.ray_actor_options.num_gpus > 0 else "cpu"
        self.model = load_model(self.cfg.uri, device=device)
        log.warning("model %s loaded: %s version %s on %s", self.cfg.name, self.model.name,
                    self.model.version, device)

    def predict(self, columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        t0 = time.perf_counter()
        scores = self.model.predict(columns)
        return {
            "scores": scores,
            "model_name": self.model.name,
            "model_version": str(self.model.version),
            "latency_ms": (time.perf_counter() - t0) * 1000.0,
        }

    def info(self) -> dict[str, Any]:
        return {"label": self.cfg.name, "name": self.model.name, "version": str(self.model.version),
                "features": list(self.model.feature_names)}


class ServeModelClient:
    """A :class:`~raylane.ingest.processor.ModelClient` over a Serve deployment handle."""

    def __init__(self, name: str, handle: DeploymentHandle, timeout_s: float) -> None:
        self.name = name
        self.handle = handle
        self.timeout_s = timeout_s

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        t0 = time.perf_counter()
        try:
            out = await asyncio.wait_for(self.handle.predict.remote(columns), self.timeout_s)
        except TimeoutError as e:
            raise DependencyError(f"model {self.name} timed out after {self.timeout_s:g} s",
                                  stage="score") from e
        except Exception as e:
            raise DependencyError(f"model {self.name} failed: {type(e).__name__}: {e}",
                                  stage="score") from e
        return Prediction(
            scores=np.asarray(out["scores"]),
            model_name=out["model_name"],
            model_version=out["model_version"],
            latency_ms=(time.perf_counter() - t0) * 1000.0,
        )


@serve.deployment
class KafkaIngress:
    """A consumer-group member: runs the ingress loop for the replica's lifetime."""

    def __init__(
        self,
        args: dict[str, Any],
        env: dict[str, str],
        primary: DeploymentHandle,
        shadows: Sequence[DeploymentHandle],
        monitors: Sequence[DeploymentHandle] = (),  # bound here only so they deploy with the app
    ) -> None:
        os.environ.update(env)
        from raylane.pipeline import build_ingress  # keeps the replica's import graph lazy

        self.cfg = PipelineConfig.from_args(args)
        models = self.cfg.models
        self._primary = ServeModelClient(models.primary.name, primary, models.primary.timeout_s)
        self._shadows = [
            ServeModelClient(m.name, h, m.timeout_s) for m, h in zip(models.shadows, shadows, strict=True)
        ]
        self._build = build_ingress
        self._loop: Any = None
        self._error: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._main())

    async def _main(self) -> None:
        try:
            self._loop = await self._build(self.cfg, self._primary, self._shadows)
            await self._loop.start()
            await self._loop.run()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._error = e
            log.exception("ingress loop of %s died", self.cfg.name)
            raise

    async def check_health(self) -> None:
        # A dead loop makes the replica unhealthy, so Serve replaces it; its uncommitted
        # batch is re-read by the group (at-least-once).
        if self._task.done():
            raise RuntimeError(f"ingress loop stopped: {self._error!r}")

    async def stats(self) -> dict[str, Any]:
        from dataclasses import asdict

        s = asdict(self._loop.stats) if self._loop is not None else {}
        s["pid"] = os.getpid()
        s["running"] = not self._task.done()
        return s

    async def __call__(self, request: Any = None) -> dict[str, Any]:
        return await self.stats()

    async def __del__(self) -> None:
        if self._loop is not None:
            try:
                await asyncio.wait_for(self._loop.close(), timeout=15)
            except Exception:
                log.exception("ingress of %s did not close cleanly", self.cfg.name)
        self._task.cancel()
