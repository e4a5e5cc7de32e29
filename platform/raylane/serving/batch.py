"""Batch scoring on Ray Data: the backtest's parallel half (the Ray seam for offline work).

:func:`score_files` reads archived Parquet files with ``ray.data.read_parquet`` and scores
them in ``map_batches`` with a pool of actors, each loading every model once (pinned
versions, so every batch is scored by the same ones) and calling
:func:`raylane.lifecycle.backtest.score_frame` on its batches: the same feature columns the
served model saw, one model call per batch per model. :func:`connect_ray` joins the local
Ray cluster a running pipeline already started (``make demo``, ``serve run``), or starts a
small one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import ray

__all__ = ["connect_ray", "score_files"]

log = logging.getLogger("raylane.serving")


def connect_ray() -> None:
    """Join the running local Ray cluster (or ``RAY_ADDRESS``'s), else start a small one."""
    if ray.is_initialized():
        return
    try:
        ray.init(address="auto", logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError:
        from raylane.serving.runtime import start_ray

        start_ray()


class _ScoreBatches:
    """A Ray Data actor: the models loaded once, then one ``score_frame`` call per batch."""

    def __init__(self, uris: Mapping[str, str], tracking_uri: str | None) -> None:
        from raylane.registry import load_model

        self.models = {
            label: load_model(uri, tracking_uri=tracking_uri) for label, uri in uris.items()
        }

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from raylane.lifecycle.backtest import score_frame

        return score_frame(batch, self.models)


def score_files(
    files: Sequence[str],
    models: Mapping[str, str],
    *,
    tracking_uri: str | None = None,
    columns: Sequence[str] | None = None,
    batch_size: int = 2048,
    concurrency: int = 2,
    num_cpus: float = 0.5,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Every row of the Parquet `files` with a ``score_<label>`` column per model.

    `models` maps labels to pinned MLflow URIs (``models:/fraud/3``); `columns` are the
    columns read (default all; ``features`` is always read). Runs on Ray Data with
    `concurrency` actors of `num_cpus` each; `progress` shows Ray Data's own progress bars
    and logs (off: they flood a notebook).
    """
    connect_ray()
    if not files:
        return pd.DataFrame()
    filesystem = None
    if storage_options or not all(f.startswith("/") for f in files):
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs, _ = fsspec.core.url_to_fs(files[0], **dict(storage_options or {}))
        filesystem = PyFileSystem(FSSpecHandler(fs))
        files = [fs._strip_protocol(f) for f in files]
    cols = None if columns is None else sorted({*columns, "features"})
    ctx = ray.data.DataContext.get_current()
    quiet = logging.getLogger("ray.data")
    bars, operator_bars, level = (
        ctx.enable_progress_bars,
        ctx.enable_operator_progress_bars,
        quiet.level,
    )
    # Ray Data's per-operator bars and INFO lines flood a notebook cell; callers show their own
    ctx.enable_progress_bars = ctx.enable_operator_progress_bars = progress
    quiet.setLevel(logging.INFO if progress else logging.ERROR)
    try:
        ds = ray.data.read_parquet(
            list(files),
            columns=cols,
            filesystem=filesystem,
            partitioning=None,
            # at least one block per actor, or a small archive leaves all but one idle
            override_num_blocks=max(len(files), concurrency),
        )
        scored = ds.map_batches(
            _ScoreBatches,
            fn_constructor_kwargs={"uris": dict(models), "tracking_uri": tracking_uri},
            batch_size=batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=num_cpus,
        )
        return scored.to_pandas()
    finally:
        ctx.enable_progress_bars, ctx.enable_operator_progress_bars = bars, operator_bars
        quiet.setLevel(level)
