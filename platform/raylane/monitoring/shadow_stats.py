"""Rolling aggregates of shadow comparisons, kept in Redis where the CLI can read them.

Each ingress replica appends one compact entry per compared batch to a capped Redis
list per shadow (``raylane:shadow:<pipeline>:<shadow>``; replicas share it) and
counts errors and timeouts in a hash next to it. :func:`aggregate` turns the newest
entries of one (primary version, shadow version) pair into the figures that
`raylane shadow report` prints and `raylane promote` gates on: n, agreement rate,
mean and p95 |Δ|, flag rate of each model, latency p50/p99 of each model.

The same figures are Prometheus gauges per replica (:class:`LocalShadowWindow`).
Plain Python + redis; no Ray.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MAX_BATCHES",
    "LocalShadowWindow",
    "ShadowAggregate",
    "ShadowStore",
    "aggregate",
    "batch_entry",
    "counts_key",
    "entries_key",
    "record_batch",
    "record_count",
]

#: Entries (batches) kept per shadow; the window of the aggregates is cut from these.
MAX_BATCHES = 5000


def entries_key(pipeline: str, shadow: str) -> str:
    return f"raylane:shadow:{pipeline}:{shadow}"


def counts_key(pipeline: str, shadow: str) -> str:
    return f"raylane:shadow:{pipeline}:{shadow}:counts"


def batch_entry(records: Sequence[Mapping[str, Any]], default_decision: str) -> dict[str, Any]:
    """One compact entry for a compared batch (records as built by ``compare``)."""
    r0 = records[0]
    return {
        "t": time.time(),
        "pv": str(r0["primary_version"]),
        "sv": str(r0["shadow_version"]),
        "pm": str(r0["primary_model"]),
        "sm": str(r0["shadow_model"]),
        "p": [round(float(r["primary_score"]), 6) for r in records],
        "s": [round(float(r["shadow_score"]), 6) for r in records],
        "pf": [int(r["primary_decision"] != default_decision) for r in records],
        "sf": [int(r["shadow_decision"] != default_decision) for r in records],
        "ag": [int(bool(r["agreement"])) for r in records],
        "pl": float(r0["primary_latency_ms"]),
        "sl": float(r0["shadow_latency_ms"]),
    }


@dataclass(frozen=True)
class ShadowAggregate:
    """The rolling figures of one shadow against the primary."""

    shadow: str
    n: int = 0
    batches: int = 0
    primary_model: str = ""
    primary_version: str = ""
    shadow_model: str = ""
    shadow_version: str = ""
    agreement_rate: float | None = None
    mean_abs_delta: float | None = None
    p95_abs_delta: float | None = None
    primary_flag_rate: float | None = None
    shadow_flag_rate: float | None = None
    primary_latency_p50_ms: float | None = None
    primary_latency_p99_ms: float | None = None
    shadow_latency_p50_ms: float | None = None
    shadow_latency_p99_ms: float | None = None
    errors: int = 0
    timeouts: int = 0
    skipped: int = 0
    since: float | None = None
    until: float | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def latency_p99_ratio(self) -> float | None:
        if self.shadow_latency_p99_ms is None or not self.primary_latency_p99_ms:
            return None
        return self.shadow_latency_p99_ms / self.primary_latency_p99_ms

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency_p99_ratio"] = self.latency_p99_ratio
        return d


def aggregate(shadow: str, entries: Iterable[Mapping[str, Any]], *, window: int = 20_000,
              counts: Mapping[str, int] | None = None) -> ShadowAggregate:
    """Aggregate the newest entries (newest first) of the newest version pair, up to `window` events.

    Only entries with the same primary and shadow versions as the newest are used, so a
    promotion starts the figures afresh instead of mixing two pairs of models.
    """
    c = {k: int(v) for k, v in (counts or {}).items()}
    base = {"errors": c.get("errors", 0), "timeouts": c.get("timeouts", 0),
            "skipped": c.get("skipped", 0), "counts": c}
    chosen: list[Mapping[str, Any]] = []
    n = 0
    pair: tuple[str, str] | None = None
    for e in entries:
        key = (str(e["pv"]), str(e["sv"]))
        if pair is None:
            pair = key
        if key != pair or n >= window:
            break
        chosen.append(e)
        n += len(e["p"])
    if not chosen or pair is None:
        return ShadowAggregate(shadow, **base)  # type: ignore[arg-type]
    p = np.concatenate([np.asarray(e["p"], dtype=np.float64) for e in chosen])
    s = np.concatenate([np.asarray(e["s"], dtype=np.float64) for e in chosen])
    d = np.abs(p - s)
    pl = np.asarray([e["pl"] for e in chosen], dtype=np.float64)
    sl = np.asarray([e["sl"] for e in chosen], dtype=np.float64)
    ts = [float(e["t"]) for e in chosen]
    return ShadowAggregate(
        shadow,
        n=len(p),
        batches=len(chosen),
        primary_model=str(chosen[0].get("pm", "")),
        primary_version=pair[0],
        shadow_model=str(chosen[0].get("sm", "")),
        shadow_version=pair[1],
        agreement_rate=float(np.mean(np.concatenate([np.asarray(e["ag"]) for e in chosen]))),
        mean_abs_delta=float(d.mean()),
        p95_abs_delta=float(np.percentile(d, 95)),
        primary_flag_rate=float(np.mean(np.concatenate([np.asarray(e["pf"]) for e in chosen]))),
        shadow_flag_rate=float(np.mean(np.concatenate([np.asarray(e["sf"]) for e in chosen]))),
        primary_latency_p50_ms=float(np.percentile(pl, 50)),
        primary_latency_p99_ms=float(np.percentile(pl, 99)),
        shadow_latency_p50_ms=float(np.percentile(sl, 50)),
        shadow_latency_p99_ms=float(np.percentile(sl, 99)),
        since=min(ts),
        until=max(ts),
        **base,  # type: ignore[arg-type]
    )


class LocalShadowWindow:
    """The newest entries of one shadow in this process (for the Prometheus gauges)."""

    def __init__(self, shadow: str, window: int = 20_000) -> None:
        self.shadow = shadow
        self.window = window
        self._entries: deque[Mapping[str, Any]] = deque(maxlen=MAX_BATCHES)

    def add(self, entry: Mapping[str, Any]) -> ShadowAggregate:
        self._entries.appendleft(entry)
        return aggregate(self.shadow, self._entries, window=self.window)


class ShadowStore:
    """Synchronous reads of the shared aggregates (CLI, promotion gates)."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self._r = redis.Redis.from_url(redis_url, decode_responses=True)

    def entries(self, pipeline: str, shadow: str, limit: int = MAX_BATCHES) -> list[dict[str, Any]]:
        raw = self._r.lrange(entries_key(pipeline, shadow), 0, limit - 1)
        return [json.loads(x) for x in raw]  # type: ignore[union-attr]

    def counts(self, pipeline: str, shadow: str) -> dict[str, int]:
        raw = self._r.hgetall(counts_key(pipeline, shadow))
        return {k: int(v) for k, v in raw.items()}  # type: ignore[union-attr]

    def aggregate(self, pipeline: str, shadow: str, window: int = 20_000) -> ShadowAggregate:
        return aggregate(shadow, self.entries(pipeline, shadow), window=window,
                         counts=self.counts(pipeline, shadow))

    def reset(self, pipeline: str, shadows: Sequence[str]) -> None:
        """Forget the aggregates (after a promotion the compared pair changes)."""
        keys = [k for s in shadows for k in (entries_key(pipeline, s), counts_key(pipeline, s))]
        if keys:
            self._r.delete(*keys)


async def record_batch(redis: Any, pipeline: str, shadow: str, entry: Mapping[str, Any]) -> None:
    """Append one batch entry (async client, one pipelined round trip), capping the list."""
    key = entries_key(pipeline, shadow)
    pipe = redis.pipeline(transaction=False)
    pipe.lpush(key, json.dumps(entry, separators=(",", ":")))
    pipe.ltrim(key, 0, MAX_BATCHES - 1)
    pipe.hincrby(counts_key(pipeline, shadow), "compared", len(entry["p"]))
    await pipe.execute()


async def record_count(redis: Any, pipeline: str, shadow: str, what: str, n: int = 1) -> None:
    await redis.hincrby(counts_key(pipeline, shadow), what, n)
