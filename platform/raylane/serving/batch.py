"""Batch scoring: the backtest's parallel half (the Ray seam for offline work).

:func:`score_files` reads archived Parquet files with ``ray.data.read_parquet`` and scores
them in ``map_batches`` with a pool of actors, each loading every model once (pinned
versions, so every batch is scored by the same ones) and calling
:func:`raylane.lifecycle.backtest.score_frame` on its batches: the same feature columns the
served model saw, one model call per batch per model. :func:`connect_ray` joins the local
Ray cluster a running pipeline already started (``make demo``, ``serve run``), or starts a
small one.

A small range is scored in this process instead (``engine="auto"``, at most
:data:`LOCAL_MAX_BYTES` of Parquet): the same ``score_frame`` on the same rows, without
the fixed cost of a Ray Data job (planning, actor start, a model load per actor), which
dominates a range of a few thousand events. ``engine="ray"`` or ``"local"`` forces one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pandas as pd
import ray

__all__ = ["LOCAL_MAX_BYTES", "Engine", "connect_ray", "score_files"]

log = logging.getLogger("raylane.serving")

Engine = Literal["auto", "ray", "local"]
#: ``engine="auto"`` scores a range of at most this many bytes of Parquet in process
LOCAL_MAX_BYTES = 64 << 20


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


def _filesystem(
    files: Sequence[str], storage_options: Mapping[str, Any] | None
) -> tuple[Any, list[str]]:
    """The fsspec filesystem of `files` (None for local paths) and their paths on it."""
    if not storage_options and all(f.startswith("/") for f in files):
        return None, list(files)
    import fsspec

    fs, _ = fsspec.core.url_to_fs(files[0], **dict(storage_options or {}))
    return fs, [fs._strip_protocol(f) for f in files]


def _total_bytes(fs: Any, paths: Sequence[str]) -> int:
    if fs is None:
        return sum(os.path.getsize(p) for p in paths)
    return sum(int(fs.size(p)) for p in paths)


def _score_here(
    fs: Any,
    paths: Sequence[str],
    models: Mapping[str, str],
    tracking_uri: str | None,
    columns: Sequence[str] | None,
    batch_size: int,
) -> pd.DataFrame:
    """:func:`score_files` in this process: the same reads, the same scorer as a Ray Data
    actor's, one call per batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    scorer = _ScoreBatches(models, tracking_uri)
    tables = [pq.read_table(p, columns=columns, filesystem=fs, partitioning=None) for p in paths]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pd.DataFrame()
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    parts = [
        scorer(frame.iloc[i : i + batch_size].reset_index(drop=True))
        for i in range(0, len(frame), batch_size)
    ]
    return pd.concat(parts, ignore_index=True)


def score_files(
    files: Sequence[str],
    models: Mapping[str, str],
    *,
    engine: Engine = "auto",
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
    columns read (default all; ``features`` is always read). `engine` ``"ray"`` runs on Ray
    Data with `concurrency` actors of `num_cpus` each; ``"local"`` scores in this process;
    ``"auto"`` (default) is local for at most :data:`LOCAL_MAX_BYTES` of Parquet, else Ray.
    `progress` shows Ray Data's own progress bars and logs (off: they flood a notebook).
    """
    if engine not in ("auto", "ray", "local"):
        raise ValueError(f"engine must be auto, ray or local, not {engine!r}")
    if not files:
        return pd.DataFrame()
    fs, paths = _filesystem(files, storage_options)
    cols = None if columns is None else sorted({*columns, "features"})
    if engine == "auto":
        size = _total_bytes(fs, paths)
        engine = "local" if size <= LOCAL_MAX_BYTES else "ray"
        log.info("backtest of %d files, %d bytes: scored on %s", len(paths), size, engine)
    if engine == "local":
        out = _score_here(fs, paths, models, tracking_uri, cols, batch_size)
        out.attrs["engine"] = "local"  # which one ran, for the report
        return out
    connect_ray()
    filesystem = None
    if fs is not None:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        filesystem = PyFileSystem(FSSpecHandler(fs))
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
            paths,
            columns=cols,
            filesystem=filesystem,
            partitioning=None,
            # at least one block per actor, or a small archive leaves all but one idle
            override_num_blocks=max(len(paths), concurrency),
        )
        scored = ds.map_batches(
            _ScoreBatches,
            fn_constructor_kwargs={"uris": dict(models), "tracking_uri": tracking_uri},
            batch_size=batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=num_cpus,
        )
        out = scored.to_pandas()
        out.attrs["engine"] = "ray"
        return out
    finally:
        ctx.enable_progress_bars, ctx.enable_operator_progress_bars = bars, operator_bars
        quiet.setLevel(level)
