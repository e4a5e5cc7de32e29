"""What each dashboard page shows, as plain JSON-ready dicts (no I/O, no web framework).

Each function takes what :mod:`raylane.dashboard.collect` read (shadow entries and counts,
the drift state and windows, metric snapshots, MLflow versions) and returns the numbers and
series its page draws. The figures come from the platform's own code: shadow aggregates
from :func:`raylane.lifecycle.shadow_stats.aggregate`, gates from
:func:`raylane.lifecycle.gates.evaluate_gates`, quantiles as PromQL computes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raylane.config import PipelineConfig
from raylane.dashboard.samples import MetricsHistory, parse_key, quantile, total, totals_by
from raylane.lifecycle.gates import evaluate_gates
from raylane.lifecycle.shadow_stats import aggregate, newest_pair
from raylane.monitoring.drift_state import DriftState

__all__ = ["actions_page", "drift_page", "pipeline_page", "shadow_page", "verdict"]

Entry = Mapping[str, Any]


def _num(v: float | None) -> float | None:
    """JSON has no NaN: a missing figure is null."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def verdict(gates: Sequence[Any]) -> str:
    """ "ready to promote", or what blocks it (the failed gates)."""
    failed = [g for g in gates if not g.passed]
    if not gates:
        return "not gated"
    if not failed:
        return "ready to promote"
    return "blocked: " + "; ".join(g.describe().removeprefix("gate ") for g in failed)


# ----------------------------------------------------------------------------- shadow


