"""Streaming window features: semantics and the pure-Python reference implementation.

Semantics (shared by the Redis implementation, the reference below and training):

* Events are processed in arrival order; the state holds every event processed
  so far (including the current one) that is still within retention.
* ``count`` / ``sum`` for an event at event time ``t`` aggregate the processed
  events with the same key whose event time lies in ``(t - window_s, t]``: the
  current event is included, an event exactly ``window_s`` older is not, and
  events with a later event time (processed earlier, arriving out of order) are
  not counted.
* Adding is idempotent by ``event_id``: re-processing an event (at-least-once
  delivery, replays) does not count it twice.
* State older than ``window_s + LATENESS_S`` before the event being processed is
  trimmed; results are exact for events that arrive at most ``LATENESS_S`` late.
* ``first_seen`` is 1.0 for the first event ever processed for its key (e.g. a
  user's first payment at a merchant) and 0.0 afterwards; re-processing that same
  first event still yields 1.0.

Training computes features with :func:`reference_window_features`, serving with
the Redis implementation (:class:`raylane.features.RedisWindowStore`: ``_redis_window.py``
running ``window.lua``); ``tests/integration/features/test_window_redis.py`` holds the two equal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raylane.config import EventTimeConfig, WindowFeature

__all__ = ["LATENESS_S", "ReferenceWindowState", "reference_window_features", "window_key"]

#: How late (in event time) an event may arrive and still see exact window values.
LATENESS_S = 300.0


def window_key(spec: WindowFeature, event: Mapping[str, Any]) -> str:
    """The aggregation key of `event` for `spec`: its key fields joined by '|'."""
    return "|".join(str(event[f]) for f in spec.key_fields)


class ReferenceWindowState:
    """In-memory state with exactly the Redis implementation's semantics."""

    def __init__(
        self, specs: Sequence[WindowFeature], event_time: EventTimeConfig | None = None
    ) -> None:
        self.specs = list(specs)
        self.event_time = event_time or EventTimeConfig()
        # per spec name -> key -> {event_id: (event_time_ms, value)}
        self._events: dict[str, dict[str, dict[str, tuple[int, float]]]] = {
            s.name: defaultdict(dict) for s in self.specs
        }
        self._first: dict[str, dict[str, str]] = {s.name: {} for s in self.specs}

    def update_and_read(self, events: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Add `events` in order and return one float64 column per spec."""
        out = {s.name: np.zeros(len(events), dtype=np.float64) for s in self.specs}
        for i, ev in enumerate(events):
            t = self.event_time.ms(ev)
            eid = str(ev["event_id"])
            for s in self.specs:
                key = window_key(s, ev)
                if s.kind == "first_seen":
                    first = self._first[s.name].setdefault(key, eid)
                    out[s.name][i] = 1.0 if first == eid else 0.0
                    continue
                value = float(ev[s.value_field]) if s.kind == "sum" and s.value_field else 1.0
                bucket = self._events[s.name][key]
                bucket.setdefault(eid, (t, value))
                lo = t - int(s.window_s * 1000)
                horizon = lo - int(LATENESS_S * 1000)
                for old in [k for k, (ts, _) in bucket.items() if ts <= horizon]:
                    del bucket[old]
                vals = [v for (ts, v) in bucket.values() if lo < ts <= t]
                out[s.name][i] = float(len(vals)) if s.kind == "count" else float(sum(vals))
        return out


def reference_window_features(
    events: Sequence[Mapping[str, Any]],
    specs: Sequence[WindowFeature],
    event_time: EventTimeConfig | None = None,
) -> dict[str, np.ndarray]:
    """Window feature columns for `events` processed in order from an empty state."""
    return ReferenceWindowState(specs, event_time).update_and_read(events)
