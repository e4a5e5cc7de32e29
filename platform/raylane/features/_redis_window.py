"""Streaming window features in Redis: update and read a whole batch in one round trip.

:class:`RedisWindowStore` runs ``window.lua`` once per batch (EVALSHA; on NOSCRIPT it
sends the script with EVAL, which also caches it). The script processes the events in
order with exactly :class:`~raylane.features.window.ReferenceWindowState`'s semantics,
and atomically, so ingress replicas updating the same key at once stay correct.

Cost in Redis per event and spec: O(log n) for count and first_seen; a sum scans its
window once per key and batch and then moves it incrementally, so hot keys stay cheap.
Keys are ``raylane:{namespace}:win:{spec}:{key}``; count/sum keys expire
``window_s + LATENESS_S`` after their last update, first_seen keys ``retention_s``
after it. Redis Cluster needs every key of one call in one slot, which a batch of
many users is not: this store targets a single Redis (or a proxy that runs scripts).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

import hiredis
import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from raylane.config import EventTimeConfig, PipelineConfig, WindowFeature
from raylane.errors import ContractError
from raylane.features._redis import client_url, redis_errors, roundtrip
from raylane.features.window import LATENESS_S

__all__ = ["WINDOW_SCRIPT", "RedisWindowStore"]

#: The Lua source run per batch.
WINDOW_SCRIPT: bytes = files("raylane.features").joinpath("window.lua").read_bytes()
_SHA = hashlib.sha1(WINDOW_SCRIPT).hexdigest().encode()
_KIND = {"count": b"c", "sum": b"s", "first_seen": b"f"}


class RedisWindowStore:
    """Window feature state for `specs` in Redis, shared by every ingress replica.

    Re-processing an event is idempotent by event id (a sum's member is value|event id,
    so only a re-delivery carrying a *different* value for the same id would count twice).

    Args:
        redis: an asyncio Redis client (one Redis, not a cluster).
        namespace: prefixes every key (e.g. the pipeline name), so pipelines and tests
            never share state.
        specs: the pipeline's ``features.windows``.
        event_time: the pipeline's ``input.event_time`` (default: ``event_time`` in ms).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        specs: Sequence[WindowFeature],
        event_time: EventTimeConfig | None = None,
    ) -> None:
        self._redis = redis
        self.event_time = event_time or EventTimeConfig()
        self.namespace = namespace
        self.specs = list(specs)
        self.redis_url = client_url(redis)
        # The script sees the specs ordered so that those sharing key fields are adjacent:
        # an event's key is then built once per distinct key_fields.
        order = sorted(range(len(self.specs)), key=lambda i: (self.specs[i].key_fields, i))
        self._specs = [self.specs[i] for i in order]
        self._sum_fields = [s.value_field for s in self._specs if s.kind == "sum" and s.value_field]
        self._key_groups: list[tuple[tuple[str, ...], list[str]]] = []
        for s in self._specs:
            prefix = f"raylane:{namespace}:win:{s.name}:"
            if self._key_groups and self._key_groups[-1][0] == s.key_fields:
                self._key_groups[-1][1].append(prefix)
            else:
                self._key_groups.append((s.key_fields, [prefix]))
        header: list[Any] = [len(self._specs)]
        for s in self._specs:
            ttl = s.retention_s if s.kind == "first_seen" else s.window_s + LATENESS_S
            header += [
                _KIND[s.kind],
                int(s.window_s * 1000),
                int(LATENESS_S * 1000),
                max(1, math.ceil(ttl)),
            ]
        self._header = header

    @classmethod
    def for_pipeline(cls, redis: aioredis.Redis, cfg: PipelineConfig) -> RedisWindowStore:
        """The store of pipeline `cfg`: its name as namespace, its windows and event time."""
        return cls(redis, cfg.name, cfg.features.windows, cfg.input.event_time)

    def _command(self, events: Sequence[Mapping[str, Any]], sha: bool) -> bytes:
        keys: list[str] = []
        argv: list[Any] = []
        groups = self._key_groups
        sums = self._sum_fields
        time_ms = self.event_time.ms
        try:
            for ev in events:
                argv.append(str(ev["event_id"]))
                argv.append(time_ms(ev))
                for fields, prefixes in groups:
                    k = "|".join([str(ev[f]) for f in fields])
                    keys += [p + k for p in prefixes]
                for f in sums:
                    v = float(ev[f])
                    if v - v != 0.0:  # nan or inf
                        raise ValueError(f"field {f} is {v}; window sums need finite values")
                    argv.append(repr(v))
        except KeyError as e:
            raise ContractError(
                f"event {ev.get('event_id')!r} lacks field {e.args[0]!r} "
                "needed by the window features",
                stage="features",
            ) from e
        except (TypeError, ValueError) as e:
            raise ContractError(
                f"event {ev.get('event_id')!r} has a bad window field: {e}", stage="features"
            ) from e
        head = (b"EVALSHA", _SHA) if sha else (b"EVAL", WINDOW_SCRIPT)
        packed: bytes = hiredis.pack_command((*head, len(keys), *keys, *self._header, *argv))
        return packed

    async def update_and_read(self, events: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Add `events` in order and return one float64 column per spec (one round trip).

        Each event needs ``event_id``, its event time (``input.event_time``), the specs' key
        fields and sum value fields. Raises DependencyError when Redis fails, ContractError for an
        event lacking a field.
        """
        if not events:
            return {s.name: np.zeros(0, dtype=np.float64) for s in self.specs}
        with redis_errors("window feature update", self.redis_url):
            try:
                reply = await roundtrip(self._redis, [self._command(events, sha=True)], 1)
            except NoScriptError:  # first use on this server, or after SCRIPT FLUSH / restart
                reply = await roundtrip(self._redis, [self._command(events, sha=False)], 1)
        cols = {s.name: col for s, col in zip(self._specs, reply[0], strict=False)}
        return {s.name: np.array(cols[s.name].split(b","), dtype=np.float64) for s in self.specs}

    async def backfill(self, events: Sequence[Mapping[str, Any]], batch_size: int = 2000) -> int:
        """Replay history (in order) through the same script, `batch_size` events per call.

        For `raylane bootstrap`; idempotent, so a partial backfill can simply be rerun.
        Returns the number of events replayed.
        """
        for i in range(0, len(events), batch_size):
            await self.update_and_read(events[i : i + batch_size])
        return len(events)

    async def forget(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Delete the state of every key `events` map to, for every spec (a user's counts and
        sums, a user-merchant pair's first_seen), as if none of their events had been seen.

        For erasing a data subject's state, and for tests that share a pipeline's window
        state; returns the number of keys deleted.
        """
        keys: set[str] = set()
        for ev in events:
            for fields, prefixes in self._key_groups:
                try:
                    k = "|".join([str(ev[f]) for f in fields])
                except KeyError:
                    continue  # no key for this spec: nothing of it to forget
                keys.update(p + k for p in prefixes)
        if not keys:
            return 0
        with redis_errors("window feature forget", self.redis_url):
            return int(await self._redis.unlink(*sorted(keys)))

    async def clear(self) -> int:
        """Delete every key of this namespace (tests, `raylane dev reset`); returns the count."""
        deleted = 0
        with redis_errors("window feature clear", self.redis_url):
            batch: list[bytes] = []
            pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.namespace)
            async for key in self._redis.scan_iter(match=f"raylane:{pattern}:win:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += await self._redis.unlink(*batch)
                    batch = []
            if batch:
                deleted += await self._redis.unlink(*batch)
        return deleted
