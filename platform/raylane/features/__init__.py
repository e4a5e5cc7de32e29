"""raylane.features: online feature reads, streaming window aggregates, Feast integration.

* :class:`OnlineFeatureReader` reads Feast views from Redis for a whole batch in one
  round trip (Feast's own key layout).
* :class:`RedisWindowStore` updates and reads window features (count / sum over a
  sliding event-time window, first_seen) for a batch in one atomic round trip;
  :class:`ReferenceWindowState` is the pure-Python definition it is tested against.
* :func:`categorical_columns` encodes categorical event fields (one-hot / ordinal), the
  same in training and serving.
* :class:`FeastRepo`, :func:`write_sources`, :func:`apply`, :func:`materialize`:
  what `raylane bootstrap` runs.

Names that need Feast are imported on first use (Feast takes seconds to import), so
window features and unit tests do not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from raylane.features._redis_window import RedisWindowStore
from raylane.features.categorical import categorical_columns, encode_categorical
from raylane.features.window import (
    LATENESS_S,
    ReferenceWindowState,
    reference_window_features,
    window_key,
)

if TYPE_CHECKING:
    from raylane.features.feast_repo import (
        DEFAULT_REPO,
        FeastRepo,
        RepoLike,
        SourceSchema,
        apply,
        feast_connection_string,
        feature_store,
        materialize,
        source_schemas,
        teardown,
        write_sources,
    )
    from raylane.features.online import OnlineFeatureReader

_LAZY = {
    "OnlineFeatureReader": "raylane.features.online",
    **{
        name: "raylane.features.feast_repo"
        for name in (
            "DEFAULT_REPO",
            "FeastRepo",
            "RepoLike",
            "SourceSchema",
            "apply",
            "feast_connection_string",
            "feature_store",
            "materialize",
            "source_schemas",
            "teardown",
            "write_sources",
        )
    },
}

__all__ = [
    "DEFAULT_REPO",
    "LATENESS_S",
    "FeastRepo",
    "OnlineFeatureReader",
    "RedisWindowStore",
    "ReferenceWindowState",
    "RepoLike",
    "SourceSchema",
    "apply",
    "categorical_columns",
    "encode_categorical",
    "feast_connection_string",
    "feature_store",
    "materialize",
    "reference_window_features",
    "source_schemas",
    "teardown",
    "window_key",
    "write_sources",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'raylane.features' has no attribute {name!r}")
