"""One micro-batch through the data path: decode, enrich, score, decide, build outputs.

Plain Python: the feature sources and model clients are injected, so this runs
the same under Ray Serve, in integration tests and in the per-event baseline.
Everything is done per batch: one window round trip, one online round trip
(concurrently), one primary call. The shadow call is started here but never
awaited on this path; :class:`ShadowJob` carries what the comparison needs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from raylane.config import PipelineConfig
from raylane.decision import DecisionEngine, Decisions
from raylane.errors import ContractError, DependencyError
from raylane.features.derived import compute_derived
from raylane.ingest.dlq import dlq_record
from raylane.ingest.records import InRecord, OutRecord, header

__all__ = [
    "CORRELATION_HEADER",
    "GENERATED_HEADER",
    "BatchCodec",
    "BatchProcessor",
    "BatchResult",
    "ModelClient",
    "OnlineSource",
    "OutputCodec",
    "Prediction",
    "ShadowJob",
    "WindowSource",
]

log = logging.getLogger("raylane.ingest")

CORRELATION_HEADER = "correlation_id"
GENERATED_HEADER = "raylane.correlation_id.generated"


class WindowSource(Protocol):
    async def update_and_read(
        self, events: Sequence[Mapping[str, Any]]
    ) -> dict[str, np.ndarray]: ...


class OnlineSource(Protocol):
    async def read(self, entities: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Prediction:
    scores: np.ndarray
    model_name: str
    model_version: str
    latency_ms: float


class ModelClient(Protocol):
    name: str

    async def predict(self, columns: Mapping[str, np.ndarray]) -> Prediction: ...


class BatchCodec(Protocol):
    def decode_batch(
        self, raws: Sequence[bytes]
    ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, ContractError]]]: ...


class OutputCodec(Protocol):
    @property
    def field_names(self) -> Sequence[str]: ...

    def encode_many(self, records: Sequence[Mapping[str, Any]]) -> list[bytes]: ...


@dataclass
class ShadowJob:
    """What a shadow comparison needs, captured when the primary has scored."""

    columns: dict[str, np.ndarray]
    events: list[dict[str, Any]]
    primary: Prediction
    primary_decisions: list[str]


@dataclass
class BatchResult:
    outputs: list[OutRecord] = field(default_factory=list)
    dlq: list[OutRecord] = field(default_factory=list)
    n_in: int = 0
    n_scored: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    dlq_by_class: dict[str, int] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    shadow: ShadowJob | None = None
    model_version: str | None = None


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class BatchProcessor:
    """Turns a list of input records into output and DLQ records for one pipeline."""

    def __init__(
        self,
        cfg: PipelineConfig,
        *,
        input_codec: BatchCodec,
        output_codecs: Mapping[str, OutputCodec],
        windows: WindowSource | None,
        online: OnlineSource | None,
        primary: ModelClient,
    ) -> None:
        self.cfg = cfg
        self.input_codec = input_codec
        self.output_codecs = output_codecs
        self.windows = windows if cfg.features.windows else None
        self.online = online if cfg.features.online else None
        self.primary = primary
        self.engine = DecisionEngine(cfg.decision)
        self.columns = cfg.features.columns()
        self._entity_fields = sorted({v.entity_field for v in cfg.features.online})
        self._scored = output_codecs[cfg.outputs.scored.contract]

    # -- stages ---------------------------------------------------------------------------

    def _decode(
        self, records: Sequence[InRecord], result: BatchResult
    ) -> tuple[list[dict[str, Any]], list[InRecord], list[bool]]:
        # size limits, formats and every rejection are the codec's (typed ContractErrors)
        oks, errs = self.input_codec.decode_batch([r.value or b"" for r in records])
        for j, err in errs:
            rec = records[j]
            cid = self._header_correlation(rec)
            made = cid is None
            cid = cid or str(uuid.uuid4())
            result.dlq.append(
                dlq_record(
                    rec,
                    err,
                    cid,
                    self.cfg.input.dlq,
                    generated=made,
                    max_bytes=self.cfg.input.max_event_bytes,
                )
            )
            log.warning(
                "%s -> %s: %s: %s [correlation_id=%s]",
                rec.where,
                self.cfg.input.dlq,
                err.error_class,
                err.message[:300],
                cid,
            )
            result.dlq_by_class[err.error_class] = result.dlq_by_class.get(err.error_class, 0) + 1
        events, good, generated = [], [], []
        for j, ev in oks:
            rec = records[j]
            gen = False
            if not ev.get("correlation_id"):
                from_header = self._header_correlation(rec)
                if from_header is None:
                    from_header, gen = str(uuid.uuid4()), True
                else:  # a replayed event keeps the mark of an id made up on its first pass
                    gen = header(rec.headers, GENERATED_HEADER) == b"true"
                ev["correlation_id"] = from_header
            events.append(ev)
            good.append(rec)
            generated.append(gen)
        return events, good, generated

    @staticmethod
    def _header_correlation(rec: InRecord) -> str | None:
        raw = header(rec.headers, CORRELATION_HEADER)
        if not raw:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    async def _features(
        self, events: list[dict[str, Any]], result: BatchResult
    ) -> dict[str, np.ndarray]:
        cols: dict[str, np.ndarray] = {}
        for f in self.cfg.features.event:
            cols[f] = np.fromiter(
                (_num(ev.get(f)) for ev in events), dtype=np.float64, count=len(events)
            )

        async def timed(name: str, coro: Any) -> dict[str, np.ndarray]:
            t0 = time.perf_counter()
            out: dict[str, np.ndarray] = await coro
            result.stage_ms[name] = _ms(t0)
            return out

        jobs = []
        if self.windows is not None:
            jobs.append(timed("window_ms", self.windows.update_and_read(events)))
        if self.online is not None:
            entities = {f: [str(ev[f]) for ev in events] for f in self._entity_fields}
            jobs.append(timed("online_ms", self.online.read(entities)))
        for part in await asyncio.gather(*jobs):
            cols.update(part)
        if self.cfg.features.derived:
            compute_derived(cols, self.cfg.features.derived)
        missing = [c for c in self.columns if c not in cols]
        if missing:
            raise DependencyError(
                f"feature sources returned no column(s) {missing}", stage="features"
            )
        return cols

    # -- the batch ------------------------------------------------------------------------

    async def process(self, records: Sequence[InRecord]) -> BatchResult:
        """Process one batch. Raises DependencyError (retriable) if a dependency failed:
        nothing of the batch may then be published or committed."""
        t_batch = time.perf_counter()
        result = BatchResult(n_in=len(records))
        t0 = time.perf_counter()
        events, good, generated = self._decode(records, result)
        result.stage_ms["decode_ms"] = _ms(t0)
        if not events:
            result.stage_ms["batch_ms"] = _ms(t_batch)
            return result

        t0 = time.perf_counter()
        cols = await self._features(events, result)
        result.stage_ms["features_ms"] = _ms(t0)

        pred = await self.primary.predict(cols)
        result.stage_ms["score_ms"] = pred.latency_ms
        if len(pred.scores) != len(events):
            raise DependencyError(
                f"model {pred.model_name} returned {len(pred.scores)} scores for {len(events)} events",
                stage="score",
            )
        decisions = self.engine.decide(pred.scores, cols)
        result.model_version = pred.model_version
        result.shadow = ShadowJob(cols, events, pred, decisions.decision)

        t0 = time.perf_counter()
        self._build_outputs(events, good, generated, cols, pred, decisions, result, t_batch)
        result.stage_ms["encode_ms"] = _ms(t0)
        result.n_scored = len(events)
        for d in decisions.decision:
            result.decisions[d] = result.decisions.get(d, 0) + 1
        result.stage_ms["batch_ms"] = _ms(t_batch)
        return result

    def _build_outputs(
        self,
        events: list[dict[str, Any]],
        good: list[InRecord],
        generated: list[bool],
        cols: dict[str, np.ndarray],
        pred: Prediction,
        decisions: Decisions,
        result: BatchResult,
        t_batch: float,
    ) -> None:
        cfg = self.cfg
        now_ms = int(time.time() * 1000)
        latency = {k: round(v, 3) for k, v in result.stage_ms.items()}
        latency["batch_ms"] = round(_ms(t_batch), 3)
        col_lists = {c: cols[c].tolist() for c in self.columns}
        scores = pred.scores.astype(np.float64).tolist()
        rules = cfg.decision.rules
        scored_recs: list[dict[str, Any]] = []
        by_rule: dict[int, list[int]] = {}
        for i, ev in enumerate(events):
            feats = {
                c: (None if math.isnan(v) else v)
                for c, v in ((c, col_lists[c][i]) for c in self.columns)
            }
            lat = dict(latency)
            if good[i].timestamp_ms:
                lat["e2e_ms"] = float(now_ms - good[i].timestamp_ms)
            rec = dict(ev)
            rec.update(
                pipeline=cfg.name,
                score=scores[i],
                decision=decisions.decision[i],
                rule=decisions.rule_name(i, rules),
                model_name=pred.model_name,
                model_version=pred.model_version,
                features=feats,
                latency_ms=lat,
                scored_at=now_ms,
                flagged_at=now_ms,
            )
            scored_recs.append(rec)
            r = int(decisions.rule_index[i])
            if r >= 0 and rules[r].publish is not None:
                by_rule.setdefault(r, []).append(i)

        key_field = cfg.input.key_field
        keys = [str(ev.get(key_field, "")).encode() for ev in events]
        hdrs = [self._out_headers(ev, g) for ev, g in zip(events, generated, strict=True)]
        values = self._scored.encode_many(_project(scored_recs, self._scored.field_names))
        topic = cfg.outputs.scored.topic
        result.outputs.extend(
            OutRecord(topic, k, v, h) for k, v, h in zip(keys, values, hdrs, strict=True)
        )
        for r, idxs in by_rule.items():
            pub = rules[r].publish
            assert pub is not None
            codec = self.output_codecs[pub.contract]
            vals = codec.encode_many(_project([scored_recs[i] for i in idxs], codec.field_names))
            result.outputs.extend(
                OutRecord(pub.topic, keys[i], v, hdrs[i]) for i, v in zip(idxs, vals, strict=True)
            )

    @staticmethod
    def _out_headers(ev: Mapping[str, Any], generated: bool) -> list[tuple[str, bytes]]:
        h = [
            (CORRELATION_HEADER, str(ev["correlation_id"]).encode()),
            ("event_id", str(ev["event_id"]).encode()),
        ]
        if generated:
            h.append((GENERATED_HEADER, b"true"))
        return h


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _project(records: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[dict[str, Any]]:
    """Keep only the fields an output contract declares (the rest would be rejected)."""
    return [{f: r.get(f) for f in fields} for r in records]
