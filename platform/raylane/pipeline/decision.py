"""Decision rules from the config, applied to a whole batch at once.

Rules are evaluated in order; the first whose conditions all hold decides. A
condition compares the model score or any feature column with a number; a
missing feature (NaN) never satisfies a condition, so an unknown user is not
flagged by a feature rule by accident.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from raylane.config import DecisionConfig, DecisionRule

__all__ = ["DecisionEngine", "Decisions"]

_OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Decisions:
    """Per-event outcome of a batch: the decision and the index of the rule that fired."""

    decision: list[str]
    rule_index: np.ndarray  # int, -1 where no rule fired

    def rule_name(self, i: int, rules: tuple[DecisionRule, ...]) -> str | None:
        r = int(self.rule_index[i])
        return rules[r].name if r >= 0 else None


class DecisionEngine:
    def __init__(self, cfg: DecisionConfig) -> None:
        self.cfg = cfg
        self._compiled = [(rule, rule.conditions()) for rule in cfg.rules]

    def decide(self, score: np.ndarray, columns: Mapping[str, np.ndarray]) -> Decisions:
        n = len(score)
        fired = np.full(n, -1, dtype=np.int64)
        for idx, (_, conds) in enumerate(self._compiled):
            mask = fired < 0
            for c in conds:
                values = np.asarray(
                    score if c.column == "score" else columns[c.column], dtype=np.float64
                )
                mask &= ~np.isnan(values) & _OPS[c.op](values, c.value)
            fired[mask] = idx
        names = [r.decision for r, _ in self._compiled]
        decision = [names[f] if f >= 0 else self.cfg.default for f in fired.tolist()]
        return Decisions(decision=decision, rule_index=fired)
