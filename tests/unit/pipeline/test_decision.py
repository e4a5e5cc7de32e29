"""Decision rules: order, thresholds, feature conditions, missing values."""

from __future__ import annotations

import numpy as np

from raylane.config import DecisionConfig, DecisionRule
from raylane.pipeline.decision import DecisionEngine


def _engine(*rules: tuple[str, str, str]) -> DecisionEngine:
    return DecisionEngine(
        DecisionConfig(rules=tuple(DecisionRule(name=n, when=w, decision=d) for n, w, d in rules))
    )


def test_threshold_is_strict() -> None:
    e = _engine(("high", "score > 0.85", "flagged"))
    out = e.decide(np.array([0.85, 0.8500001, 0.2, 1.0]), {})
    assert out.decision == ["approved", "flagged", "approved", "flagged"]
    assert out.rule_index.tolist() == [-1, 0, -1, 0]


def test_first_matching_rule_wins_and_and_conditions() -> None:
    e = _engine(
        ("block", "score > 0.95 and amount >= 1000", "blocked"),
        ("flag", "score > 0.85", "flagged"),
        ("review", "amount > 5000", "review"),
    )
    score = np.array([0.99, 0.99, 0.5, 0.9])
    cols = {"amount": np.array([1000.0, 10.0, 6000.0, 9000.0])}
    out = e.decide(score, cols)
    assert out.decision == ["blocked", "flagged", "review", "flagged"]
    assert out.rule_name(0, e.cfg.rules) == "block" and out.rule_name(2, e.cfg.rules) == "review"


def test_missing_feature_never_satisfies_a_condition() -> None:
    e = _engine(("new", "velocity != 0", "review"), ("low", "velocity < 1", "low"))
    out = e.decide(np.array([0.1, 0.1]), {"velocity": np.array([np.nan, 3.0])})
    assert out.decision == ["approved", "review"]
