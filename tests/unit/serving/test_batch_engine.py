"""score_files' engines: in process for a small range, Ray Data above LOCAL_MAX_BYTES.

The Ray Data engine itself is compared with the local one on a real archive in
tests/e2e/test_notebooks.py (the SDK's backtest on Ray, the CLI's on auto)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import raylane.registry
from raylane.lifecycle.backtest import score_frame
from raylane.serving import batch


class Linear:
    feature_names = ("a", "b")

    def __init__(self, wa: float, wb: float) -> None:
        self.wa, self.wb = wa, wb

    def predict(self, columns: Mapping[str, Any]) -> np.ndarray:
        a, b = np.nan_to_num(columns["a"]), np.nan_to_num(columns["b"])
        return 1 / (1 + np.exp(-(self.wa * a + self.wb * b)))


MODELS = {"candidate": Linear(0.5, -1.0), "champion": Linear(-0.25, 2.0)}


@pytest.fixture
def archive(tmp_path, monkeypatch):
    """Three Parquet files of 7, 0 and 5 rows, and load_model serving the two models."""
    rng = np.random.default_rng(7)
    files = []
    i = 0
    for n in (7, 0, 5):
        rows = [
            {
                "event_id": f"e{i + k}",
                "_timestamp": 1_000 + i + k,
                "features": {"a": float(rng.normal()), "b": float(rng.normal())},
            }
            for k in range(n)
        ]
        i += n
        schema = pa.schema(
            [
                ("event_id", pa.string()),
                ("_timestamp", pa.int64()),
                ("features", pa.map_(pa.string(), pa.float64())),
            ]
        )
        t = pa.Table.from_pylist(
            [{**r, "features": list(r["features"].items())} for r in rows], schema=schema
        )
        path = tmp_path / f"part-{len(files)}.parquet"
        pq.write_table(t, path)
        files.append(str(path))
    loads: list[str] = []

    def load_model(uri: str, tracking_uri: str | None = None) -> Linear:
        loads.append(uri)
        return MODELS[uri.removeprefix("models:/")]

    monkeypatch.setattr(raylane.registry, "load_model", load_model)
    return files, loads


URIS = {"candidate": "models:/candidate", "champion": "models:/champion"}


def _direct(files):
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    return score_frame(frame, MODELS)


def test_a_small_range_is_scored_in_process_with_the_same_scores(archive, monkeypatch):
    files, loads = archive
    monkeypatch.setattr(batch, "connect_ray", lambda: pytest.fail("a small range started Ray"))
    got = batch.score_files(files, URIS, batch_size=3)  # batches cross the file boundaries
    assert got.attrs["engine"] == "local"
    assert sorted(loads) == sorted(URIS.values())  # each model loaded once
    want = _direct(files)
    assert list(got["event_id"]) == list(want["event_id"]) == [f"e{k}" for k in range(12)]
    for label in URIS:
        np.testing.assert_allclose(got[f"score_{label}"], want[f"score_{label}"], rtol=0)
    forced = batch.score_files(files, URIS, engine="local", batch_size=100)
    pd.testing.assert_frame_equal(forced, got, check_like=True)


def test_a_range_over_the_limit_goes_to_ray_data(archive, monkeypatch):
    files, _ = archive

    class Started(Exception):
        pass

    def connect_ray() -> None:
        raise Started

    monkeypatch.setattr(batch, "connect_ray", connect_ray)
    size = sum(os.path.getsize(f) for f in files)
    monkeypatch.setattr(batch, "LOCAL_MAX_BYTES", size - 1)
    with pytest.raises(Started):
        batch.score_files(files, URIS)
    with pytest.raises(Started):
        batch.score_files(files[:1], URIS, engine="ray")  # forced, whatever the size


def test_an_unknown_engine_and_an_empty_range(archive):
    files, _ = archive
    with pytest.raises(ValueError, match="auto, ray or local"):
        batch.score_files(files, URIS, engine="spark")  # type: ignore[arg-type]
    assert batch.score_files([], URIS).empty
