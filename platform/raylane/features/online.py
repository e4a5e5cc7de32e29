"""Batch reads of Feast online features from Redis: all views, all entities, one round trip.

:class:`OnlineFeatureReader` reads Feast's own Redis layout (Feast 0.67,
``feast/infra/online_stores/redis.py``): one hash per entity key, named
``serialize_entity_key(key, v3) + project``, with one field per feature named
``_mmh3("<view>:<feature>")`` holding a serialized ``ValueProto`` and a
``_ts:<view>`` field holding the row's event time. Feast's helpers build the names;
everything that depends only on the config (views, field names, value types) is
resolved once, at construction. A batch deduplicates its entities, sends one
``HMGET`` per (entity key, hash) in a single pipelined write, and decodes the values into
float64 columns named ``<view>__<feature>`` (missing → NaN), or into exactly what
``FeatureStore.get_online_features(..., full_feature_names=True).to_dict()`` returns.

Views sharing an entity share Feast's hash, so their fields come back in one HMGET.
Like Feast's Redis store, a row is returned whatever its age; ``enforce_ttl=True``
treats rows older than the view's TTL as missing instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import numpy as np
import redis.asyncio as aioredis
from feast import FeatureStore
from feast.errors import FeatureViewNotFoundException
from feast.infra.online_stores.helpers import _mmh3, _redis_key, compute_versioned_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from raylane.config import OnlineFeatureView
from raylane.errors import ConfigError
from raylane.features._redis import client_url, connect, redis_errors, roundtrip
from raylane.features.feast_repo import RepoLike, _repo
from raylane.settings import Settings

__all__ = ["OnlineFeatureReader"]

_NUMERIC = {ValueType.DOUBLE, ValueType.FLOAT, ValueType.INT64, ValueType.INT32, ValueType.BOOL}
_NAN = math.nan


@dataclass
class _View:
    """One configured view: its columns and where its fields sit in the group's HMGET."""

    name: str
    columns: list[str]
    features: list[str]
    value_types: list[ValueType]
    first: int  # index of its first feature field in the group's field list
    ts_index: int
    ttl_s: float | None


@dataclass
class _Group:
    """Views read from the same Redis hash: same event field, join key and key type."""

    entity_field: str
    join_key: str
    value_type: ValueType
    fields: list[str | bytes] = field(default_factory=list)
    views: list[_View] = field(default_factory=list)
    key_cache: dict[Any, bytes] = field(default_factory=dict)


