"""A seeded simulated world of users, merchants and payments, for training, demos and tests.

:class:`World` holds a population (users with a home amount scale, latent risk and a
few usual merchants; merchants with a category of known fraud propensity), serves the
profile tables Feast loads, and generates ``payments.initiated`` v1 events with the
ground-truth label kept *beside* each event (:class:`LabeledEvent`), never inside it.

Fraud has learnable structure but no leaked field: compromised users (more likely when
their risk is high or their account young) do velocity bursts of 4-10 payments within
~30 s at first-time merchants in risky categories for several times their usual amount;
single fraudulent payments lack the velocity signal. Legitimate traffic has the same
kinds of noise in smaller doses (new merchants, big purchases, quick repeats).

Per-user intensity matters for window features: a user pays about once every
:data:`USER_PAYMENT_INTERVAL_S` seconds when a stream runs at :attr:`World.nominal_rate`
(the default). Train and serve at the same per-user rate; to drive more events/s, make a
bigger world (``n_users = rate * USER_PAYMENT_INTERVAL_S``) rather than a faster one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from raylane.testing.activity import ActivityStream
from raylane.testing.payments import CONTRACT_FIELDS, LabeledEvent, PaymentStream, to_ms

__all__ = [
    "CATEGORIES",
    "CONTRACT_FIELDS",
    "USER_PAYMENT_INTERVAL_S",
    "LabeledEvent",
    "World",
    "events_frame",
]

#: Merchant categories: (name, fraud propensity, share of legit spend, amount factor).
CATEGORIES: tuple[tuple[str, float, float, float], ...] = (
    ("grocery", 0.3, 0.22, 0.6),
    ("restaurants", 0.4, 0.18, 0.8),
    ("fuel", 0.5, 0.10, 1.0),
    ("pharmacy", 0.4, 0.06, 0.7),
    ("retail", 1.0, 0.14, 1.2),
    ("entertainment", 1.0, 0.07, 1.0),
    ("travel", 2.0, 0.05, 3.0),
    ("electronics", 3.0, 0.06, 2.5),
    ("digital_goods", 3.5, 0.06, 0.8),
    ("gambling", 4.0, 0.02, 1.5),
    ("gift_cards", 5.0, 0.02, 1.5),
    ("crypto", 6.0, 0.02, 2.0),
)

#: Mean seconds between two payments of one user at the world's nominal rate.
USER_PAYMENT_INTERVAL_S = 100.0

_CURRENCIES = (("EUR", 0.7), ("USD", 0.2), ("GBP", 0.1))
_USER_CHUNK = 1000


class World:
    """A deterministic population of users and merchants; everything derives from `seed`.

    >>> w = World(seed=1, n_users=100, n_merchants=20)
    >>> ev = next(iter(w.stream(start=0)))
    >>> sorted(ev.event) == sorted(CONTRACT_FIELDS)
    True
    """

    def __init__(self, seed: int = 0, n_users: int = 2000, n_merchants: int = 300) -> None:
        if n_users < 1 or n_merchants < 10:
            raise ValueError(
                f"World needs n_users >= 1 and n_merchants >= 10 (got {n_users}, {n_merchants})"
            )
        self.seed = seed
        self.n_users = n_users
        self.n_merchants = n_merchants
        self._build_merchants(np.random.default_rng([seed, 0x5EED, 0]))
        self._build_users()

    # -- population ---------------------------------------------------------------------

    def _build_merchants(self, rng: np.random.Generator) -> None:
        names = [c[0] for c in CATEGORIES]
        propensity = np.array([c[1] for c in CATEGORIES])
        share = np.array([c[2] for c in CATEGORIES])
        m = self.n_merchants
        # Every category gets at least one merchant; the rest follow legit spend share.
        cat = np.concatenate(
            [
                np.arange(len(names)),
                rng.choice(len(names), size=m - len(names), p=share / share.sum()),
            ]
        )
        rng.shuffle(cat)
        self.merchant_ids: list[str] = [f"m{i:04d}" for i in range(m)]
        self.merchant_category: list[str] = [names[c] for c in cat]
        self.merchant_amount_factor = np.array([CATEGORIES[c][3] for c in cat])
        # A latent per-merchant fraud factor (weak controls, leaked card data...).
        self._merchant_fraud_factor = rng.lognormal(0.0, 0.5, size=m)
        self.merchant_fraud_weight = propensity[cat] * self._merchant_fraud_factor
        self._category_risk = propensity[cat] / propensity.max()
        self.merchant_popularity = (
            rng.lognormal(0.0, 1.0, size=m)
            * share[cat]
            / np.bincount(cat, minlength=len(names))[cat]
        )
        self.merchant_popularity /= self.merchant_popularity.sum()

    def _build_users(self) -> None:
        # Users are drawn in fixed-size chunks, each from its own generator, so a smaller
        # world of the same seed (and n_merchants) is a prefix of a bigger one.
        chunks = [self._user_chunk(c) for c in range(-(-self.n_users // _USER_CHUNK))]
        n = self.n_users

        def cat(key: str) -> np.ndarray:
            return np.concatenate([c[key] for c in chunks])[:n]

        self.user_ids: list[str] = [f"u{i:05d}" for i in range(n)]
        self.user_scale = np.round(cat("scale"), 2)
        activity = cat("activity")
        self.user_activity = activity / activity.sum()
        self._latent_risk = cat("risk")
        self._account_age = cat("age")
        young = self._account_age < 120
        weight = self._latent_risk**2 * np.where(young, 3.0, 1.0)
        self.user_compromise_weight = weight / weight.sum()
        self._risk_score = np.clip(self._latent_risk + cat("noise"), 0.0, 1.0)
        self.user_currency: list[str] = [_CURRENCIES[i][0] for i in cat("currency")]
        self.user_merchants: list[list[int]] = [m for c in chunks for m in c["merchants"]][:n]
        self._txn_count_30d = cat("txn_count_30d").astype(np.int64)

    def _user_chunk(self, c: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, 0x5EED, 1, c])
        size = _USER_CHUNK
        activity = rng.lognormal(0.0, 0.6, size=size)
        k = rng.integers(3, 7, size=size)
        return {
            "scale": rng.lognormal(np.log(40.0), 0.7, size=size),
            "activity": activity,
            "risk": rng.beta(2.0, 8.0, size=size),
            "age": rng.integers(3, 3650, size=size),
            "noise": rng.normal(0.0, 0.05, size=size),
            "currency": rng.choice(
                len(_CURRENCIES), size=size, p=np.array([p for _, p in _CURRENCIES])
            ),
            # about 45 a month at the mean activity (E[lognormal(0, 0.6)] = 1.197)
            "txn_count_30d": rng.poisson(activity * 45.0 / 1.197),
            "merchants": [
                [
                    int(x)
                    for x in rng.choice(
                        self.n_merchants, size=int(k[u]), replace=False, p=self.merchant_popularity
                    )
                ]
                for u in range(size)
            ],
        }

    @property
    def nominal_rate(self) -> float:
        """Events/s at which each user pays about once every USER_PAYMENT_INTERVAL_S."""
        return self.n_users / USER_PAYMENT_INTERVAL_S

    def user_index(self, user_id: str) -> int:
        """Row of `user_id` in the population (ids are ``u00000`` ... ``u{n-1}``)."""
        idx = int(user_id[1:])
        if not user_id.startswith("u") or not 0 <= idx < self.n_users:
            raise KeyError(
                f"{user_id!r} is not a user of this world (u00000..u{self.n_users - 1:05d})"
            )
        return idx

    # -- profile tables -----------------------------------------------------------------

    def user_profiles(self, as_of: datetime) -> pd.DataFrame:
        """The user risk profile table as of `as_of` (one row per user, Feast-ready)."""
        ts = _utc(as_of)
        return pd.DataFrame(
            {
                "user_id": pd.Series(self.user_ids, dtype=object),
                "risk_score": self._risk_score.astype(np.float64),
                "avg_amount": self.user_scale.astype(np.float64),
                "txn_count_30d": self._txn_count_30d.astype(np.int64),
                "account_age_days": self._account_age.astype(np.int64),
                "event_timestamp": pd.Series([ts] * self.n_users, dtype="datetime64[ns, UTC]"),
                "created": pd.Series([ts] * self.n_users, dtype="datetime64[ns, UTC]"),
            }
        )

    def merchant_profiles(self, as_of: datetime) -> pd.DataFrame:
        """The merchant profile table as of `as_of` (one row per merchant, Feast-ready)."""
        ts = _utc(as_of)
        # Observed 90-day fraud rate: a noisy view of the latent merchant fraud weight.
        rng = np.random.default_rng([self.seed, 0xF4A0D])
        rate = 0.002 * self.merchant_fraud_weight * rng.lognormal(0.0, 0.2, size=self.n_merchants)
        return pd.DataFrame(
            {
                "merchant_id": pd.Series(self.merchant_ids, dtype=object),
                "category_risk": self._category_risk.astype(np.float64),
                "fraud_rate_90d": np.round(rate, 5).astype(np.float64),
                "event_timestamp": pd.Series([ts] * self.n_merchants, dtype="datetime64[ns, UTC]"),
                "created": pd.Series([ts] * self.n_merchants, dtype="datetime64[ns, UTC]"),
            }
        )

    # -- payment events -----------------------------------------------------------------

    def stream(
        self,
        start: datetime | int | None = None,
        *,
        rate: float | None = None,
        fraud_rate: float = 0.02,
        burst_share: float = 0.75,
        seed: int = 0,
    ) -> PaymentStream:
        """An endless, deterministic stream of labeled payments starting at `start`.

        Args:
            start: event time of the first event (datetime, or epoch ms); default now.
            rate: events per second of event time (fixed spacing 1000/rate ms);
                default :attr:`nominal_rate`. Bursts use the same slots, so the rate is exact.
            fraud_rate: expected fraction of fraudulent events (0 for clean traffic; inject
                bursts by hand with :meth:`PaymentStream.inject_burst`).
            burst_share: fraction of the fraud that comes as velocity bursts (rest: single).
            seed: varies the stream without changing the world.
        """
        start_ms = to_ms(start) if start is not None else to_ms(datetime.now(UTC))
        return PaymentStream(
            self,
            start_ms=start_ms,
            rate=rate or self.nominal_rate,
            fraud_rate=fraud_rate,
            burst_share=burst_share,
            seed=seed,
        )

    def prior_events(self, before: datetime | int) -> list[LabeledEvent]:
        """One past legit payment per (user, usual merchant), in the day before `before`.

        They seed first-seen state so that a user's usual merchants are not "new"; they
        are not traffic (kind ``prior``): training drops their rows, backfill processes them.
        """
        return PaymentStream(
            self, start_ms=to_ms(before) - 86_400_000, rate=1.0, fraud_rate=0.0, seed=-1
        ).prior(to_ms(before))

    def history(
        self,
        end: datetime | int,
        *,
        hours: float = 2.0,
        rate: float | None = None,
        fraud_rate: float = 0.02,
        burst_share: float = 0.75,
        prior: bool = True,
        seed: int = 0,
    ) -> list[LabeledEvent]:
        """The past `hours` of traffic ending just before `end`, in event-time order.

        With `prior`, :meth:`prior_events` come first, so processing the whole list from
        empty state (training with the reference windows, or backfilling Redis) gives the
        same window features. Deterministic for the same arguments.
        """
        end_ms = to_ms(end)
        start_ms = end_ms - int(hours * 3_600_000)
        s = self.stream(
            start_ms, rate=rate, fraud_rate=fraud_rate, burst_share=burst_share, seed=seed
        )
        out = self.prior_events(start_ms) if prior else []
        out.extend(s.until(end_ms))
        return out

    def activity(
        self, start: datetime | int | None = None, *, rate: float | None = None, seed: int = 0
    ) -> ActivityStream:
        """An endless stream of labeled ``churn.activity`` events (label: will churn)."""
        start_ms = to_ms(start) if start is not None else to_ms(datetime.now(UTC))
        return ActivityStream(self, start_ms=start_ms, rate=rate or self.nominal_rate, seed=seed)

    def activity_history(
        self, end: datetime | int, *, hours: float = 1.0, rate: float | None = None, seed: int = 0
    ) -> list[LabeledEvent]:
        """The past `hours` of activity events ending just before `end`, in time order."""
        end_ms = to_ms(end)
        return self.activity(end_ms - int(hours * 3_600_000), rate=rate, seed=seed).until(end_ms)


def events_frame(events: Iterable[LabeledEvent]) -> pd.DataFrame:
    """Events as a DataFrame: their fields plus ``is_fraud`` (the label) and ``kind`` columns."""
    evs: Sequence[LabeledEvent] = list(events)
    columns = list(evs[0].event) if evs else list(CONTRACT_FIELDS)
    df = pd.DataFrame([e.event for e in evs], columns=columns)
    df["is_fraud"] = np.array([e.is_fraud for e in evs], dtype=bool)
    df["kind"] = [e.kind for e in evs]
    return df


def _utc(ts: datetime) -> pd.Timestamp:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return pd.Timestamp(ts).tz_convert("UTC")
