"""The Python API of raylane, for notebooks and scripts; the CLI calls the same functions.

One object per pipeline, built from its serve config; connection settings come from the
environment (``RAYLANE_KAFKA_BOOTSTRAP``, ``REDIS_URL``, ``MLFLOW_TRACKING_URI``) or the
embedded stack's ``.raylane/stack.json``, exactly as for ``raylane`` and ``serve run``::

    from raylane import sdk

    fraud = sdk.Pipeline.load("serve_configs/fraud.yaml")
    scored = fraud.read_topic("payments.scored", start="30m")    # the last 30 minutes
    fraud.shadow_report()[0].agreement_rate
    fraud.gates()                                                # verdicts, nothing moved
    fraud.promote(reason="backtest 2026-12-06")                  # gated and audited
    ds = fraud.archive_dataset("payments.scored")                # a Ray Dataset
    report = fraud.backtest("models:/fraud@challenger", start="1h")
    report.table()                                               # AUC, precision, recall

The notebooks in ``notebooks/`` use every part of it; ``tests/e2e/test_notebooks.py`` runs
them.

Times (`start`, `end`) are a ``datetime`` (naive means UTC), a ``pandas.Timestamp``, epoch
milliseconds, an ISO string, or a duration ago (``"30m"``, ``"2h"``, ``"1d"``); ranges
are half-open, ``[start, end)``, on the records' broker timestamps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd

from raylane._sync import run_sync
from raylane.config import PipelineConfig, load_serve_config
from raylane.errors import ConfigError
from raylane.settings import Settings

if TYPE_CHECKING:
    from raylane.lifecycle.backtest import BacktestReport
    from raylane.lifecycle.gates import GateResult
    from raylane.lifecycle.promotion import PromotionOutcome
    from raylane.lifecycle.shadow_stats import ShadowAggregate
    from raylane.monitoring.drift_state import DriftState
    from raylane.registry import ModelRef
    from raylane.serving.batch import Engine
    from raylane.training import Fitted, TrainingSet

__all__ = ["Pipeline", "ReplayResult", "TimeLike", "served_features", "to_ms"]

TimeLike: TypeAlias = datetime | pd.Timestamp | int | float | str | None


def to_ms(t: TimeLike, *, now_ms: int | None = None) -> int | None:
    """Epoch milliseconds of a time given in any of the forms this module accepts."""
    from raylane.kafka.replay import parse_since

    if t is None:
        return None
    if isinstance(t, bool):
        raise TypeError("a time cannot be a bool")
    if isinstance(t, int | float):
        return int(t)
    if isinstance(t, pd.Timestamp):
        t = t.to_pydatetime()
    if isinstance(t, datetime):
        return round((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() * 1000)
    return parse_since(str(t), now_ms)


def _frame(
    records: list[dict[str, Any]],
    meta: list[tuple[int, int, int]],
    fields: Sequence[str] = (),
) -> pd.DataFrame:
    """Records and their (partition, offset, timestamp); with no record, the contract's
    `fields` and the meta columns, so ``df["event_id"]`` works on an empty range too."""
    if not records:
        df = pd.DataFrame(columns=[*fields, "_partition", "_offset"])
        df["_timestamp"] = pd.to_datetime(pd.Series([], dtype="int64"), unit="ms", utc=True)
        return df
    df = pd.DataFrame(records)
    p, o, ts = zip(*meta, strict=True)
    df["_partition"], df["_offset"] = list(p), list(o)
    df["_timestamp"] = pd.to_datetime(list(ts), unit="ms", utc=True)
    return df


def served_features(scored: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The feature values the served model saw, one row per event_id (its first scoring),
    from scored records (read from Kafka or the archive); index event_id.

    A column that is no feature but a field of the scored record itself (the prediction,
    ``score``, which the drift monitor watches too) comes from that field.
    """
    from raylane.lifecycle.backtest import dedupe_scored, feature_columns

    first = dedupe_scored(scored)
    cols = feature_columns(first, list(columns))
    for c in columns:
        if c in first.columns and c != "features" and np.isnan(cols[c]).all():
            cols[c] = pd.to_numeric(first[c], errors="coerce").to_numpy(dtype=np.float64)
    return pd.DataFrame(cols, index=pd.Index(first["event_id"].to_numpy(), name="event_id"))


