"""The per-event design the seed sketches, as the bench's baseline.

A FastAPI service wrapping the same champion model: one HTTP POST per event,
one `FeatureStore.get_online_features` call per event, the window features
updated through the same Redis script one event at a time, the same derived columns,
one model call per event. Run by bench/pipeline.py as `uvicorn bench.baseline_service:app`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import FastAPI

from raylane.config import load_serve_config
from raylane.features import FeastRepo, RedisWindowStore, feature_store
from raylane.features.derived import compute_derived
from raylane.registry import load_model
from raylane.settings import Settings

CONFIG = "serve_configs/fraud.yaml"

app = FastAPI(title="per-event fraud scoring baseline")
_state: dict[str, Any] = {}


@app.on_event("startup")
async def _load() -> None:
    import redis.asyncio as aioredis

    settings = Settings.load()
    _, cfg = load_serve_config(CONFIG)
    repo = FeastRepo.load(cfg.features.feast_repo, redis_url=settings.redis_url)
    _state["cfg"] = cfg
    _state["store"] = feature_store(repo)
    _state["refs"] = [f"{v.view}:{f}" for v in cfg.features.online for f in v.features]
    _state["windows"] = RedisWindowStore(
        aioredis.from_url(settings.redis_url), cfg.name, cfg.features.windows
    )
    # the same columns the pipeline scores with; a model needing another is refused here
    _state["model"] = load_model(
        cfg.models.primary.uri, nthread=1, required_columns=cfg.features.columns()
    )


@app.post("/score")
async def score(event: dict[str, Any]) -> dict[str, Any]:
    cfg = _state["cfg"]
    t0 = time.perf_counter()
    rows = {v.key: event[v.entity_field] for v in cfg.features.online}
    online = (
        _state["store"]
        .get_online_features(features=_state["refs"], entity_rows=[rows], full_feature_names=True)
        .to_dict()
    )
    cols: dict[str, np.ndarray] = {f: np.array([float(event[f])]) for f in cfg.features.event}
    for name, values in online.items():
        if "__" in name:
            cols[name] = np.array([np.nan if values[0] is None else float(values[0])])
    cols.update(await _state["windows"].update_and_read([event]))
    if cfg.features.derived:
        compute_derived(cols, cfg.features.derived)
    s = float(_state["model"].predict(cols)[0])
    return {
        "event_id": event["event_id"],
        "score": s,
        "flagged": s > 0.85,
        "latency_ms": (time.perf_counter() - t0) * 1000,
    }
