"""The model a Serve replica hosts, and its hot swap: plain Python, no Ray.

A :class:`HostedModel` scores batches with the current version (through the optional
prediction cache) and, for an alias URI (``models:/<name>@champion``), checks the
registry every ``reload_poll_s``: when the alias has moved it loads the new version
*beside* the old one (the old keeps scoring meanwhile), then swaps in one assignment
and clears the cache. Every batch is scored by exactly one version, which the result
names; every swap is recorded (``swaps``) for tests and the operator.

A new version that cannot be loaded (it needs a column the pipeline does not produce, it
lacks the configured flavor, its artifact is broken) or that `raylane promote` did not
approve (:mod:`raylane.lifecycle.approval`) is *refused*: the old version keeps
scoring, the refusal is recorded (``refusals``) and logged, and that version is not tried
again until the alias moves. A replica that starts while the alias names an unapproved
version serves the last approved one (``fallback``) and records the refusal the same way.
A dependency outage (retriable) is not a refusal: the caller
counts it and the next poll tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from raylane.config import ModelConfig
from raylane.pipeline.ports import Prediction
from raylane.serving.cache import PredictionCache

__all__ = ["HostedModel", "Refusal", "Scorable", "Swap", "prediction_of", "score_merged"]

log = logging.getLogger("raylane.serving")


class Scorable(Protocol):
    """What a hosted model needs of a loaded version (a LoadedModel fits)."""

    name: str
    version: int

    @property
    def feature_names(self) -> list[str]: ...

    def stack(self, columns: Mapping[str, Any]) -> np.ndarray: ...

    def predict_matrix(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Swap:
    from_version: str
    to_version: str
    #: epoch seconds when the new version started scoring
    at: float
    load_s: float
    #: epoch seconds of the last registry check that still saw the old version (0: none):
    #: the swap came from the first check after it, so it lags the alias move by at most
    #: one poll interval plus the load
    previous_poll_at: float = 0.0


@dataclass(frozen=True)
class Refusal:
    """A version the alias moved to that this replica refused to swap to."""

    version: str
    #: epoch seconds of the refusal
    at: float
    reason: str


class HostedModel:
    """One replica's model: scoring, cache, and alias polling for hot swaps."""

    def __init__(
        self,
        cfg: ModelConfig,
        load: Callable[[str], Scorable],
        resolve_version: Callable[[str], str],
        *,
        timer: Callable[[], float] | None = None,
        approve: Callable[[str], None] | None = None,
        fallback: Callable[[], str | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._load = load
        self._resolve = resolve_version
        #: raises (not retriable) when the version the alias names is not approved
        self._approve = approve
        #: the last version approved for the alias (None: none), served at start instead of
        #: an unapproved one
        self._fallback = fallback
        self.cache = (
            PredictionCache(cfg.cache.ttl_s, cfg.cache.max_entries, timer=timer)
            if cfg.cache is not None
            else None
        )
        self.swaps: list[Swap] = []
        self.refusals: list[Refusal] = []
        self._refused: str | None = None  # the version the alias points at, refused
        self.poll_errors = 0
        self.last_unchanged_poll = 0.0
        self.model = self._first(load)

    def _first(self, load: Callable[[str], Scorable]) -> Scorable:
        """The version to serve at start: the alias's if approved, else the last approved one.

        With no approval check (no key, a pinned version) that is what the URI names. An
        unapproved version with no approved one to fall back on raises NotApproved: the
        replica does not start rather than serve it.
        """
        if self._approve is None or not self.watches_alias:
            return load(self.cfg.uri)
        name = self.cfg.registered_name
        target = str(self._resolve(self.cfg.uri))
        try:
            self._approve(target)  # before any download, like a swap
        except Exception as e:
            if getattr(e, "retriable", False):
                raise
            served = self._fallback() if self._fallback is not None else None
            if served is None or served == target:
                raise
            self.model = load(f"models:/{name}/{served}")
            self._refuse(target, e)
            return self.model
        return load(f"models:/{name}/{target}")

    @property
    def version(self) -> str:
        return str(self.model.version)

    @property
    def watches_alias(self) -> bool:
        return self.cfg.alias is not None

    def score(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        """Scores of one batch and the version that produced them (captured once)."""
        t0 = time.perf_counter()
        model = self.model  # one version for the whole batch, even if a swap lands meanwhile
        version = str(model.version)
        x = model.stack(columns)
        cache = self.cache
        if cache is None:
            scores = np.asarray(model.predict_matrix(x), dtype=np.float64)
        else:
            scores, miss, keys = cache.lookup(version, x)
            if len(miss):
                fresh = np.asarray(model.predict_matrix(x[miss]), dtype=np.float64)
                scores[miss] = fresh
                cache.store(version, keys, miss, fresh)
        return {
            "scores": scores,
            "model_name": model.name,
            "model_version": version,
            "latency_ms": (time.perf_counter() - t0) * 1000.0,
        }

    def fetch(self) -> tuple[Scorable, float] | None:
        """Resolve the alias; if it moved, load the new version (blocking: run it in a thread).

        Returns the loaded version and its load time, or None when nothing changed or the
        new version was refused (see :attr:`refusals`). Retriable errors (the registry is
        unreachable) propagate: the caller counts them and polls again.
        """
        if not self.watches_alias:
            return None
        checked_at = time.time()
        target = str(self._resolve(self.cfg.uri))
        if target == self._refused:
            return None  # refused already: tried again only after the alias moves
        self._refused = None
        if target == self.version:
            self.last_unchanged_poll = checked_at
            return None
        t0 = time.perf_counter()
        try:
            if self._approve is not None:
                self._approve(target)  # before any download: an unapproved version never loads
            new = self._load(f"models:/{self.cfg.registered_name}/{target}")
        except Exception as e:
            if getattr(e, "retriable", False):
                raise
            self._refuse(target, e)
            return None
        return new, time.perf_counter() - t0

    def _refuse(self, version: str, e: Exception) -> None:
        reason = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
        self._refused = version
        self.refusals.append(Refusal(version, time.time(), reason))
        log.error(
            "model %s: refused to swap %s v%s -> v%s, v%s keeps serving: %s",
            self.cfg.name,
            self.cfg.registered_name,
            self.version,
            version,
            self.version,
            reason,
        )

    def swap(self, new: Scorable, load_s: float = 0.0) -> Swap:
        """Switch to `new` (call it on the thread that scores: the cache is not thread-safe)."""
        old = self.version
        self.model = new  # batches already started keep the old object
        if self.cache is not None:
            self.cache.clear()
        swap = Swap(old, str(new.version), time.time(), load_s, self.last_unchanged_poll)
        self.swaps.append(swap)
        log.warning(
            "model %s hot-swapped %s v%s -> v%s (loaded in %.2f s)",
            self.cfg.name,
            self.cfg.registered_name,
            old,
            new.version,
            load_s,
        )
        return swap

    def check(self) -> Swap | None:
        """fetch + swap in one call (single-threaded callers)."""
        got = self.fetch()
        return None if got is None else self.swap(*got)


def score_merged(
    score: Callable[[Mapping[str, Any]], dict[str, Any]], calls: list[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Score several batch calls with one model call (Serve batching), split per call.

    Calls whose columns differ are scored one by one. Every part names the same version.
    """
    keys = set(calls[0])
    if len(calls) == 1 or any(set(c) != keys for c in calls):
        return [score(c) for c in calls]
    sizes = [len(next(iter(c.values()))) for c in calls]
    out = score({k: np.concatenate([np.asarray(c[k]) for c in calls]) for k in keys})
    parts = np.split(np.asarray(out["scores"]), np.cumsum(sizes)[:-1])
    return [{**out, "scores": part} for part in parts]


def prediction_of(out: Mapping[str, Any], t0: float) -> Prediction:
    """The :class:`~raylane.pipeline.ports.Prediction` of a :meth:`HostedModel.score` result
    (in process or returned by a model deployment), timed from `t0` (``perf_counter``)."""
    return Prediction(
        scores=np.asarray(out["scores"]),
        model_name=out["model_name"],
        model_version=out["model_version"],
        latency_ms=(time.perf_counter() - t0) * 1000.0,
    )
