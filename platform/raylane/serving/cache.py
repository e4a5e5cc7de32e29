"""Prediction cache of one model replica: (model version, feature vector) -> score.

A hard TTL (an entry is never served after it, however often it is hit) and a bounded
size (least recently used entries go first): ``cachetools.TTLCache``, whose ``timer`` is
injectable so tests control time. The key
holds the model version, so nothing is ever served across versions; a hot swap also
clears the cache. Plain Python; the Serve deployment uses it per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cachetools import TTLCache

__all__ = ["CacheStats", "PredictionCache"]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    clears: int = 0

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


class PredictionCache:
    """Scores by (version, row of the model's float32 input matrix)."""

    def __init__(
        self, ttl_s: float, max_entries: int, *, timer: Callable[[], float] | None = None
    ) -> None:
        self._c: TTLCache[tuple[str, bytes], float] = TTLCache(
            maxsize=max_entries, ttl=ttl_s, timer=timer or time.monotonic
        )
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._c)

    def lookup(self, version: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """Cached scores (NaN where missing), the indices of the misses, every row's key bytes."""
        keys = [row.tobytes() for row in np.ascontiguousarray(x)]
        out = np.full(len(keys), np.nan, dtype=np.float64)
        miss: list[int] = []
        for i, k in enumerate(keys):
            v = self._c.get((version, k))
            if v is None:
                miss.append(i)
            else:
                out[i] = v
        self.stats.hits += len(keys) - len(miss)
        self.stats.misses += len(miss)
        return out, np.asarray(miss, dtype=np.int64), keys

    def store(self, version: str, keys: list[bytes], idx: np.ndarray, scores: np.ndarray) -> None:
        for i, s in zip(idx.tolist(), np.asarray(scores, dtype=np.float64).tolist(), strict=True):
            self._c[(version, keys[i])] = s

    def clear(self) -> None:
        """Drop everything (on a model swap)."""
        self._c.clear()
        self.stats.clears += 1
