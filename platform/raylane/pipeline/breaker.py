"""Circuit breakers (pybreaker) around the data path's dependencies.

Each feature source and model client is wrapped once. After `fail_max`
consecutive failures the breaker opens: calls fail fast with a retriable
:class:`~raylane.errors.DependencyError` and the ingress loop pauses its
partitions until a trial call succeeds. The breaker state is a metric.

Only outages count: a retriable :class:`~raylane.errors.RaylaneError` or a connection,
timeout or OS error. Anything else a source raises (a non-retriable RaylaneError such as a
record the source cannot use, or an unexpected ``ValueError``) is about the input, not the
dependency: it passes through unchanged, does not count toward opening the breaker, and the
ingress isolates the poison record (:meth:`raylane.pipeline.processor.BatchProcessor.isolate`).
Counting those would let one crafted record open the breaker again at every trial call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import pybreaker

from raylane.config import BreakerConfig
from raylane.errors import DependencyError, RaylaneError
from raylane.monitoring.metrics import METRICS
from raylane.pipeline.ports import ModelClient, OnlineSource, Prediction, WindowSource

__all__ = [
    "GuardedModel",
    "GuardedOnline",
    "GuardedWindows",
    "guarded",
    "is_outage_error",
    "make_breaker",
]

T = TypeVar("T")


class _StateMetric(pybreaker.CircuitBreakerListener):
    def __init__(self, pipeline: str, dependency: str) -> None:
        self.gauge = METRICS.breaker_open.labels(pipeline=pipeline, dependency=dependency)
        self.gauge.set(0)

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.gauge.set(1 if new_state.name == pybreaker.STATE_OPEN else 0)


_OUTAGES = (ConnectionError, TimeoutError, OSError)


def is_outage_error(e: BaseException) -> bool:
    """True for failures of the dependency itself (what the breaker counts)."""
    if isinstance(e, RaylaneError):
        return e.retriable
    return isinstance(e, _OUTAGES)


def _bad_input(e: BaseException) -> bool:
    return not is_outage_error(e)


def make_breaker(cfg: BreakerConfig, pipeline: str, dependency: str) -> pybreaker.CircuitBreaker:
    return pybreaker.CircuitBreaker(
        fail_max=cfg.fail_max,
        reset_timeout=cfg.reset_timeout_s,
        exclude=[_bad_input],
        name=f"{pipeline}:{dependency}",
        listeners=[_StateMetric(pipeline, dependency)],
    )


async def guarded(breaker: pybreaker.CircuitBreaker, what: str, aw: Awaitable[T]) -> T:
    """Await `aw` under `breaker`; an outage comes out as a retriable DependencyError, any
    other failure (about the input) is raised unchanged."""
    try:
        with breaker.calling():
            return await aw
    except pybreaker.CircuitBreakerError as e:
        if hasattr(aw, "close"):
            aw.close()  # never started: don't leave a dangling coroutine
        raise DependencyError(
            f"{what} is failing; its circuit breaker is open (retrying after "
            f"{breaker.reset_timeout:g} s)",
            stage=what,
        ) from e
    except Exception as e:
        if isinstance(e, RaylaneError) or not is_outage_error(e):
            raise  # an outage already typed, or bad input the caller isolates
        raise DependencyError(f"{what} failed: {type(e).__name__}: {e}", stage=what) from e


class GuardedWindows:
    def __init__(self, inner: WindowSource, breaker: pybreaker.CircuitBreaker) -> None:
        self.inner, self.breaker = inner, breaker

    async def update_and_read(self, events: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        return await guarded(self.breaker, "window features", self.inner.update_and_read(events))


class GuardedOnline:
    def __init__(self, inner: OnlineSource, breaker: pybreaker.CircuitBreaker) -> None:
        self.inner, self.breaker = inner, breaker

    async def read(self, entities: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
        return await guarded(self.breaker, "online features", self.inner.read(entities))


class GuardedModel:
    def __init__(self, inner: ModelClient, breaker: pybreaker.CircuitBreaker) -> None:
        self.inner, self.breaker = inner, breaker
        self.name = inner.name

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction:
        return await guarded(self.breaker, f"model {self.name}", self.inner.predict(columns))
