"""Shadow comparison: a shadow's scores beside the primary's, per event.

Runs off the critical path (the ingress never awaits it before committing):
a slow or failing shadow only costs its own comparisons, which are counted.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from raylane.decision import DecisionEngine
from raylane.ingest.processor import Prediction, ShadowJob

__all__ = ["compare"]


def compare(
    job: ShadowJob, shadow: Prediction, engine: DecisionEngine, pipeline: str
) -> tuple[list[dict[str, Any]], int, np.ndarray]:
    """Comparison records for one batch, the number of agreements, and |Δ| per event."""
    p = job.primary.scores.astype(np.float64)
    s = shadow.scores.astype(np.float64)
    if len(s) != len(p):
        raise ValueError(f"shadow {shadow.model_name} returned {len(s)} scores for {len(p)} events")
    shadow_dec = engine.decide(s, job.columns).decision
    delta = np.abs(p - s)
    now_ms = int(time.time() * 1000)
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
                "event_time": ev.get("event_time"),
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
            }
        )
    return out, agree, delta
