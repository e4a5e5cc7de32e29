"""Stage 2 of a batch: the feature columns, from the event, the feature sources and derivations.

One window round trip and one online round trip per batch, concurrently. Event fields
become float64 columns, categorical ones one-hot or ordinal columns; derived columns are
computed on the result. A feature source that returns fewer columns than the config names
is a dependency failure, never NaN scoring.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from raylane.config import PipelineConfig
from raylane.errors import DependencyError
from raylane.features.categorical import categorical_columns
from raylane.features.derived import compute_derived
from raylane.pipeline.ports import OnlineSource, WindowSource

__all__ = ["FeatureStage", "event_column"]


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def event_column(events: list[dict[str, Any]], name: str) -> np.ndarray:
    """Field `name` of each event as float64 (NaN where missing or not a number)."""
    return np.fromiter((_num(ev.get(name)) for ev in events), dtype=np.float64, count=len(events))


class FeatureStage:
    """Builds the model's input columns for a batch of decoded events."""

    def __init__(
        self,
        cfg: PipelineConfig,
        windows: WindowSource | None,
        online: OnlineSource | None,
    ) -> None:
        self.cfg = cfg
        self.windows = windows if cfg.features.windows else None
        self.online = online if cfg.features.online else None
        self.columns = cfg.features.columns()
        self._entity_fields = sorted({v.entity_field for v in cfg.features.online})

    async def __call__(
        self, events: list[dict[str, Any]], stage_ms: dict[str, float]
    ) -> dict[str, np.ndarray]:
        cols = {f: event_column(events, f) for f in self.cfg.features.event}
        if self.cfg.features.categorical:
            cols.update(categorical_columns(events, self.cfg.features.categorical))

        async def timed(name: str, coro: Any) -> dict[str, np.ndarray]:
            t0 = time.perf_counter()
            out: dict[str, np.ndarray] = await coro
            stage_ms[name] = (time.perf_counter() - t0) * 1000.0
            return out

        jobs = []
        if self.windows is not None:
            jobs.append(timed("window_ms", self.windows.update_and_read(events)))
        if self.online is not None:
            entities = {f: [str(ev[f]) for ev in events] for f in self._entity_fields}
            jobs.append(timed("online_ms", self.online.read(entities)))
        for part in await asyncio.gather(*jobs):
            cols.update(part)
        if self.cfg.features.derived:
            compute_derived(cols, self.cfg.features.derived)
        missing = [c for c in self.columns if c not in cols]
        if missing:
            raise DependencyError(
                f"feature sources returned no column(s) {missing}", stage="features"
            )
        return cols