def _timeline(entries: Sequence[Entry], max_buckets: int = 60) -> dict[str, list[Any]]:
    """Agreement, flag rates and latencies per time bucket, over every kept entry."""
    keys = ("t", "n", "agreement", "primary_flag_rate", "shadow_flag_rate")
    lat = ("primary_p50", "primary_p99", "shadow_p50", "shadow_p99")
    out: dict[str, list[Any]] = {k: [] for k in (*keys, *lat, "pair")}
    if not entries:
        return out
    ts = np.asarray([float(e["t"]) for e in entries])
    lo, hi = float(ts.min()), float(ts.max())
    width = max(1.0, (hi - lo) / max_buckets)
    idx = ((ts - lo) // width).astype(int)
    previous: int | None = None
    for b in sorted(set(idx.tolist())):
        if previous is not None and b - previous > 3:  # a pause in traffic: no line across it
            out["t"].append(lo + (previous + 2) * width)
            for k in (*keys[1:], *lat, "pair"):
                out[k].append(None)
        previous = b
        chosen = [e for e, i in zip(entries, idx, strict=True) if i == b]
        ag = np.concatenate([np.asarray(e["ag"], dtype=float) for e in chosen])
        pf = np.concatenate([np.asarray(e["pf"], dtype=float) for e in chosen])
        sf = np.concatenate([np.asarray(e["sf"], dtype=float) for e in chosen])
        pl = np.asarray([e["pl"] for e in chosen], dtype=float)
        sl = np.asarray([e["sl"] for e in chosen], dtype=float)
        out["t"].append(lo + (b + 1) * width)
        out["n"].append(len(ag))
        out["agreement"].append(float(ag.mean()))
        out["primary_flag_rate"].append(float(pf.mean()))
        out["shadow_flag_rate"].append(float(sf.mean()))
        out["primary_p50"].append(float(np.percentile(pl, 50)))
        out["primary_p99"].append(float(np.percentile(pl, 99)))
        out["shadow_p50"].append(float(np.percentile(sl, 50)))
        out["shadow_p99"].append(float(np.percentile(sl, 99)))
        out["pair"].append(f"v{chosen[-1]['pv']} / v{chosen[-1]['sv']}")
    return out


def _scatter(chosen: Sequence[Entry], limit: int) -> dict[str, list[float]]:
    """Up to `limit` (primary, shadow) score pairs: every disagreement, then evenly spaced."""
    p = np.concatenate([np.asarray(e["p"], dtype=float) for e in chosen])
    s = np.concatenate([np.asarray(e["s"], dtype=float) for e in chosen])
    ag = np.concatenate([np.asarray(e["ag"], dtype=int) for e in chosen])
    disagree = np.flatnonzero(ag == 0)[:limit]
    rest = np.flatnonzero(ag == 1)
    k = max(0, limit - len(disagree))
    if len(rest) > k:
        rest = rest[np.linspace(0, len(rest) - 1, k).astype(int)] if k else rest[:0]
    pick = np.sort(np.concatenate([disagree, rest]))
    return {
        "primary": p[pick].tolist(),
        "shadow": s[pick].tolist(),
        "agree": ag[pick].astype(bool).tolist(),
    }


def _delta_histogram(chosen: Sequence[Entry], bins: int = 40) -> dict[str, list[float]]:
    """Histogram of shadow score - primary score (signed) over the aggregate's window."""
    p = np.concatenate([np.asarray(e["p"], dtype=float) for e in chosen])
    s = np.concatenate([np.asarray(e["s"], dtype=float) for e in chosen])
    d = s - p
    span = max(float(np.abs(d).max()), 1e-6)
    counts, edges = np.histogram(d, bins=bins, range=(-span, span))
    return {
        "centers": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "counts": counts.astype(int).tolist(),
        "width": float(edges[1] - edges[0]),
    }


def shadow_page(
    cfg: PipelineConfig,
    entries: Mapping[str, Sequence[Entry]],
    counts: Mapping[str, Mapping[str, int]],
    drift: DriftState | None,
    *,
    scatter_max: int = 1500,
) -> dict[str, Any]:
    """Per shadow: the promotion window's aggregate, the gates and verdict (the gated shadow
    only, as ``raylane promote`` evaluates them), the series over time, |Δ| and pairs."""
    gated = cfg.promotion.shadow or (cfg.models.shadows[0].name if cfg.models.shadows else None)
    shadows = []
    for s in cfg.models.shadows:
        es = list(entries.get(s.name, ()))
        agg = aggregate(s.name, es, window=cfg.promotion.window, counts=counts.get(s.name))
        gates = (
            evaluate_gates(cfg.name, agg, cfg.promotion, lambda _p: drift)
            if s.name == gated
            else []
        )
        chosen = newest_pair(es, cfg.promotion.window)
        shadows.append(
            {
                "name": s.name,
                "gated": s.name == gated,
                "aggregate": {k: _jsonable(v) for k, v in agg.to_dict().items()},
                "gates": [{**g.to_dict(), "text": g.describe()} for g in gates],
                "verdict": verdict(gates) if s.name == gated else "not gated",
                "timeline": _timeline(list(reversed(es))),
                "delta_histogram": _delta_histogram(chosen) if chosen else None,
                "scatter": _scatter(chosen, scatter_max) if chosen else None,
            }
        )
    return {
        "pipeline": cfg.name,
        "window": cfg.promotion.window,
        "primary": cfg.models.primary.uri,
        "shadows": shadows,
    }


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return _num(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


# ----------------------------------------------------------------------------- pipeline

#: Per-batch stages of ``raylane_stage_latency_ms`` in the order of the data path.
STAGES = (
    "queue_ms",
    "decode_ms",
    "window_ms",
    "online_ms",
    "features_ms",
    "score_ms",
    "encode_ms",
    "publish_ms",
    "commit_ms",
    "batch_ms",
)


def _partition_key(name: str) -> tuple[str, int]:
    """``topic[3]`` -> ("topic", 3), so partitions sort by number (a bare "3" too)."""
    m = re.fullmatch(r"(.*?)\[?(\d+)\]?", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def _partition_labels(names: Sequence[str]) -> dict[str, str]:
    """Short labels: ``p3`` while every partition is of one topic, else the full name."""
    topics = {_partition_key(n)[0] for n in names}
    if len(topics) > 1:
        return {n: n for n in names}
    return {n: f"p{_partition_key(n)[1]}" if _partition_key(n)[1] >= 0 else n for n in names}


def _stage_order(stage: str) -> tuple[int, str]:
    return (STAGES.index(stage) if stage in STAGES else len(STAGES), stage)


def pipeline_page(cfg: PipelineConfig, history: MetricsHistory) -> dict[str, Any]:
    """Throughput, lag, latencies, batch sizes, breakers, pauses and DLQ of the ingress."""
    m = history.latest
    default = cfg.decision.default
    by_decision = totals_by(m, "raylane_events_scored_total", "decision")
    scored = sum(by_decision.values())
    times, rates_in = history.rate_series("raylane_events_in_total")
    _, rates_dec = history.rate_series("raylane_events_scored_total", by="decision")
    _, rates_dlq = history.rate_series("raylane_events_dlq_total")
    n = len(times)
    zero = [0.0] * n
    scored_rate = [sum(v[i] for v in rates_dec.values()) for i in range(n)]
    flagged_rate = [sum(v[i] for d, v in rates_dec.items() if d != default) for i in range(n)]
    stages = sorted(totals_by(m, "raylane_stage_latency_ms_count", "stage"), key=_stage_order)
    batches = total(m, "raylane_batch_size_count")
    lag = dict(
        sorted(
            totals_by(m, "raylane_consumer_lag", "partition").items(),
            key=lambda kv: _partition_key(kv[0]),
        )
    )
    e2e_t, e2e_p50 = history.quantile_series("raylane_event_to_scored_latency_ms", 0.5)
    _, e2e_p99 = history.quantile_series("raylane_event_to_scored_latency_ms", 0.99)
    return {
        "pipeline": cfg.name,
        "totals": {
            "in": total(m, "raylane_events_in_total"),
            "scored": scored,
            "flagged": scored - by_decision.get(default, 0.0),
            "dlq": total(m, "raylane_events_dlq_total"),
            "batches": total(m, "raylane_batches_total"),
            "commits": total(m, "raylane_offset_commits_total"),
        },
        "rates": {
            "t": times,
            "in": rates_in.get("", zero),
            "scored": scored_rate,
            "flagged": flagged_rate,
            "dlq": rates_dlq.get("", zero),
        },
        "lag": lag,
        "lag_labels": _partition_labels(list(lag)),
        "stages": {
            st: {
                "p50": _num(quantile(m, "raylane_stage_latency_ms", 0.5, {"stage": st})),
                "p99": _num(quantile(m, "raylane_stage_latency_ms", 0.99, {"stage": st})),
            }
            for st in stages
        },
        "event_to_scored": {
            "p50": _num(quantile(m, "raylane_event_to_scored_latency_ms", 0.5)),
            "p99": _num(quantile(m, "raylane_event_to_scored_latency_ms", 0.99)),
            "t": e2e_t,
            "p50_series": e2e_p50,
            "p99_series": e2e_p99,
        },
        "batch_size": {
            "mean": total(m, "raylane_batch_size_sum") / batches if batches else None,
            "p50": _num(quantile(m, "raylane_batch_size", 0.5)),
            "p99": _num(quantile(m, "raylane_batch_size", 0.99)),
        },
        "paused_replicas": total(m, "raylane_consumer_paused"),
        "breakers": totals_by(m, "raylane_breaker_open", "dependency"),
        "seconds_since_commit": max(
            totals_by(m, "raylane_seconds_since_commit", "").values(), default=None
        ),
        "retries": totals_by(m, "raylane_batch_retries_total", "stage"),
        "dlq_by_class": totals_by(m, "raylane_events_dlq_total", "error_class"),
        "publish_rejected": totals_by(m, "raylane_publish_rejected_total", "record"),
        "scraped": bool(m),
    }


# ----------------------------------------------------------------------------- drift


def drift_page(
    cfg: PipelineConfig,
    state: DriftState | None,
    windows: Sequence[Mapping[str, Any]],
    reports: Sequence[str],
) -> dict[str, Any]:
    """The open alert, and per-column scores of the serving version's windows, oldest first.

    `reports` are the report file names that still exist (the monitor prunes old ones); a
    window links its report only while it does.
    """
    version = state.model_version if state else (windows[0]["model_version"] if windows else "")
    mine = [w for w in reversed(windows) if str(w.get("model_version")) == str(version)]
    columns: list[str] = []
    for w in mine:
        for c in w.get("columns", []):
            if c["column"] not in columns:
                columns.append(c["column"])
    scores: list[list[float | None]] = []
    thresholds: dict[str, float] = {}
    for col in columns:
        row: list[float | None] = []
        for w in mine:
            hit = next((c for c in w.get("columns", []) if c["column"] == col), None)
            row.append(_num(float(hit["score"])) if hit else None)
            if hit:
                thresholds[col] = float(hit["threshold"])
        scores.append(row)
    existing = set(reports)
    return {
        "pipeline": cfg.name,
        "configured": cfg.drift is not None,
        "state": None if state is None else {**state.__dict__},
        "model_version": str(version),
        "windows": [
            {
                "end": w["window_end"],
                "count": w["count"],
                "drift_share": w["drift_share"],
                "threshold": w["threshold"],
                "drifted": w["drifted"],
                "drifted_columns": [c["column"] for c in w.get("columns", []) if c["drifted"]],
                "report": w.get("report") if w.get("report") in existing else None,
            }
            for w in mine
        ],
        "columns": columns,
        "scores": scores,
        "thresholds": thresholds,
        "reports": sorted(existing, reverse=True),
    }


# ----------------------------------------------------------------------------- actions


def actions_page(
    cfg: PipelineConfig,
    samples: Mapping[str, float],
    models: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Action outcomes per handler, breakers, the prediction cache; model versions, aliases
    and the promotion history (from MLflow)."""
    outcomes: dict[str, dict[str, float]] = {}
    for key, v in samples.items():
        name, labels = parse_key(key)
        if name == "raylane_actions_total":
            per = outcomes.setdefault(labels.get("handler", ""), {})
            outcome = labels.get("outcome", "")
            per[outcome] = per.get(outcome, 0.0) + v
    handlers = [
        {"topic": t.topic, "handler": h.type}
        for t in (cfg.actions.topics if cfg.actions else [])
        for h in t.handlers
    ]
    return {
        "pipeline": cfg.name,
        "handlers": handlers,
        "outcomes": outcomes,
        "retries": totals_by(samples, "raylane_action_retries_total", "handler"),
        "breakers": totals_by(samples, "raylane_action_breaker_open", "handler"),
        "action_dlq": totals_by(samples, "raylane_action_dlq_total", "topic"),
        "cache_hit_rate": totals_by(samples, "raylane_prediction_cache_hit_rate", "deployment"),
        "model_swaps": totals_by(samples, "raylane_model_swaps_total", "deployment"),
        "models": dict(models),
        "history": [dict(e) for e in history],
    }
