"""Codec throughput: µs/event for encode, encode_many, decode, decode_batch and JSON decode.

Run on demand: ``.venv/bin/python bench/contracts_codec.py [N]``. Single process, one core;
figures are medians of 5 runs on the same machine, printed with their ratio to the
5,000 events/s/core budget of the whole hot path (200 µs/event).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

from raylane.contracts import Codec

T0 = 1_700_000_000_123


def _initiated(i: int) -> dict:
    return {
        "event_id": f"5b0d7c1e-3f4a-4c1b-9a8e-{i:012d}",
        "correlation_id": f"c-{i}",
        "user_id": f"u-{i % 5000:06d}",
        "merchant_id": f"m-{i % 300:04d}",
        "merchant_category": "electronics",
        "amount": 10.0 + i % 500,
        "currency": "EUR",
        "user_history_hash": "3f786850e387550fdab836ed7e6dc881de23001b",
        "event_time": T0 + i,
    }


def _scored(ev: dict) -> dict:
    return {
        **{
            k: ev[k]
            for k in (
                "event_id",
                "correlation_id",
                "user_id",
                "merchant_id",
                "amount",
                "currency",
                "event_time",
            )
        },
        "pipeline": "fraud",
        "score": 0.42,
        "decision": "approved",
        "rule": None,
        "model_name": "fraud",
        "model_version": "3",
        "features": {
            "amount": ev["amount"],
            "risk_score": 0.4,
            "avg_amount": 55.0,
            "txn_count_30d": 12.0,
            "account_age_days": 400.0,
            "category_risk": 0.2,
            "fraud_rate_90d": None,
            "user_txn_count_60s": 3.0,
            "user_amount_sum_60s": 120.0,
            "user_merchant_first_seen": 0.0,
        },
        "latency_ms": {"decode": 0.01, "features": 1.2, "score": 3.4, "total": 5.1},
        "scored_at": ev["event_time"] + 7,
    }


def _us_per_event(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / n * 1e6


def main(n: int = 20_000) -> None:
    inp = Codec.for_contract("payments.initiated", formats=("avro", "json"))
    out = Codec.for_contract("payments.scored")
    events = [_initiated(i) for i in range(n)]
    scored = [_scored(e) for e in events]
    raws = [inp.encode(e) for e in events]
    jsons = [json.dumps(e).encode() for e in events]
    scored_raws = out.encode_many(scored)
    rows = [
        ("encode payments.initiated (validated)", lambda: [inp.encode(e) for e in events]),
        ("encode payments.scored (validated)", lambda: [out.encode(r) for r in scored]),
        ("encode_many payments.scored", lambda: out.encode_many(scored)),
        ("decode payments.initiated", lambda: [inp.decode(r) for r in raws]),
        ("decode_batch payments.initiated", lambda: inp.decode_batch(raws)),
        ("decode payments.initiated from JSON", lambda: inp.decode_batch(jsons)),
        ("decode_batch payments.scored", lambda: out.decode_batch(scored_raws)),
    ]
    print(f"{n} events per run, median of 5, {sys.version.split()[0]}")
    for name, fn in rows:
        us = _us_per_event(fn, n)
        print(
            f"{name:40s} {us:7.2f} µs/event  {1e6 / us:>10,.0f} events/s  "
            f"{us / 200 * 100:5.1f}% of the 200 µs/event budget"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
