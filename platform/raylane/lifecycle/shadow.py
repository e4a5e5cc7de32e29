"""Shadow comparison: a shadow's scores beside the primary's, per event.

Runs off the critical path (the ingress never awaits it before committing):
a slow or failing shadow only costs its own comparisons, which are counted.
A shadow may see only a fraction of the traffic: :func:`sample_mask` picks the
events by a hash of their ``event_id``, so every replica and every shadow with
the same fraction compares the same events.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from raylane.config import EventTimeConfig
from raylane.pipeline.decision import DecisionEngine
from raylane.pipeline.processor import Prediction, ShadowJob

__all__ = ["compare", "sample_job", "sample_mask"]

_HASH_SPACE = float(1 << 32)


def sample_mask(event_ids: Sequence[str], fraction: float) -> np.ndarray:
    """True for the events a shadow with `fraction` scores (deterministic per event_id)."""
    if fraction >= 1.0:
        return np.ones(len(event_ids), dtype=bool)
    h = np.fromiter(
        (zlib.crc32(str(e).encode()) for e in event_ids), dtype=np.float64, count=len(event_ids)
    )
    return np.asarray(h / _HASH_SPACE < fraction)


def sample_job(job: ShadowJob, fraction: float) -> ShadowJob:
    """The part of a shadow job a shadow with `fraction` sees (the job itself at 1.0)."""
    if fraction >= 1.0:
        return job
    mask = sample_mask([ev["event_id"] for ev in job.events], fraction)
    idx = np.flatnonzero(mask)
    p = job.primary
    return ShadowJob(
        columns={k: v[idx] for k, v in job.columns.items()},
        events=[job.events[i] for i in idx.tolist()],
        primary=Prediction(p.scores[idx], p.model_name, p.model_version, p.latency_ms),
        primary_decisions=[job.primary_decisions[i] for i in idx.tolist()],
        trace_link=job.trace_link,
    )


def compare(
    job: ShadowJob,
    shadow: Prediction,
    engine: DecisionEngine,
    pipeline: str,
    *,
    primary_label: str = "",
    shadow_label: str = "",
    sample_fraction: float = 1.0,
    event_time: EventTimeConfig | None = None,
) -> tuple[list[dict[str, Any]], int, np.ndarray]:
    """Comparison records for one batch, the number of agreements, and |Δ| per event."""
    p = job.primary.scores.astype(np.float64)
    s = shadow.scores.astype(np.float64)
    if len(s) != len(p):
        raise ValueError(f"shadow {shadow.model_name} returned {len(s)} scores for {len(p)} events")
    shadow_dec = engine.decide(s, job.columns).decision
    delta = np.abs(p - s)
    now_ms = int(time.time() * 1000)
    et = event_time or EventTimeConfig()
    out = []
    agree = 0
    p_l, s_l, d_l = p.tolist(), s.tolist(), delta.tolist()
    for i, ev in enumerate(job.events):
        same = job.primary_decisions[i] == shadow_dec[i]
        agree += same
        out.append(
            {
                "event_id": ev["event_id"],
                "correlation_id": ev["correlation_id"],
                "pipeline": pipeline,
                "event_time": et.ms_or_none(ev),
                "primary_model": job.primary.model_name,
                "primary_version": job.primary.model_version,
                "primary_score": p_l[i],
                "primary_decision": job.primary_decisions[i],
                "shadow_model": shadow.model_name,
                "shadow_version": shadow.model_version,
                "shadow_score": s_l[i],
                "shadow_decision": shadow_dec[i],
                "agreement": same,
                "abs_delta": d_l[i],
                "primary_latency_ms": job.primary.latency_ms,
                "shadow_latency_ms": shadow.latency_ms,
                "compared_at": now_ms,
                "primary_label": primary_label,
                "shadow_label": shadow_label,
                "sample_fraction": sample_fraction,
            }
        )
    return out, agree, delta
