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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from raylane.redis_clients import connect_sync

__all__ = [
    "MAX_BATCHES",
    "LocalShadowWindow",
    "ShadowAggregate",
    "ShadowStore",
    "aggregate",
    "batch_entry",
    "counts_key",
    "entries_key",
    "newest_pair",
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


def aggregate(
    shadow: str,
    entries: Iterable[Mapping[str, Any]],
    *,
    window: int = 20_000,
    counts: Mapping[str, int] | None = None,
) -> ShadowAggregate:
    """Aggregate the newest entries (newest first) of the newest version pair, up to `window`
    events.

    Only entries with the same primary and shadow versions as the newest are used, so a
    promotion starts the figures afresh instead of mixing two pairs of models.
    """
    c = {k: int(v) for k, v in (counts or {}).items()}
    base = {
        "errors": c.get("errors", 0),
        "timeouts": c.get("timeouts", 0),
        "skipped": c.get("skipped", 0),
        "counts": c,
    }
    chosen = newest_pair(entries, window)
    pair = (str(chosen[0]["pv"]), str(chosen[0]["sv"])) if chosen else None
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


def newest_pair(entries: Iterable[Mapping[str, Any]], window: int) -> list[Mapping[str, Any]]:
    """The entries :func:`aggregate` uses: the newest (newest first) of the newest version
    pair, up to the first that brings the events to `window`."""
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
    return chosen


_EVENT_COLS = ("p", "s", "pf", "sf", "ag")  # per event: scores, flags, agreement
_BATCH_COLS = ("n", "pl", "sl", "t")  # per batch: events, latencies, time


class _Columns:
    """Append-only float columns with a moving start: amortised O(1) append and evict."""

    def __init__(self, names: Sequence[str], capacity: int = 1024) -> None:
        self._buf = {k: np.empty(capacity, dtype=np.float64) for k in names}
        self.start = self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, cols: Mapping[str, Any], k: int) -> None:
        cap = len(next(iter(self._buf.values())))
        if self.end + k > cap:  # move the live part to the front, grow if it is over half full
            live = len(self)
            size = max(cap, 2 * (live + k))
            for name, b in self._buf.items():
                nb = b if size == cap else np.empty(size, dtype=np.float64)
                nb[:live] = b[self.start : self.end]
                self._buf[name] = nb
            self.start, self.end = 0, live
        for name, v in cols.items():
            self._buf[name][self.end : self.end + k] = v
        self.end += k

    def evict(self, k: int) -> None:
        self.start += k

    def __getitem__(self, name: str) -> np.ndarray:
        return self._buf[name][self.start : self.end]

    def first(self, name: str) -> float:
        return float(self._buf[name][self.start])


class LocalShadowWindow:
    """The newest batches of one shadow in this process (for the Prometheus gauges).

    The same figures as :func:`aggregate` over the newest entries, kept incrementally:
    adding a batch costs O(batch) plus a few numpy reductions over the window, not a pass
    over every kept entry (that pass made each shadow batch cost up to 16 ms on the
    ingress's event loop). As in :func:`aggregate`, the window holds the fewest newest
    batches with at least ``window`` events (at most :data:`MAX_BATCHES` of them), and a
    new version pair starts it afresh.
    """

    def __init__(self, shadow: str, window: int = 20_000) -> None:
        self.shadow = shadow
        self.window = window
        self._pair: tuple[str, str] | None = None
        self._models = ("", "")
        self._events = _Columns(_EVENT_COLS)
        self._batches = _Columns(_BATCH_COLS)

    def add(self, entry: Mapping[str, Any]) -> ShadowAggregate:
        pair = (str(entry["pv"]), str(entry["sv"]))
        if pair != self._pair:
            self._pair, self._events, self._batches = (
                pair,
                _Columns(_EVENT_COLS),
                _Columns(_BATCH_COLS),
            )
        self._models = (str(entry.get("pm", "")), str(entry.get("sm", "")))
        k = len(entry["p"])
        self._events.append({name: entry[name] for name in _EVENT_COLS}, k)
        self._batches.append({"n": k, "pl": entry["pl"], "sl": entry["sl"], "t": entry["t"]}, 1)
        ev, b = self._events, self._batches
        while len(b) > 1 and (len(ev) - b.first("n") >= self.window or len(b) > MAX_BATCHES):
            ev.evict(int(b.first("n")))
            b.evict(1)
        return self.aggregate()

    def aggregate(self) -> ShadowAggregate:
        ev, b = self._events, self._batches
        if self._pair is None or not len(ev):
            return ShadowAggregate(self.shadow)
        d = np.abs(ev["p"] - ev["s"])
        pl, sl, ts = b["pl"], b["sl"], b["t"]
        return ShadowAggregate(
            self.shadow,
            n=len(ev),
            batches=len(b),
            primary_model=self._models[0],
            primary_version=self._pair[0],
            shadow_model=self._models[1],
            shadow_version=self._pair[1],
            agreement_rate=float(ev["ag"].mean()),
            mean_abs_delta=float(d.mean()),
            p95_abs_delta=float(np.percentile(d, 95)),
            primary_flag_rate=float(ev["pf"].mean()),
            shadow_flag_rate=float(ev["sf"].mean()),
            primary_latency_p50_ms=float(np.percentile(pl, 50)),
            primary_latency_p99_ms=float(np.percentile(pl, 99)),
            shadow_latency_p50_ms=float(np.percentile(sl, 50)),
            shadow_latency_p99_ms=float(np.percentile(sl, 99)),
            since=float(ts.min()),
            until=float(ts.max()),
        )


class ShadowStore:
    """Synchronous reads of the shared aggregates (CLI, promotion gates)."""

    def __init__(self, redis_url: str) -> None:

        self._r = connect_sync(redis_url, decode_responses=True)

    def entries(self, pipeline: str, shadow: str, limit: int = MAX_BATCHES) -> list[dict[str, Any]]:
        raw = self._r.lrange(entries_key(pipeline, shadow), 0, limit - 1)
        return [json.loads(x) for x in raw]  # type: ignore[union-attr]

    def counts(self, pipeline: str, shadow: str) -> dict[str, int]:
        raw = self._r.hgetall(counts_key(pipeline, shadow))
        return {k: int(v) for k, v in raw.items()}  # type: ignore[union-attr]

    def aggregate(self, pipeline: str, shadow: str, window: int = 20_000) -> ShadowAggregate:
        return aggregate(
            shadow,
            self.entries(pipeline, shadow),
            window=window,
            counts=self.counts(pipeline, shadow),
        )

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
