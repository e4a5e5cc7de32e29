"""Shadow sampling, comparison records and rolling aggregates (no services)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from raylane.config import DecisionConfig, DecisionRule
from raylane.contracts import Codec
from raylane.lifecycle.shadow import compare, sample_job, sample_mask
from raylane.lifecycle.shadow_stats import MAX_BATCHES, LocalShadowWindow, aggregate, batch_entry
from raylane.pipeline.decision import DecisionEngine
from raylane.pipeline.processor import Prediction, ShadowJob

ENGINE = DecisionEngine(
    DecisionConfig(rules=(DecisionRule(name="high", when="score > 0.85", decision="flagged"),))
)


def _job(p: np.ndarray, ids: list[str] | None = None) -> ShadowJob:
    ids = ids or [f"e{i}" for i in range(len(p))]
    events = [
        {"event_id": e, "correlation_id": f"c-{e}", "event_time": 1_700_000_000_000} for e in ids
    ]
    dec = ENGINE.decide(p, {}).decision
    return ShadowJob(
        {"amount": np.arange(len(p), dtype=np.float64)},
        events,
        Prediction(p, "fraud", "1", 2.0),
        list(dec),
    )


def test_sampling_is_deterministic_and_close_to_the_fraction() -> None:
    ids = [f"evt-{i}" for i in range(20_000)]
    m1 = sample_mask(ids, 0.25)
    m2 = sample_mask(list(reversed(ids)), 0.25)[::-1]
    assert (m1 == m2).all()  # depends on the id only, not on position or batch
    assert 0.23 < m1.mean() < 0.27
    assert sample_mask(ids, 1.0).all()
    # a smaller fraction samples a subset of a larger one (same hash threshold)
    assert not (sample_mask(ids, 0.1) & ~m1).any()


def test_sample_job_keeps_rows_aligned() -> None:
    p = np.linspace(0, 1, 400)
    job = _job(p)
    sub = sample_job(job, 0.3)
    idx = [int(e["event_id"][1:]) for e in sub.events]
    assert 0 < len(idx) < 400
    assert np.allclose(sub.primary.scores, p[idx])
    assert np.allclose(sub.columns["amount"], np.asarray(idx, dtype=np.float64))
    assert sub.primary_decisions == [job.primary_decisions[i] for i in idx]


def test_compare_records_fit_the_evolved_contract() -> None:
    p = np.array([0.1, 0.9, 0.5, 0.86])
    s = np.array([0.12, 0.5, 0.5, 0.95])
    recs, agree, delta = compare(
        _job(p),
        Prediction(s, "fraud", "2", 3.0),
        ENGINE,
        "fraud",
        primary_label="champion",
        shadow_label="challenger",
        sample_fraction=0.5,
    )
    assert agree == 3 and [r["agreement"] for r in recs] == [True, False, True, True]
    assert np.allclose(delta, np.abs(p - s))
    assert recs[1]["primary_decision"] == "flagged" and recs[1]["shadow_decision"] == "approved"
    assert recs[0]["shadow_label"] == "challenger" and recs[0]["sample_fraction"] == 0.5
    codec = Codec.for_contract("fraud.shadow")
    back = codec.decode(codec.encode({f: recs[1].get(f) for f in codec.field_names}))
    assert back["shadow_version"] == "2" and back["primary_label"] == "champion"
    assert back["abs_delta"] == pytest.approx(0.4) and back["shadow_latency_ms"] == 3.0


def _entry(
    p: list[float], s: list[float], pv: str = "1", sv: str = "2", pl: float = 2.0, sl: float = 3.0
) -> dict:
    pa, sa = np.asarray(p), np.asarray(s)
    recs, _, _ = compare(_job(pa), Prediction(sa, "fraud", sv, sl), ENGINE, "fraud")
    for r in recs:
        r["primary_version"] = pv
        r["primary_latency_ms"] = pl
    return batch_entry(recs, "approved")


def test_aggregate_figures_match_numpy() -> None:
    rng = np.random.default_rng(7)
    entries = []
    all_p, all_s, pls, sls = [], [], [], []
    for i in range(40):
        p = rng.uniform(0, 1, 50)
        s = np.clip(p + rng.normal(0, 0.05, 50), 0, 1)
        entries.append(_entry(p.tolist(), s.tolist(), pl=1.0 + i, sl=2.0 + 2 * i))
        all_p.append(p)
        all_s.append(s)
        pls.append(1.0 + i)
        sls.append(2.0 + 2 * i)
    newest_first = list(reversed(entries))
    agg = aggregate("challenger", newest_first, counts={"errors": 2, "timeouts": 1})
    p, s = np.round(np.concatenate(all_p), 6), np.round(np.concatenate(all_s), 6)
    d = np.abs(p - s)
    assert agg.n == 2000 and agg.batches == 40
    assert agg.mean_abs_delta == pytest.approx(d.mean())
    assert agg.p95_abs_delta == pytest.approx(np.percentile(d, 95))
    assert agg.agreement_rate == pytest.approx(np.mean((p > 0.85) == (s > 0.85)))
    assert agg.primary_flag_rate == pytest.approx(np.mean(p > 0.85))
    assert agg.shadow_flag_rate == pytest.approx(np.mean(s > 0.85))
    assert agg.primary_latency_p99_ms == pytest.approx(np.percentile(pls, 99))
    assert agg.shadow_latency_p50_ms == pytest.approx(np.percentile(sls, 50))
    assert agg.latency_p99_ratio == pytest.approx(np.percentile(sls, 99) / np.percentile(pls, 99))
    assert (agg.errors, agg.timeouts) == (2, 1)
    assert agg.to_dict()["latency_p99_ratio"] == agg.latency_p99_ratio


def test_aggregate_uses_only_the_newest_version_pair_and_the_window() -> None:
    old = [_entry([0.1] * 10, [0.9] * 10, pv="1", sv="2") for _ in range(5)]
    new = [_entry([0.2] * 10, [0.2] * 10, pv="2", sv="3") for _ in range(5)]
    agg = aggregate("challenger", list(reversed(old + new)))
    assert (agg.primary_version, agg.shadow_version, agg.n) == ("2", "3", 50)
    assert agg.agreement_rate == 1.0 and agg.p95_abs_delta == 0.0
    assert aggregate("challenger", list(reversed(new)), window=20).n == 20
    empty = aggregate("challenger", [])
    assert empty.n == 0 and empty.agreement_rate is None and empty.latency_p99_ratio is None


def test_local_window_tracks_the_newest() -> None:
    w = LocalShadowWindow("challenger", window=30)
    for _ in range(5):
        agg = w.add(_entry([0.5] * 10, [0.6] * 10))
    assert agg.n == 30 and agg.mean_abs_delta == pytest.approx(0.1)


def test_fraud_shadow_v2_is_backward_and_forward_compatible_with_v1() -> None:
    import avro.schema
    from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

    from raylane.contracts import FileSchemaRegistry

    reg = FileSchemaRegistry()
    v1 = avro.schema.parse(reg.get_version("fraud.shadow-value", 1).text)
    latest = reg.latest("fraud.shadow-value")
    assert latest.version >= 2
    v2 = avro.schema.parse(latest.text)
    check = ReaderWriterCompatibilityChecker().get_compatibility
    ok = SchemaCompatibilityType.compatible
    assert check(reader=v2, writer=v1).compatibility == ok  # new readers read old records
    assert check(reader=v1, writer=v2).compatibility == ok  # old readers read new records


def test_local_window_equals_the_full_aggregate_over_the_same_entries() -> None:
    """The incremental window gives what aggregate() gives over the newest entries."""
    import random

    rng = random.Random(7)
    w = LocalShadowWindow("challenger", window=200)
    entries: list[dict[str, Any]] = []
    for i in range(400):
        k = rng.choice([1, 2, 3, 17, 60])
        e = _entry(
            [rng.random() for _ in range(k)],
            [rng.random() for _ in range(k)],
            pv="1" if i < 250 else "2",
            sv="3",
        )
        e["pl"], e["sl"], e["t"] = rng.uniform(1, 30), rng.uniform(1, 60), 1000.0 + i
        entries.insert(0, e)
        got = w.add(e)
        want = aggregate("challenger", entries[:MAX_BATCHES], window=200)
        g, x = got.to_dict(), want.to_dict()
        assert g.keys() == x.keys()
        for key in g:
            if isinstance(x[key], float):
                assert g[key] == pytest.approx(x[key], rel=1e-12), (i, key)
            else:
                assert g[key] == x[key], (i, key)
    assert got.primary_version == "2" and 200 <= got.n < 260


def test_local_window_keeps_at_most_max_batches() -> None:
    w = LocalShadowWindow("challenger", window=10**9)
    for _ in range(MAX_BATCHES + 50):
        agg = w.add(_entry([0.5], [0.5]))
    assert agg.batches == MAX_BATCHES and agg.n == MAX_BATCHES