class OnlineFeatureReader:
    """Reads the configured Feast views for a whole batch in one pipelined round trip.

    Args:
        store: the Feast FeatureStore (its registry must hold the views: `raylane bootstrap`).
        views: the pipeline's ``features.online`` section.
        redis: an asyncio Redis client (one Redis, not a cluster); default: a client of
            its own on `redis_url` (default REDIS_URL), closed by :meth:`aclose`.
        enforce_ttl: treat rows older than the view's TTL as missing (Feast does not).
        key_cache_size: entity keys whose serialized Redis key is kept between batches.
    """

    def __init__(
        self,
        store: FeatureStore,
        views: Sequence[OnlineFeatureView],
        redis: aioredis.Redis | None = None,
        *,
        redis_url: str | None = None,
        enforce_ttl: bool = False,
        key_cache_size: int = 100_000,
    ) -> None:
        cfg = store.config
        self.project: str = cfg.project
        self._version: int = cfg.entity_key_serialization_version
        self.redis_url: str
        if redis is None:
            self.redis_url = redis_url or Settings.load().redis_url
            self._redis, self._owns_client = connect(self.redis_url), True
        else:
            self.redis_url = redis_url or client_url(redis)
            self._redis, self._owns_client = redis, False
        self._enforce_ttl = enforce_ttl
        self._cache_size = key_cache_size
        versioning = bool(getattr(cfg.registry, "enable_online_feature_view_versioning", False))
        self._groups: dict[tuple[str, str], _Group] = {}
        self.columns: list[str] = []
        self.feature_refs: list[str] = []
        for v in views:
            self._add_view(store, v, versioning)

    @classmethod
    def from_repo(
        cls,
        repo: RepoLike,
        views: Sequence[OnlineFeatureView],
        redis: aioredis.Redis | None = None,
        **kwargs: Any,
    ) -> OnlineFeatureReader:
        """A reader on the Feast repo at `repo` (a path or FeastRepo), Redis from its settings."""
        r = _repo(repo)
        kwargs.setdefault("redis_url", r.redis_url)
        return cls(r.store(), views, redis, **kwargs)

    def _add_view(self, store: FeatureStore, v: OnlineFeatureView, versioning: bool) -> None:
        try:
            fv = store.get_feature_view(v.view)
        except FeatureViewNotFoundException as e:
            raise ConfigError(
                f"feature view {v.view} does not exist in project {self.project}; "
                "run `raylane bootstrap`",
                stage="features",
            ) from e
        entity_types = {c.name: c.dtype.to_value_type() for c in fv.entity_columns}
        if v.key not in entity_types or len(entity_types) != 1:
            raise ConfigError(
                f"feature view {v.view} is keyed by {sorted(entity_types)}, not by "
                f"the single join key {v.key!r}; set join_key in features.online",
                stage="features",
            )
        types = {f.name: f.dtype.to_value_type() for f in fv.features}
        for f in v.features:
            if f not in types:
                raise ConfigError(
                    f"feature {f!r} is not in feature view {v.view} of project "
                    f"{self.project}; it has {sorted(types)}",
                    stage="features",
                )
            if types[f] not in _NUMERIC:
                raise ConfigError(
                    f"feature {v.view}:{f} has type {types[f].name}; only numeric "
                    "features can be model inputs",
                    stage="features",
                )
        g = self._groups.setdefault(
            (v.entity_field, v.key), _Group(v.entity_field, v.key, entity_types[v.key])
        )
        fv_name = compute_versioned_name(fv, versioning)
        first = len(g.fields)
        g.fields += [_mmh3(f"{fv_name}:{f}") for f in v.features]
        g.fields.append(f"_ts:{fv_name}")
        ttl = fv.ttl.total_seconds() if fv.ttl else None
        g.views.append(
            _View(
                v.view,
                v.columns(),
                list(v.features),
                [types[f] for f in v.features],
                first,
                len(g.fields) - 1,
                ttl or None,
            )
        )
        self.columns += v.columns()
        self.feature_refs += [f"{v.view}:{f}" for f in v.features]

    @property
    def entity_fields(self) -> list[str]:
        """Event fields a batch must provide."""
        return sorted({g.entity_field for g in self._groups.values()})

    def entity_rows(self, entities: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
        """`entities` as Feast ``entity_rows`` (join key names), e.g. for get_online_features."""
        n = _batch_len(entities, self.entity_fields)
        return [
            {g.join_key: entities[g.entity_field][i] for g in self._groups.values()}
            for i in range(n)
        ]

    def _commands(self, g: _Group, uniq: list[Any]) -> list[bytes]:
        """The packed ``HMGET <feast key> <fields>`` of each entity (cached across batches)."""
        cache = g.key_cache
        todo = [u for u in uniq if u not in cache]
        if todo:
            if len(cache) + len(todo) > self._cache_size:
                cache.clear()
            protos = python_values_to_proto_values(todo, g.value_type)
            for u, p in zip(todo, protos, strict=False):
                ek = EntityKeyProto(join_keys=[g.join_key], entity_values=[p])
                key = _redis_key(self.project, ek, entity_key_serialization_version=self._version)
                # (hiredis' stub types the argument as a 1-tuple)
                cache[u] = hiredis.pack_command((b"HMGET", key, *g.fields))  # type: ignore[arg-type]
        return [cache[u] for u in uniq]

    async def _fetch(
        self, entities: Mapping[str, Sequence[Any]]
    ) -> tuple[int, list[tuple[_Group, np.ndarray, list[list[bytes | None]]]]]:
        """Dedup, one HMGET per unique (hash, entity), all in one write; rows + inverse index.

        A None entity value (an event without that entity) reads as a missing row.
        """
        n = _batch_len(entities, self.entity_fields)
        plans = []
        payload: list[bytes] = []
        for g in self._groups.values():
            pos: dict[Any, int] = {}
            inverse = np.fromiter(
                (pos.setdefault(x, len(pos)) for x in entities[g.entity_field]),
                dtype=np.intp,
                count=n,
            )
            payload += self._commands(g, [u for u in pos if u is not None])
            plans.append((g, inverse, list(pos)))
        replies: list[Any] = []
        if payload:
            with redis_errors("online feature read", self.redis_url):
                replies = await roundtrip(self._redis, payload, len(payload))
        out = []
        it = iter(replies)
        for g, inverse, uniq in plans:
            absent: list[bytes | None] = [None] * len(g.fields)
            out.append((g, inverse, [absent if u is None else next(it) for u in uniq]))
        return n, out

    def _expired(self, view: _View, row: list[bytes | None], now: float) -> bool:
        if not (self._enforce_ttl and view.ttl_s):
            return False
        raw = row[view.ts_index]
        return raw is None or now - Timestamp.FromString(raw).seconds > view.ttl_s

    async def read(self, entities: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        """Float64 column per ``<view>__<feature>`` for the batch (missing → NaN).

        `entities` maps each event field of :attr:`entity_fields` (e.g. ``account_id``) to the
        batch's values, all of the same length. Raises DependencyError when Redis fails.
        """
        _, groups = await self._fetch(entities)
        now = time.time()
        cols: dict[str, np.ndarray] = {}
        for g, inverse, rows in groups:
            by_field = list(zip(*rows, strict=False)) if rows else [() for _ in g.fields]
            for view in g.views:
                if self._enforce_ttl and view.ttl_s:
                    keep = [not self._expired(view, row, now) for row in rows]
                for j, col in enumerate(view.columns):
                    raws: Sequence[bytes | None] = by_field[view.first + j]
                    if self._enforce_ttl and view.ttl_s:
                        raws = [r if k else None for r, k in zip(raws, keep, strict=False)]
                    uniq = np.fromiter(map(_as_float, raws), dtype=np.float64, count=len(raws))
                    cols[col] = uniq[inverse]
        return cols

    async def read_feast_dict(self, entities: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
        """The batch as ``get_online_features(features=feature_refs, entity_rows=...,
        full_feature_names=True).to_dict()`` returns it: join keys and ``view__feature`` lists."""
        _, groups = await self._fetch(entities)
        now = time.time()
        out: dict[str, list[Any]] = {}
        for g, inverse, rows in groups:
            out[g.join_key] = list(entities[g.entity_field])
            for view in g.views:
                for j, (col, vt) in enumerate(zip(view.columns, view.value_types, strict=False)):
                    uniq = []
                    for row in rows:
                        raw = None if self._expired(view, row, now) else row[view.first + j]
                        val = ValueProto.FromString(raw) if raw else ValueProto()
                        uniq.append(feast_value_type_to_python_type(val, vt))
                    out[col] = [uniq[i] for i in inverse]
        return out

    async def aclose(self) -> None:
        """Close the Redis client if this reader created it (a client passed in is the caller's)."""
        if self._owns_client:
            await self._redis.aclose()


def _as_float(raw: bytes | None, _parse: Any = ValueProto.FromString) -> float:
    """A serialized numeric ValueProto as a float; absent or null → NaN."""
    if not raw:
        return _NAN
    val = _parse(raw)
    which = val.WhichOneof("val")
    return float(getattr(val, which)) if which else _NAN


def _batch_len(entities: Mapping[str, Sequence[Any]], fields: list[str]) -> int:
    missing = [f for f in fields if f not in entities]
    if missing:
        raise ConfigError(
            f"the batch lacks entity fields {missing}; the online features need {fields}",
            stage="features",
        )
    lengths = {f: len(entities[f]) for f in fields}
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"entity columns differ in length: {lengths}", stage="features")
    return next(iter(lengths.values()), 0)
