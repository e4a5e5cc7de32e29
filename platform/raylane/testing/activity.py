"""Labeled ``churn.activity`` events of a simulated world: the second use case (churn risk).

Each user of a :class:`~raylane.testing.World` gets a plan and a hidden churn fate
(more likely on the free plan and with low engagement). Users who are about to churn
have shorter sessions, fewer pages, longer gaps since their last login and more
support tickets / cancel-page views; about one in ten churns silently, behaving like a
retained user. The label (``is_fraud`` of :class:`LabeledEvent`, read as "positive";
``kind`` is ``churn`` or ``retained``) is kept beside each event, never inside it.
Traits are drawn per chunk of users like the world's own, so they are stable across
world sizes of the same seed.
"""

from __future__ import annotations

import math
import random
import uuid
from functools import cache
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import numpy as np

from raylane.testing.payments import LabeledEvent, LabeledStream

if TYPE_CHECKING:
    from raylane.testing.simulator import World

__all__ = ["ACTIVITY_FIELDS", "EVENT_TYPES", "PLANS", "ActivityStream", "churn_traits"]

#: Fields of a ``churn.activity`` v1 event, in contract order.
ACTIVITY_FIELDS: tuple[str, ...] = (
    "event_id",
    "correlation_id",
    "user_id",
    "event_type",
    "session_minutes",
    "pages_viewed",
    "days_since_last_login",
    "plan",
    "event_time",
)
PLANS: tuple[tuple[str, float], ...] = (("free", 0.55), ("basic", 0.30), ("pro", 0.15))
EVENT_TYPES = (
    "login",
    "page_view",
    "search",
    "purchase",
    "settings_change",
    "support_ticket",
    "cancel_page_view",
)
_TYPE_P = {
    False: (0.20, 0.40, 0.18, 0.12, 0.05, 0.04, 0.01),
    True: (0.22, 0.34, 0.12, 0.04, 0.07, 0.12, 0.09),
}
_CHUNK = 1000


def churn_traits(world: World) -> dict[str, np.ndarray]:
    """Per-user plan index, engagement and churn fate (True = will churn) of `world`."""
    return _traits(world.seed, world.n_users)


@cache
def _traits(seed: int, n_users: int) -> dict[str, np.ndarray]:
    parts = []
    for c in range(-(-n_users // _CHUNK)):
        rng = np.random.default_rng([seed, 0xC4, c])
        plan = rng.choice(len(PLANS), size=_CHUNK, p=np.array([p for _, p in PLANS]))
        engagement = rng.normal(0.0, 1.0, size=_CHUNK)
        logit = -2.0 + 1.0 * (plan == 0) - 0.8 * (plan == 2) - 0.9 * engagement
        churn = rng.random(_CHUNK) < 1.0 / (1.0 + np.exp(-logit))
        silent = rng.random(_CHUNK) < 0.1
        parts.append((plan, engagement, churn, churn & ~silent))
    return {
        name: np.concatenate([p[i] for p in parts])[:n_users]
        for i, name in enumerate(("plan", "engagement", "churn", "shows"))
    }


class ActivityStream(LabeledStream):
    """An endless, deterministic iterator of labeled activity events at a fixed rate."""

    def __init__(self, world: World, *, start_ms: int, rate: float, seed: int = 0) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 (got {rate})")
        self.world = world
        self.start_ms = int(start_ms)
        self.rate = float(rate)
        self._rng = random.Random(f"raylane-activity:{world.seed}:{seed}:{self.start_ms}")
        self._k = 0
        t = churn_traits(world)
        self._plan, self._eng, self._churn, self._shows = (
            t["plan"].tolist(),
            t["engagement"].tolist(),
            t["churn"].tolist(),
            t["shows"].tolist(),
        )
        # Users about to churn are less active.
        weights = world.user_activity * np.where(t["shows"], 0.6, 1.0)
        self._cum = list(accumulate(weights.tolist()))
        self._users = range(world.n_users)

    @property
    def next_time_ms(self) -> int:
        """Event time of the next event this stream yields."""
        return self.start_ms + int(self._k * 1000.0 / self.rate)

    def __iter__(self) -> ActivityStream:
        return self

    def __next__(self) -> LabeledEvent:
        t = self.next_time_ms
        self._k += 1
        r = self._rng
        u = r.choices(self._users, cum_weights=self._cum)[0]
        shows = self._shows[u]
        etype = r.choices(EVENT_TYPES, weights=_TYPE_P[shows])[0]
        base = math.log(7.0 if shows else 14.0) + 0.25 * self._eng[u]
        if etype in ("support_ticket", "cancel_page_view"):
            base -= 0.5
        minutes = r.lognormvariate(base, 0.6)
        pages = 1 + int(r.expovariate(1.0 / max(minutes * 0.9, 0.1)))
        gap = r.expovariate(1.0 / (5.0 if shows else 1.2))
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=r.getrandbits(128), version=4)),
            "correlation_id": str(uuid.UUID(int=r.getrandbits(128), version=4)),
            "user_id": self.world.user_ids[u],
            "event_type": etype,
            "session_minutes": round(minutes, 2),
            "pages_viewed": pages,
            "days_since_last_login": round(gap, 3),
            "plan": PLANS[self._plan[u]][0],
            "event_time": t,
        }
        churn = bool(self._churn[u])
        return LabeledEvent(event, churn, "churn" if churn else "retained")
