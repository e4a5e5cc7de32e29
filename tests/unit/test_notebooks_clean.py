"""Notebooks are committed without outputs, and the four of the data scientist's workflow exist."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = [
    "01_features_and_training.ipynb",
    "02_shadow_vs_primary.ipynb",
    "03_drift.ipynb",
    "04_backtest_and_replay.ipynb",
]


def test_the_four_notebooks_exist():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{name}: cells {dirty} hold outputs; clear them before committing "
        f"(`.venv/bin/jupyter nbconvert --clear-output --inplace notebooks/{name}`)"
    )
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
