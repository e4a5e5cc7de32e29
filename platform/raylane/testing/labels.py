"""Delayed ground truth for simulated payments: the labels a fraud team gets, when it gets them.

In production a payment's label arrives long after it was scored: a chargeback some minutes
to weeks later for a fraudulent one, and for a legitimate one only the end of its chargeback
window without a dispute ("matured"); some payments are never labelled (a chargeback window
still open, a dispute that was never filed). :class:`LabelFeed` plays that for simulated
payments: :meth:`LabelFeed.add` each payment as it is produced, :meth:`LabelFeed.due` hands
out the labels whose time has come, as records of the ``payments.labels`` contract. The demo
and the tests scale the delays down with ``time_scale``.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from raylane.testing.payments import LabeledEvent

__all__ = ["LabelFeed"]


@dataclass
class LabelFeed:
    """Schedules one label per payment at ``event time + delay``; deterministic per seed.

    Fraud is labelled by a chargeback after a delay uniform in ``[chargeback_min_s,
    chargeback_max_s]``, a legitimate payment as ``matured`` after ``maturity_s``; a share
    ``unlabelled_share`` of payments never gets a label. Every delay is multiplied by
    ``time_scale``.
    """

    unlabelled_share: float = 0.1
    chargeback_min_s: float = 120.0
    chargeback_max_s: float = 600.0
    maturity_s: float = 600.0
    time_scale: float = 1.0
    seed: int = 0
    #: payments added, and how many of them were left unlabelled
    added: int = field(default=0, init=False)
    dropped: int = field(default=0, init=False)
    _rng: random.Random = field(init=False, repr=False)
    _heap: list[tuple[int, int, dict[str, Any]]] = field(init=False, repr=False)
    _seen: set[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.unlabelled_share <= 1.0:
            raise ValueError(f"unlabelled_share must be in [0, 1], got {self.unlabelled_share}")
        if not 0.0 <= self.chargeback_min_s <= self.chargeback_max_s:
            raise ValueError(
                f"chargeback_min_s ({self.chargeback_min_s}) must be >= 0 and <= "
                f"chargeback_max_s ({self.chargeback_max_s})"
            )
        if self.maturity_s < 0 or self.time_scale < 0:
            raise ValueError("maturity_s and time_scale must be >= 0")
        self._rng = random.Random(self.seed)
        self._heap = []
        self._seen = set()

    def add(self, payment: LabeledEvent) -> bool:
        """Schedule the label of `payment` (its event's ``event_time`` is epoch ms).

        Returns False, scheduling nothing, for a payment left unlabelled or one already added
        (each payment gets at most one label).
        """
        ev = payment.event
        eid = str(ev["event_id"])
        if eid in self._seen:
            return False
        self._seen.add(eid)
        self.added += 1
        if self._rng.random() < self.unlabelled_share:
            self.dropped += 1
            return False
        if payment.is_fraud:
            delay_s = self._rng.uniform(self.chargeback_min_s, self.chargeback_max_s)
            source = "chargeback"
        else:
            delay_s, source = self.maturity_s, "matured"
        t = int(ev["event_time"])
        due = t + round(delay_s * self.time_scale * 1000)
        label = {
            "event_id": eid,
            "user_id": str(ev["user_id"]),
            "label": bool(payment.is_fraud),
            "label_source": source,
            "event_time": t,
            "labelled_at": due,
        }
        heapq.heappush(self._heap, (due, self.added, label))
        return True

    def due(self, now_ms: int) -> list[dict[str, Any]]:
        """The labels whose time is at or before `now_ms`, oldest first (each handed out once)."""
        out: list[dict[str, Any]] = []
        while self._heap and self._heap[0][0] <= now_ms:
            out.append(heapq.heappop(self._heap)[2])
        return out

    @property
    def pending(self) -> int:
        """Labels scheduled and not yet handed out."""
        return len(self._heap)