@dataclass(frozen=True)
class ReplayResult:
    """What :meth:`Pipeline.replay` did: records read from the archive, sent, skipped."""

    topic: str
    to_topic: str
    read: int
    replayed: int
    skipped: int


class Pipeline:
    """One pipeline (its serve config) and everything a data scientist does with it."""

    def __init__(self, cfg: PipelineConfig, *, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.settings = Settings.load()

    @classmethod
    def load(cls, config: str | Path = "serve_configs/fraud.yaml") -> Pipeline:
        """The pipeline of a serve config (a path, or a pipeline name under serve_configs/)."""
        path = Path(config)
        if not path.suffix and not path.exists():
            path = Path("serve_configs") / f"{config}.yaml"
        _, cfg = load_serve_config(path)
        return cls(cfg, config_path=path.resolve())

    @property
    def name(self) -> str:
        return self.cfg.name

    def __repr__(self) -> str:
        return f"Pipeline({self.cfg.name!r}, config={str(self.config_path)!r})"

    # -- topics -------------------------------------------------------------------------

    def contracts(self) -> dict[str, str]:
        """Topic -> contract of every topic the config names a contract for."""
        cfg = self.cfg
        out = {
            cfg.input.topic: cfg.input.contract,
            cfg.outputs.scored.topic: cfg.outputs.scored.contract,
        }
        if cfg.outputs.shadow:
            out[cfg.outputs.shadow.topic] = cfg.outputs.shadow.contract
        for r in cfg.decision.rules:
            if r.publish:
                out[r.publish.topic] = r.publish.contract
        if cfg.drift is not None:
            out[cfg.drift.output.topic] = cfg.drift.output.contract
        if cfg.actions is not None:
            for t in cfg.actions.topics:
                out[t.topic] = t.contract
                for h in t.handlers:
                    if h.type == "publish":
                        out[h.output.topic] = h.output.contract
        if cfg.labels is not None:
            out[cfg.labels.topic] = cfg.labels.contract
        if cfg.archive is not None:  # a topic archived with a contract decodes with it too
            for a in cfg.archive.topics:
                if a.contract:
                    out.setdefault(a.topic, a.contract)
        out[cfg.promotion.audit_topic] = "models.promoted"
        return out

    def read_topic(
        self,
        topic: str,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        contract: str | None = None,
        timeout_s: float = 60.0,
    ) -> pd.DataFrame:
        """The decoded records of `topic` in ``[start, end)`` as a DataFrame.

        One row per record, its fields as columns plus ``_partition``, ``_offset`` and
        ``_timestamp`` (UTC); records that do not decode are left out and counted in
        ``df.attrs["undecodable"]``. The contract is the config's for that topic, or
        `contract`.
        """
        from raylane.contracts import Codec
        from raylane.kafka.reader import read_range

        name = contract or self.contracts().get(topic)
        if name is None:
            raise ConfigError(
                f"pipeline {self.name} names no contract for topic {topic!r}; pass contract=...; "
                f"known topics: {sorted(self.contracts())}",
                stage="sdk",
            )
        codec = Codec.for_contract(name)
        msgs = run_sync(
            read_range(
                self.settings.kafka_bootstrap,
                topic,
                to_ms(start),
                to_ms(end),
                timeout_s=timeout_s,
                stage="sdk",
            )
        )
        oks, errs = codec.decode_batch([m.value for m in msgs])
        df = _frame(
            [rec for _, rec in oks],
            [(msgs[i].partition, msgs[i].offset, msgs[i].timestamp) for i, _ in oks],
            [f["name"] for f in codec.schema.get("fields", [])],
        )
        df.attrs["undecodable"] = len(errs)
        return df

    def scored(self, start: TimeLike = None, end: TimeLike = None) -> pd.DataFrame:
        """The scored stream (``outputs.scored``) in a range."""
        return self.read_topic(self.cfg.outputs.scored.topic, start, end)

    def comparisons(self, start: TimeLike = None, end: TimeLike = None) -> pd.DataFrame:
        """The shadow comparisons (``outputs.shadow``) in a range."""
        if self.cfg.outputs.shadow is None:
            raise ConfigError(f"pipeline {self.name} has no outputs.shadow", stage="sdk")
        return self.read_topic(self.cfg.outputs.shadow.topic, start, end)

    # -- training ---------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The registered model name the primary's URI names (``fraud`` for models:/fraud@...)."""
        from raylane.registry import parse_uri

        return parse_uri(self.cfg.models.primary.uri)[0]

    def training_set(
        self, events: pd.DataFrame, labels: pd.DataFrame, *, warmup_s: float | None = None
    ) -> TrainingSet:
        """Training rows for the labelled `events`, computed as serving computes them.

        `events` are input events (e.g. ``archive(cfg.input.topic)``), in arrival order;
        `labels` has ``event_id`` and ``label``. Online features come from Feast's
        point-in-time join over the repo's offline sources (the values as they were at each
        event's time), window features from the reference implementation replayed over
        every event in order (labelled or not), derived columns from the serving function.
        Rows without a label, and those in the first `warmup_s` (default: the longest
        window), are left out. The frame's index is the rows' event_id.
        """
        import numpy as np

        from raylane.features.historical import historical_online_columns
        from raylane.training import TrainingSet, training_set

        if "_error" in events.columns:  # archived records that did not decode: not events
            events = events[events["_error"].isna()]
        fields = [c for c in events.columns if not str(c).startswith("_")]
        records = events[fields].to_dict("records")
        lab = labels.drop_duplicates("event_id", keep="last").set_index("event_id")["label"]
        y = events["event_id"].map(lab).map({True: 1, False: 0}).fillna(-1).to_numpy(np.int8)
        et = self.cfg.input.event_time
        online = historical_online_columns(records, self.cfg.features, event_time=et)
        full = training_set(
            records, y, self.cfg.features, event_time=et, online_columns=online, warmup_s=0
        )
        t = full.event_time
        if warmup_s is None:  # as training_set: the longest window, at most half the span
            span_s = (int(t.max()) - int(t.min())) / 1000.0 if len(t) else 0.0
            longest = max((w.window_s for w in self.cfg.features.windows), default=0.0)
            warmup_s = min(longest, span_s / 2)
        keep = (full.label >= 0) & (t >= (int(t.min()) if len(t) else 0) + int(warmup_s * 1000))
        frame = full.frame[keep].copy()
        frame.index = pd.Index(events["event_id"].to_numpy()[keep], name="event_id")
        return TrainingSet(frame, full.label[keep], t[keep], full.columns, full.features)

    def register(self, model: Fitted) -> ModelRef:
        """Log `model` to MLflow (signature, AUC, reference sample) as a new version of
        :attr:`model_name`, aliased by its spec's label. Serving follows it only once
        :meth:`set_challenger` or :meth:`promote` moves an alias there."""
        from raylane.registry._mlflow import resolve_tracking_uri
        from raylane.training import log_and_register

        return log_and_register(  # type: ignore[no-any-return]
            model,
            registered_name=self.model_name,
            tracking_uri=resolve_tracking_uri(self.settings.mlflow_tracking_uri),
        )

    # -- shadow, gates, promotion -------------------------------------------------------

    def shadow_report(self, window: int | None = None) -> list[ShadowAggregate]:
        """The rolling aggregates per shadow that `raylane shadow report` prints."""
        from raylane.lifecycle.shadow_stats import ShadowStore

        store = ShadowStore(self.settings.redis_url)
        n = window or self.cfg.promotion.window
        return [store.aggregate(self.name, s.name, n) for s in self.cfg.models.shadows]

    def gates(self) -> list[GateResult]:
        """The promotion gates' verdicts now (what `raylane promote` would check); moves nothing."""
        from raylane.lifecycle.gates import RedisDriftCheck, evaluate_gates
        from raylane.lifecycle.shadow_stats import ShadowAggregate, ShadowStore

        shadow = self.cfg.gating_shadow()
        store = ShadowStore(self.settings.redis_url)
        agg = (
            store.aggregate(self.name, shadow.name, self.cfg.promotion.window)
            if shadow
            else ShadowAggregate("none")
        )
        return evaluate_gates(
            self.name, agg, self.cfg.promotion, RedisDriftCheck(self.settings.redis_url)
        )

    def promote(
        self, *, version: int | None = None, force: bool = False, reason: str = ""
    ) -> PromotionOutcome:
        """Gate, move champion to the challenger (or `version`), audit: `raylane promote`."""
        from raylane.lifecycle.promotion import promote

        return promote(self.cfg, version=version, force=force, reason=reason)

    def rollback(self, *, reason: str = "") -> dict[str, Any]:
        """Champion back to ``previous``, audited: `raylane rollback`. Returns the audit event."""
        from raylane.lifecycle.promotion import rollback

        return rollback(self.cfg, reason=reason).event

    def set_challenger(self, version: int, *, reason: str = "") -> dict[str, Any]:
        """Point the shadows' alias at `version` (approved, audited): `raylane shadow set`."""
        from raylane.lifecycle.promotion import set_shadow

        return set_shadow(self.cfg, version, reason=reason)

    def history(self) -> pd.DataFrame:
        """Every promotion, rollback and shadow move, oldest first: `raylane history`."""
        from raylane.lifecycle.promotion import history

        events = history(self.cfg, bootstrap=self.settings.kafka_bootstrap)
        df = pd.DataFrame(events)
        if len(df):
            df["at"] = pd.to_datetime(df["at"].astype("int64"), unit="ms", utc=True)
        return df

    # -- drift --------------------------------------------------------------------------

    def drift_state(self) -> DriftState | None:
        """The drift monitor's current state (the open alert, if any): `raylane drift status`."""
        from raylane.monitoring.drift_state import read_state

        return read_state(self.settings.redis_url, self.name)

    def drift_events(self, start: TimeLike = None, end: TimeLike = None) -> pd.DataFrame:
        """The ``model.drift`` events in a range (one per drifted window)."""
        if self.cfg.drift is None:
            raise ConfigError(f"pipeline {self.name} has no drift section", stage="sdk")
        return self.read_topic(self.cfg.drift.output.topic, start, end)

    def drift_windows(self) -> pd.DataFrame:
        """Every evaluated window the monitor recorded (drifted or not), newest first."""
        from raylane.monitoring.drift_state import read_windows

        return pd.DataFrame(read_windows(self.settings.redis_url, self.name))

    @staticmethod
    def report_html(report_uri: str) -> str:
        """The HTML of a drift event's Evidently report (``report_uri``, a file:// URI)."""
        from urllib.parse import unquote, urlsplit

        path = Path(unquote(urlsplit(report_uri).path)) if "://" in report_uri else Path(report_uri)
        if not path.is_file():
            raise ConfigError(
                f"drift report {report_uri} is gone (drift.report_keep / report_max_age_s "
                "prune old reports)",
                stage="sdk",
            )
        return path.read_text()

    def reference(self, uri: str | None = None) -> pd.DataFrame:
        """The training reference sample of a model version (default: the primary's alias)."""
        from raylane.registry import load_reference

        return load_reference(
            uri or self.cfg.models.primary.uri, tracking_uri=self.settings.mlflow_tracking_uri
        )

    # -- archive, backtest, replay -----------------------------------------------------

    def archive_root(self) -> str:
        """Where this pipeline's event archive is (``archive.path``, else $RAYLANE_HOME/archive)."""
        from raylane.sinks.archive_read import archive_root

        return str(archive_root(self.cfg, self.settings))

    def _storage_options(self) -> dict[str, Any] | None:
        from raylane.sinks.archive import archive_storage_options

        archive = self.cfg.archive
        return archive_storage_options(archive.storage_options_env if archive else None) or None

    def archive(
        self,
        topic: str,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Archived records of `topic` in ``[start, end)``, de-duplicated by (partition, offset)."""
        from raylane.sinks.archive_read import read_archive

        return read_archive(
            self.archive_root(),
            topic,
            to_ms(start),
            to_ms(end),
            columns=list(columns) if columns else None,
            storage_options=self._storage_options(),
        )

    def archive_files(self, topic: str, start: TimeLike = None, end: TimeLike = None) -> list[str]:
        """The archive's Parquet files of `topic` whose hour overlaps ``[start, end)``."""
        from raylane.sinks.archive_read import archive_files

        files = archive_files(
            self.archive_root(), topic, to_ms(start), to_ms(end), self._storage_options()
        )
        return [str(f) for f in files]

    def archive_status(self) -> list[Any]:
        """Files, records, bytes and time span per archived topic: `raylane archive status`."""
        from raylane.sinks.archive_read import archive_status

        archive = self.cfg.archive
        topics = [t.topic for t in archive.topics] if archive is not None else []
        return list(
            archive_status(self.archive_root(), topics, storage_options=self._storage_options())
        )

    def archive_dataset(self, topic: str, start: TimeLike = None, end: TimeLike = None) -> Any:
        """The archived files of `topic` as a Ray Dataset (``ray.data.read_parquet``).

        Rows are not de-duplicated (a file written twice after a crash holds the same
        offsets); de-duplicate by (``_partition``, ``_offset``) or, for outputs, by event_id.
        """
        import ray.data

        from raylane.serving.batch import connect_ray

        connect_ray()
        return ray.data.read_parquet(self.archive_files(topic, start, end), partitioning=None)

    def labels(
        self, start: TimeLike = None, end: TimeLike = None, *, archived: bool = True
    ) -> pd.DataFrame:
        """Delayed ground truth (``labels.topic``): one row per label, from the archive or Kafka."""
        labels = self.cfg.labels
        if labels is None:
            raise ConfigError(
                f"pipeline {self.name} has no labels section; add labels: {{topic: ...}}",
                stage="sdk",
            )
        return (
            self.archive(labels.topic, start, end)
            if archived
            else self.read_topic(labels.topic, start, end)
        )

    def pin(self, uri: str) -> str:
        """``models:/name@alias`` -> ``models:/name/<version>`` (what the alias points at now)."""
        from raylane.registry import resolve

        return resolve(uri, tracking_uri=self.settings.mlflow_tracking_uri).uri_pinned

    def backtest(
        self,
        candidate: str,
        champion: str | None = None,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        threshold: float | None = None,
        labels: pd.DataFrame | None = None,
        concurrency: int = 2,
        batch_size: int = 2048,
        engine: Engine = "auto",
    ) -> BacktestReport:
        """Score the archived scored stream with `candidate` and the champion on Ray Data.

        Reads the archive's ``outputs.scored`` files for the range, scores every event in
        ``map_batches`` with both models on the feature values the served model saw, keeps
        the first scoring of each event_id, joins the archived labels by event_id and
        reports AUC and precision / recall at the decision threshold per model, and the
        agreement between the two. `champion` defaults to the primary's URI; both are pinned
        to versions first. `labels` (event_id, label) default to every archived label so
        far: labels arrive after their payments, so none is cut by the range. `engine`
        ``"auto"`` scores a range of at most 64 MiB of Parquet in this process (a Ray Data
        job's start costs more than the scoring there), ``"ray"`` or ``"local"`` forces one;
        the scores are the same.
        """
        from raylane.lifecycle.backtest import decision_threshold, evaluate
        from raylane.serving.batch import score_files
        from raylane.sinks.archive_read import in_range

        uris = {
            "candidate": self.pin(candidate),
            "champion": self.pin(champion or self.cfg.models.primary.uri),
        }
        files = self.archive_files(self.cfg.outputs.scored.topic, start, end)
        if not files:
            raise ConfigError(
                f"the archive at {self.archive_root()} has no files of "
                f"{self.cfg.outputs.scored.topic} in that range; is the archive configured "
                "(archive.topics) and running?",
                stage="backtest",
            )
        scored = score_files(
            files,
            uris,
            tracking_uri=self.settings.mlflow_tracking_uri,
            engine=engine,
            concurrency=concurrency,
            batch_size=batch_size,
            storage_options=self._storage_options(),
        )
        ran_on = scored.attrs.get("engine", engine)
        keep = in_range(scored["_timestamp"], to_ms(start), to_ms(end))  # files are by hour
        report = evaluate(
            scored[keep],
            labels if labels is not None else self.labels(),
            threshold if threshold is not None else decision_threshold(self.cfg),
            candidate="candidate",
            champion="champion",
        )
        report.extra.update(uris=uris, files=len(files), engine=ran_on)
        return report

    def replay(
        self,
        topic: str,
        to_topic: str,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        allow_live_input: bool = False,
    ) -> ReplayResult:
        """Re-publish archived records of `topic` in a range to `to_topic` (e.g. staging).

        Each record keeps its original key, bytes and headers, plus ``raylane.replay.of``
        (``topic[partition]@offset``); order is the original timestamp order. Writing into
        this pipeline's own input topic would score the events again: it is refused unless
        `allow_live_input`.
        """
        if to_topic == self.cfg.input.topic and not allow_live_input:
            raise ConfigError(
                f"{to_topic} is pipeline {self.name}'s live input; replay into a staging topic, "
                "or pass allow_live_input=True",
                stage="replay",
            )
        df = self.archive(topic, start, end)
        return run_sync(_publish(self.settings.kafka_bootstrap, topic, to_topic, df))


async def _publish(bootstrap: str, topic: str, to_topic: str, df: pd.DataFrame) -> ReplayResult:
    from raylane.kafka.admin import ensure_topics_async
    from raylane.kafka.client import connection

    if len(df):  # a broker that does not create topics on first write would time out
        await ensure_topics_async(bootstrap, [to_topic])
    producer = connection(bootstrap).producer(client_id="raylane-sdk-replay")
    await producer.start()
    sent = skipped = 0
    try:
        futures = []
        # records, not itertuples: namedtuples rename the archive's "_"-prefixed columns
        cols = [c for c in ("_key", "_value", "_headers", "_partition", "_offset") if c in df]
        for row in df[cols].to_dict("records"):
            value = row.get("_value")
            if value is None or (isinstance(value, float) and pd.isna(value)):
                skipped += 1  # archived without its bytes: nothing exact to replay
                continue
            hdrs = json.loads(row.get("_headers") or "{}")
            headers = [(k, str(v).encode()) for k, v in hdrs.items()]
            headers.append(
                ("raylane.replay.of", f"{topic}[{row['_partition']}]@{row['_offset']}".encode())
            )
            futures.append(
                await producer.send(
                    to_topic, value=bytes(value), key=row.get("_key") or None, headers=headers
                )
            )
            sent += 1
        for f in futures:
            await f
    finally:
        await producer.stop()
    return ReplayResult(topic, to_topic, len(df), sent, skipped)
