"""One model's hosting, wherever it runs: a Serve model replica or the ingress replica itself.

:class:`ModelHost` holds what a model replica does besides answering calls: it loads the
version the URI names (refusing one that needs a column the pipeline does not produce, or
that `raylane promote` did not approve), polls an alias every ``reload_poll_s`` and
hot-swaps a moved one off the scoring path, keeps the prediction cache and counts swaps,
refusals and cache hits in the process's metrics.

The :class:`~raylane.serving._deployments.ModelServer` deployment wraps one (the default,
``placement: deployment``). With ``placement: ingress`` the ingress replica builds one per
such model and scores it through :class:`InProcessModelClient`: no Serve call (its
serialization, routing and the replica's event loop, ~10 ms per batch on two cores) on the
critical path; hot swap, cache, approval and metrics unchanged. A GPU model, or one that
needs its own replicas or autoscaling, stays a deployment (the config refuses otherwise).
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

from raylane.config import ModelConfig
from raylane.errors import DependencyError
from raylane.pipeline.ports import Prediction
from raylane.serving.hosted import HostedModel, prediction_of

if TYPE_CHECKING:
    from raylane.lifecycle.approval import Approver

__all__ = ["InProcessModelClient", "ModelHost"]

log = logging.getLogger("raylane.serving")


class ModelHost:
    """A registered model hosted in this process: load, score, cache, hot swap, metrics.

    Construct it where blocking is fine (it downloads and loads the first version), then
    call :meth:`start` on the event loop that scores: swaps happen on that loop, between
    batches, never under one.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        deployment: str,
        *,
        columns: Sequence[str] | None = None,
        config: str = "",
        verify_approval: bool = False,
    ) -> None:
        os.environ.setdefault(
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
        )  # no bars in replica logs
        from raylane.monitoring.metrics import METRICS  # heavy imports: inside replicas only
        from raylane.registry import load_model, resolve

        self.cfg = cfg
        self.deployment = deployment or cfg.name
        self.device = "cuda" if cfg.ray_actor_options.num_gpus > 0 else "cpu"
        produced = None if columns is None else list(columns)
        approve = self._approval(verify_approval)
        self.hosted = HostedModel(
            cfg,
            load=lambda uri: load_model(
                uri,
                device=self.device,
                flavor=cfg.flavor,
                required_columns=produced,
                config=config,
            ),
            resolve_version=lambda uri: str(resolve(uri).version),
            approve=approve,
            fallback=None if approve is None else approve.fallback,
        )
        log.warning(
            "model %s loaded: %s version %s (%s) on %s, placement %s",
            cfg.name,
            self.hosted.model.name,
            self.hosted.version,
            getattr(self.hosted.model, "flavor", "?"),
            self.device,
            cfg.placement,
        )
        self._seen = (0, 0)  # cache hits / misses already counted in the metric
        self._metrics = METRICS
        if self.hosted.refusals:  # started on the last approved version, not the alias's
            self._metrics.model_swaps_refused.labels(deployment=self.deployment).inc(
                len(self.hosted.refusals)
            )
        self._poller: asyncio.Task[None] | None = None

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

    def start(self) -> None:
        """Start polling the alias (if the URI names one) on the running event loop."""
        if self.hosted.watches_alias and self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
            except Exception:  # it died earlier: say so, the host is closed either way
                log.exception("model %s: its alias poller had failed", self.cfg.name)
            self._poller = None

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

    def score(self, columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """One batch's scores and the version that produced them; counts cache use."""
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

    def info(self) -> dict[str, Any]:
        """What `ModelServer.info` reports, less the Serve replica's identity."""
        m = self.hosted.model
        cache = self.hosted.cache
        return {
            "label": self.cfg.name,
            "name": m.name,
            "version": self.hosted.version,
            "features": list(m.feature_names),
            "device": getattr(m, "device", self.device),
            "placement": self.cfg.placement,
            "pid": os.getpid(),
            "swaps": [asdict(s) for s in self.hosted.swaps],
            "poll_errors": self.hosted.poll_errors,
            "refusals": [asdict(r) for r in self.hosted.refusals],
            "flavor": getattr(m, "flavor", None),
            "cache": None
            if cache is None
            else {**asdict(cache.stats), "hit_rate": cache.stats.hit_rate, "size": len(cache)},
        }


class InProcessModelClient:
    """A :class:`~raylane.pipeline.ports.ModelClient` scoring a :class:`ModelHost` in this
    process, on the caller's event loop (an XGBoost batch of a few hundred rows takes well
    under a millisecond; a thread hop would cost more than it saves).

    A model that raises on a batch raises a retriable DependencyError, as a model
    deployment's call does: the breaker counts it and the ingress pauses and retries (nothing
    is committed or dead-lettered) rather than isolating every record of a version that
    fails on all of them. ``timeout_s`` does not apply in process: a call that hangs holds
    the ingress loop until its stall check (``ingress.stall_timeout_s``) fails the replica.
    """

    def __init__(self, host: ModelHost) -> None:
        self.name = host.cfg.name
        self.host = host

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        t0 = time.perf_counter()
        try:
            out = self.host.score(columns)
        except Exception as e:
            raise DependencyError(
                f"model {self.name} failed: {type(e).__name__}: {e}", stage="score"
            ) from e
        return prediction_of(out, t0)
