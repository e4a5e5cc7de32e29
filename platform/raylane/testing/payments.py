"""Labeled ``payments.initiated`` event streams of a simulated :class:`~raylane.testing.World`.

A :class:`PaymentStream` fills fixed event-time slots (``1000 / rate`` ms apart) with
legit payments, fraud bursts and single fraudulent payments; scheduled events (the rest
of a burst, a legit quick repeat, an injected burst) take the next free slots, so the
rate is exact and a driver can pace sends by ``event_time``. Plain ``random.Random``
seeded from the world seed, stream seed and start time makes every stream reproducible.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raylane.testing.simulator import World

__all__ = ["CONTRACT_FIELDS", "LabeledEvent", "LabeledStream", "PaymentStream", "to_ms"]

#: Fields of a ``payments.initiated`` v1 event, in contract order.
CONTRACT_FIELDS: tuple[str, ...] = (
    "event_id",
    "correlation_id",
    "user_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "currency",
    "user_history_hash",
    "event_time",
)

_MEAN_BURST = 7.0  # mean of randint(4, 10)
_RECENT = 5  # merchants hashed into user_history_hash


@dataclass(frozen=True, slots=True)
class LabeledEvent:
    """One event (exactly its contract's fields) and its ground truth beside it.

    For payments, ``is_fraud`` is the label and ``kind`` is ``legit``, ``burst`` (part of
    a velocity burst), ``single`` (a lone fraudulent payment) or ``prior`` (a synthetic
    past payment seeding first-seen state). For churn activity, ``is_fraud`` holds the
    positive label (the user will churn; also :attr:`label`) and ``kind`` is ``churn`` or
    ``retained``.
    """

    event: dict[str, Any]
    is_fraud: bool
    kind: str = "legit"

    @property
    def label(self) -> bool:
        """The positive label, whatever the use case (fraud, churn)."""
        return self.is_fraud


def to_ms(t: datetime | int) -> int:
    """Epoch milliseconds of a datetime (naive means UTC) or an int already in ms."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return round(t.timestamp() * 1000)
    return int(t)


# (user index, merchant index, amount, is_fraud, kind)
_Plan = tuple[int, int, float, bool, str]


class LabeledStream(Iterator[LabeledEvent]):
    """An endless stream of :class:`LabeledEvent` in event-time order, with batch takers."""

    @property
    def next_time_ms(self) -> int:
        """Event time of the next event this stream yields."""
        raise NotImplementedError

    def take(self, n: int) -> list[LabeledEvent]:
        """The next `n` events."""
        return [next(self) for _ in range(n)]

    def until(self, end_ms: datetime | int) -> list[LabeledEvent]:
        """The next events whose event time is before `end_ms`."""
        end = to_ms(end_ms)
        out: list[LabeledEvent] = []
        while self.next_time_ms < end:
            out.append(next(self))
        return out


class PaymentStream(LabeledStream):
    """An endless iterator of :class:`LabeledEvent` in event-time order; see ``World.stream``."""

    def __init__(
        self,
        world: World,
        *,
        start_ms: int,
        rate: float,
        fraud_rate: float = 0.02,
        burst_share: float = 0.75,
        seed: int = 0,
    ) -> None:
        if rate <= 0 or not 0.0 <= fraud_rate < 1.0 or not 0.0 <= burst_share <= 1.0:
            raise ValueError(
                f"need rate > 0, 0 <= fraud_rate < 1, 0 <= burst_share <= 1 "
                f"(got rate={rate}, fraud_rate={fraud_rate}, burst_share={burst_share})"
            )
        self.world = world
        self.start_ms = int(start_ms)
        self.rate = float(rate)
        self.fraud_rate = fraud_rate
        self.burst_share = burst_share
        self._rng = random.Random(f"raylane-sim:{world.seed}:{seed}:{self.start_ms}")
        self._k = 0
        self._seq = 0
        self._pending: list[tuple[int, int, _Plan]] = []
        self._recent: dict[int, deque[str]] = {}
        self._p_burst = fraud_rate * burst_share / _MEAN_BURST
        self._p_single = fraud_rate * (1.0 - burst_share)
        self._users = range(world.n_users)
        self._merchants = range(world.n_merchants)
        self._cum_activity = list(accumulate(world.user_activity.tolist()))
        self._cum_compromise = list(accumulate(world.user_compromise_weight.tolist()))
        self._cum_popular = list(accumulate(world.merchant_popularity.tolist()))
        self._cum_fraud = list(accumulate(world.merchant_fraud_weight.tolist()))

    # -- driving -------------------------------------------------------------------------

    @property
    def next_time_ms(self) -> int:
        """Event time of the next event this stream yields."""
        return self.start_ms + int(self._k * 1000.0 / self.rate)

    @property
    def emitted(self) -> int:
        """Events yielded so far."""
        return self._k

    def __iter__(self) -> PaymentStream:
        return self

    def __next__(self) -> LabeledEvent:
        t = self.next_time_ms
        self._k += 1
        if self._pending and self._pending[0][0] <= t:
            return self._emit(heapq.heappop(self._pending)[2], t)
        x = self._rng.random()
        if x < self._p_burst:
            self._schedule_burst(t, None, None, None)
            return self._emit(heapq.heappop(self._pending)[2], t)
        if x < self._p_burst + self._p_single:
            return self._emit(self._single_fraud(), t)
        return self._emit(self._legit(t), t)

    def inject_burst(
        self,
        user_id: str | None = None,
        n: int | None = None,
        at_ms: int | None = None,
        within_s: float | None = None,
    ) -> str:
        """Schedule a fraud burst and return the victim's user_id.

        It starts at the next slot (or at `at_ms` if later); `user_id` defaults to a
        user drawn by compromise risk, `n` to 4-10, and its payments spread over
        `within_s` seconds (default 8-30 s, like the bursts the stream makes itself).
        """
        if within_s is not None and not 0 < within_s <= 60:
            raise ValueError(
                f"within_s must be in (0, 60] (got {within_s}); window features look back 60 s"
            )
        u = self.world.user_index(user_id) if user_id is not None else None
        start = max(self.next_time_ms, at_ms or 0)
        return self.world.user_ids[self._schedule_burst(start, u, n, within_s)]

    def prior(self, before_ms: int) -> list[LabeledEvent]:
        """One legit payment per (user, usual merchant), spread evenly before `before_ms`."""
        w = self.world
        pairs = [(u, m) for u in self._users for m in w.user_merchants[u]]
        self._rng.shuffle(pairs)
        span = max(before_ms - self.start_ms, 1)
        out = []
        for i, (u, m) in enumerate(pairs):
            t = self.start_ms + i * span // len(pairs)
            out.append(self._emit((u, m, self._legit_amount(u, m), False, "prior"), t))
        return out

    # -- generation ----------------------------------------------------------------------

    def _push(self, due: int, plan: _Plan) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (due, self._seq, plan))

    def _pick(self, cum: list[float], pop: range) -> int:
        return self._rng.choices(pop, cum_weights=cum)[0]

    def _legit_amount(self, u: int, m: int) -> float:
        w = self.world
        return float(w.user_scale[u] * w.merchant_amount_factor[m]) * self._rng.lognormvariate(
            -0.125, 0.5
        )

    def _legit(self, t: int) -> _Plan:
        w, r = self.world, self._rng
        u = self._pick(self._cum_activity, self._users)
        usual = w.user_merchants[u]
        if r.random() < 0.92:
            # The first usual merchant is the favourite.
            m = r.choices(usual, weights=[1.0 / (i + 1) for i in range(len(usual))])[0]
        else:
            m = self._pick(self._cum_popular, self._merchants)
        amount = self._legit_amount(u, m)
        if r.random() < 0.015:  # a legitimately big purchase
            amount *= r.uniform(3.0, 6.0)
        if r.random() < 0.03:  # a quick legit repeat at the same merchant
            self._push(
                t + int(r.uniform(5_000, 40_000)),
                (u, m, amount * r.uniform(0.3, 1.2), False, "legit"),
            )
        return (u, m, amount, False, "legit")

    def _fraud_merchant(self, u: int) -> int:
        usual = self.world.user_merchants[u]
        for _ in range(20):
            m = self._pick(self._cum_fraud, self._merchants)
            if m not in usual:
                return m
        return m

    def _single_fraud(self) -> _Plan:
        w, r = self.world, self._rng
        u = self._pick(self._cum_compromise, self._users)
        m = self._fraud_merchant(u) if r.random() < 0.85 else r.choice(w.user_merchants[u])
        amount = float(w.user_scale[u]) * r.lognormvariate(math.log(3.0), 0.6)
        return (u, m, amount, True, "single")

    def _schedule_burst(
        self, start: int, u: int | None, n: int | None, within_s: float | None = None
    ) -> int:
        w, r = self.world, self._rng
        if u is None:
            u = self._pick(self._cum_compromise, self._users)
        n = n or r.randint(4, 10)
        duration = r.uniform(8_000, 30_000) if within_s is None else within_s * 1000.0
        offsets = [0.0, *sorted(r.uniform(0, duration) for _ in range(n - 1))]
        targets = [self._fraud_merchant(u) for _ in range(r.randint(2, 5))]
        card_test = r.random() < 0.25
        for i, off in enumerate(offsets):
            if card_test and i == 0:
                amount = r.uniform(0.5, 5.0)
            else:
                amount = float(w.user_scale[u]) * r.lognormvariate(math.log(4.0), 0.5)
            self._push(start + int(off), (u, r.choice(targets), amount, True, "burst"))
        return u

    def _emit(self, plan: _Plan, t: int) -> LabeledEvent:
        u, m, amount, is_fraud, kind = plan
        w, r = self.world, self._rng
        recent = self._recent.get(u)
        if recent is None:
            recent = self._recent[u] = deque(
                (w.merchant_ids[x] for x in w.user_merchants[u]), maxlen=_RECENT
            )
        history_hash = hashlib.sha1(",".join(recent).encode()).hexdigest()
        recent.append(w.merchant_ids[m])
        event = {
            "event_id": str(uuid.UUID(int=r.getrandbits(128), version=4)),
            "correlation_id": str(uuid.UUID(int=r.getrandbits(128), version=4)),
            "user_id": w.user_ids[u],
            "merchant_id": w.merchant_ids[m],
            "merchant_category": w.merchant_category[m],
            "amount": round(max(amount, 0.5), 2),
            "currency": w.user_currency[u],
            "user_history_hash": history_hash,
            "event_time": int(t),
        }
        return LabeledEvent(event, is_fraud, kind)
