"""Point-in-time feature values for training: Feast's ``get_historical_features``.

Serving reads each event's profile features from the online store as they are at that
moment; a training row must see the values as they were at the event's time, not today's.
:func:`historical_online_columns` asks Feast's offline store for exactly that (a
point-in-time join of the events against the views' sources, each view's TTL honoured)
and returns the columns in the events' order, named as serving names them
(``<view>__<feature>``), so :func:`raylane.training.training_set` can build rows that
equal what the pipeline would have scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from raylane.config import EventTimeConfig, FeaturesConfig
from raylane.errors import ConfigError

__all__ = ["historical_online_columns"]

_ROW = "__raylane_row"


def historical_online_columns(
    events: Sequence[Mapping[str, Any]],
    features: FeaturesConfig,
    *,
    event_time: EventTimeConfig | None = None,
    repo: Any = None,
) -> dict[str, np.ndarray]:
    """Column -> float64 values of every ``features.online`` feature for `events`, in order.

    One ``get_historical_features`` call over all views (the entity frame holds each event's
    join keys and its event time); a key the source lacks at that time is NaN, as a missing
    online value is in serving. `repo` is a :class:`~raylane.features.FeastRepo` or a path
    (default ``features.feast_repo``).
    """
    from raylane.features.feast_repo import feature_store

    if not features.online:
        return {}
    et = event_time or EventTimeConfig()
    rows: dict[str, Any] = {_ROW: np.arange(len(events))}
    for v in features.online:
        rows[v.key] = [str(e.get(v.entity_field)) for e in events]
    rows["event_timestamp"] = pd.to_datetime([et.ms(e) for e in events], unit="ms", utc=True)
    entity_df = pd.DataFrame(rows)
    refs = [f"{v.view}:{f}" for v in features.online for f in v.features]
    store = feature_store(repo if repo is not None else features.feast_repo)
    try:
        got = store.get_historical_features(
            entity_df=entity_df, features=refs, full_feature_names=True
        ).to_df()
    except Exception as e:  # Feast's own errors, wrapped once with the fix
        raise ConfigError(
            f"Feast could not join {len(refs)} features for {len(events)} events ({e}); "
            "are the views applied and their sources written (`raylane bootstrap`)?",
            stage="features",
        ) from e
    # Feast's file offline store leaves out an entity row that no view has a value for at
    # its time (e.g. an event before every snapshot); such a row is missing everywhere
    got = got.drop_duplicates(_ROW).set_index(_ROW).reindex(np.arange(len(events)))
    out: dict[str, np.ndarray] = {}
    for v in features.online:
        for col in v.columns():
            out[col] = pd.to_numeric(got[col], errors="coerce").to_numpy(dtype=np.float64)
    return out
