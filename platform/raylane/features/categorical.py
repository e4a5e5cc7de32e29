"""Categorical event fields as numeric model columns: one-hot or ordinal, unknown bucket.

The one encoding both sides use: serving (the feature stage, per batch) and training (a
use case's ``train.py`` builds its columns with :func:`categorical_columns` from the same
config), so a model never sees a category coded differently from how it was trained.
Values are compared as strings (``"US"``, ``3`` and ``True`` are ``"US"``, ``"3"``,
``"True"``); a missing value (None) is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from raylane.config import CategoricalFeature

__all__ = ["categorical_columns", "encode_categorical"]


def encode_categorical(values: Iterable[Any], spec: CategoricalFeature) -> dict[str, np.ndarray]:
    """The float64 columns of `spec` for `values` (one per event)."""
    index = {c: i for i, c in enumerate(spec.categories)}
    codes = np.fromiter(
        (-1 if v is None else index.get(str(v), -1) for v in values), dtype=np.int64
    )
    if spec.encoding == "ordinal":
        return {spec.column: (codes + 1).astype(np.float64)}
    cols = spec.columns()
    onehot = np.zeros((len(codes), len(cols)), dtype=np.float64)
    onehot[np.arange(len(codes)), np.where(codes < 0, len(cols) - 1, codes)] = 1.0
    return {name: onehot[:, j].copy() for j, name in enumerate(cols)}


def categorical_columns(
    events: Sequence[Mapping[str, Any]], specs: Sequence[CategoricalFeature]
) -> dict[str, np.ndarray]:
    """Every categorical column of `specs` for a batch of events (field -> columns)."""
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        out.update(encode_categorical((ev.get(spec.field) for ev in events), spec))
    return out
