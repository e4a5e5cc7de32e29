"""LabelFeed: one label per payment, at its delay, in the contract's shape, deterministic."""

from __future__ import annotations

import pytest

from raylane.contracts import Codec
from raylane.testing import LabeledEvent, LabelFeed


def payment(i: int, t: int, fraud: bool) -> LabeledEvent:
    return LabeledEvent(
        {"event_id": f"e{i}", "user_id": f"u{i % 13}", "event_time": t, "amount": 1.0}, fraud
    )


def feed_of(n: int, **kw) -> tuple[LabelFeed, list[LabeledEvent]]:
    feed = LabelFeed(**kw)
    pays = [payment(i, 1_000_000 + 10 * i, i % 10 == 0) for i in range(n)]
    for p in pays:
        feed.add(p)
    return feed, pays


def test_each_payment_at_most_one_label_and_none_before_its_time():
    feed, pays = feed_of(2000, seed=1, chargeback_min_s=2, chargeback_max_s=6, maturity_s=8)
    assert not feed.add(pays[0])  # a second add of the same payment schedules nothing
    t_last = pays[-1].event["event_time"]
    assert feed.due(1_000_000 + 1999) == []  # the first label is due 2 s after its payment
    labels = feed.due(t_last + 8000)
    ids = [lab["event_id"] for lab in labels]
    assert len(ids) == len(set(ids)) == feed.added - feed.dropped
    assert feed.pending == 0 and feed.due(10**15) == []
    by_id = {p.event["event_id"]: p for p in pays}
    for lab in labels:
        p = by_id[lab["event_id"]]
        delay = lab["labelled_at"] - p.event["event_time"]
        assert lab["label"] is p.is_fraud and lab["event_time"] == p.event["event_time"]
        if p.is_fraud:
            assert lab["label_source"] == "chargeback" and 2000 <= delay <= 6000
        else:
            assert lab["label_source"] == "matured" and delay == 8000
    assert [lab["labelled_at"] for lab in labels] == sorted(lab["labelled_at"] for lab in labels)


def test_the_unlabelled_share_is_honoured():
    # n = 20,000 at share 0.1: the dropped count is Binomial(20000, 0.1), sd 42.4; the bounds
    # 1,800..2,200 are 4.7 sd away, a chance failure below 3e-6 (and the seed fixes it anyway)
    feed, _ = feed_of(20_000, unlabelled_share=0.1, seed=5)
    assert 1800 <= feed.dropped <= 2200
    none, _ = feed_of(500, unlabelled_share=0.0)
    assert none.dropped == 0
    every, _ = feed_of(500, unlabelled_share=1.0)
    assert every.dropped == 500 and every.due(10**15) == []


def test_deterministic_per_seed_and_scaled_by_time_scale():
    a, _ = feed_of(300, seed=9)
    b, _ = feed_of(300, seed=9)
    assert a.due(10**15) == b.due(10**15)
    fast, _ = feed_of(300, seed=9, time_scale=0.01)  # minutes become seconds
    for lab in fast.due(10**15):
        delay = lab["labelled_at"] - int(lab["event_time"])
        assert delay <= 0.01 * 600 * 1000 + 1


def test_labels_validate_against_the_contract():
    feed, _ = feed_of(200, seed=2)
    codec = Codec.for_contract("payments.labels")
    labels = feed.due(10**15)
    assert labels
    for lab in labels:
        assert codec.decode(codec.encode(lab)) == lab


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="unlabelled_share"):
        LabelFeed(unlabelled_share=1.5)
    with pytest.raises(ValueError, match="chargeback_min_s"):
        LabelFeed(chargeback_min_s=10, chargeback_max_s=5)
