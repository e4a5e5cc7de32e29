"""Window state for e2e modules: every module's app keeps the pipeline's name, and so its
Redis window state, which earlier modules' traffic wrote too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from raylane.config import PipelineConfig
from raylane.features import RedisWindowStore
from raylane.redis_clients import connect
from raylane.settings import Settings


async def forget(args: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> int:
    """Delete the window state `events`' keys hold (a user's counts and sums, a user-merchant
    pair's first_seen) in the app's namespace, so the events meet the state a first visit
    does; returns the number of keys deleted."""
    cfg = PipelineConfig.from_args(dict(args))
    client = connect(Settings.load().redis_url)
    try:
        store = RedisWindowStore.for_pipeline(client, cfg)
        return await store.forget(events)
    finally:
        await client.aclose()
