"""Derived feature columns: arithmetic on other columns, the same in training and serving.

Vectorised over a batch. A missing input (NaN) or a zero divisor yields NaN,
which the models treat as missing, never as zero.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence

import numpy as np

from raylane.config import DerivedFeature

__all__ = ["compute_derived"]


def compute_derived(
    columns: MutableMapping[str, np.ndarray], specs: Sequence[DerivedFeature]
) -> Mapping[str, np.ndarray]:
    """Add each derived column to `columns` (in order, so later ones may use earlier ones)."""
    for d in specs:
        a = np.asarray(columns[d.left], dtype=np.float64)
        b = np.asarray(columns[d.right], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if d.op == "ratio":
                out = np.where(b == 0, np.nan, a / np.where(b == 0, 1.0, b))
            elif d.op == "difference":
                out = a - b
            elif d.op == "product":
                out = a * b
            else:
                out = a + b
        columns[d.name] = out
    return columns
