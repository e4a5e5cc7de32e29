"""One micro-batch through the data path: decode, enrich, score, decide, build outputs.

Plain Python: the feature sources and model clients are injected (:mod:`.ports`), so this
runs the same under Ray Serve, in integration tests, in unit tests with in-memory fakes and
in the per-event baseline. Each stage is its own module (:mod:`.decode`, :mod:`.enrich`,
:mod:`.outputs`, :mod:`.decision`); this one runs them in order and times them.
Everything is done per batch: one window round trip, one online round trip (concurrently),
one primary call. The shadow call is not made here: :class:`ShadowJob` carries what the
comparison needs, and the ingress hands it to the shadow runner after the batch commits.

Poison isolation (:meth:`BatchProcessor.isolate`): a batch that fails for a reason that is
not a dependency outage is split in halves until the failing records stand alone; those go
to the DLQ with their original bytes and error class, and the rest of the batch is scored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from raylane.config import PipelineConfig
from raylane.errors import DependencyError, ProcessingError, RaylaneError
from raylane.kafka.deadletters import H_CLASS
from raylane.kafka.records import InRecord, OutRecord, header
from raylane.monitoring.tracing import NO_TRACE, AnyBatchTrace, trace_id_of
from raylane.pipeline.decision import DecisionEngine
from raylane.pipeline.decode import CORRELATION_HEADER, GENERATED_HEADER, DecodeStage, dead_letter
from raylane.pipeline.enrich import FeatureStage
from raylane.pipeline.outputs import OutputStage
from raylane.pipeline.ports import (
    BatchCodec,
    ModelClient,
    OnlineSource,
    OutputCodec,
    Prediction,
    ShadowJob,
    WindowSource,
)

__all__ = [
    "CORRELATION_HEADER",
    "GENERATED_HEADER",
    "BatchProcessor",
    "BatchResult",
    "is_outage",
]

log = logging.getLogger("raylane.pipeline")


def is_outage(e: BaseException) -> bool:
    """True when `e` means a dependency is down (retry later), not that the input is bad."""
    return isinstance(e, RaylaneError) and e.retriable


@dataclass
class BatchResult:
    outputs: list[OutRecord] = field(default_factory=list)
    dlq: list[OutRecord] = field(default_factory=list)
    #: the input record of each output (parallel to `outputs`; references, no copies)
    sources: list[InRecord] = field(default_factory=list)
    n_in: int = 0
    n_scored: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    dlq_by_class: dict[str, int] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    shadow: ShadowJob | None = None
    model_version: str | None = None
    #: records dead-lettered by poison isolation (not by decode/validation)
    poison: int = 0

    def count_dead_letters(self) -> None:
        """Tally `dlq` by error class (the class header of each dead letter)."""
        self.dlq_by_class = {}
        for d in self.dlq:
            cls = (header(d.headers, H_CLASS) or b"?").decode()
            self.dlq_by_class[cls] = self.dlq_by_class.get(cls, 0) + 1

    def merge(self, other: BatchResult) -> BatchResult:
        """This result followed by `other` (two halves of one batch, in order)."""
        out = BatchResult(
            outputs=self.outputs + other.outputs,
            dlq=self.dlq + other.dlq,
            sources=self.sources + other.sources,
            n_in=self.n_in + other.n_in,
            n_scored=self.n_scored + other.n_scored,
            stage_ms={
                k: self.stage_ms.get(k, 0.0) + other.stage_ms.get(k, 0.0)
                for k in self.stage_ms.keys() | other.stage_ms.keys()
            },
            shadow=_merge_jobs(self.shadow, other.shadow),
            model_version=other.model_version or self.model_version,
            poison=self.poison + other.poison,
        )
        for d in (self.decisions, other.decisions):
            for k, n in d.items():
                out.decisions[k] = out.decisions.get(k, 0) + n
        out.count_dead_letters()
        return out


def _merge_jobs(a: ShadowJob | None, b: ShadowJob | None) -> ShadowJob | None:
    if a is None or b is None:
        return a or b
    if a.primary.model_version != b.primary.model_version or a.columns.keys() != b.columns.keys():
        return a  # a swap between the halves: compare the first half only
    return ShadowJob(
        columns={k: np.concatenate([a.columns[k], b.columns[k]]) for k in a.columns},
        events=a.events + b.events,
        primary=Prediction(
            scores=np.concatenate([a.primary.scores, b.primary.scores]),
            model_name=a.primary.model_name,
            model_version=a.primary.model_version,
            latency_ms=max(a.primary.latency_ms, b.primary.latency_ms),
        ),
        primary_decisions=a.primary_decisions + b.primary_decisions,
        trace_link=a.trace_link,
    )


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
        self.output_codecs = output_codecs
        self.primary = primary
        self.engine = DecisionEngine(cfg.decision)
        self.decode = DecodeStage(cfg, input_codec)
        self.features = FeatureStage(cfg, windows, online)
        self.outputs = OutputStage(cfg, output_codecs)
        self.columns = self.features.columns

    @property
    def windows(self) -> WindowSource | None:
        return self.features.windows

    @property
    def online(self) -> OnlineSource | None:
        return self.features.online

    async def process(
        self, records: Sequence[InRecord], trace: AnyBatchTrace = NO_TRACE
    ) -> BatchResult:
        """Process one batch. Raises DependencyError (retriable) if a dependency failed:
        nothing of the batch may then be published or committed. Any other exception means
        some record of the batch is poison; :meth:`isolate` finds it. `trace` gets a span
        per stage and stamps each output with its event's trace context."""
        t_batch = time.perf_counter()
        result = BatchResult(n_in=len(records))
        t0 = time.perf_counter()
        with trace.stage("decode"):
            batch = self.decode(records, result.dlq)
        result.count_dead_letters()
        result.stage_ms["decode_ms"] = _ms(t0)
        if not batch.events:
            result.stage_ms["batch_ms"] = _ms(t_batch)
            return result

        t0 = time.perf_counter()
        with trace.stage("features"):
            cols = await self.features(batch.events, result.stage_ms)
        result.stage_ms["features_ms"] = _ms(t0)

        with trace.stage("score"):
            pred = await self.primary.predict(cols)
        result.stage_ms["score_ms"] = pred.latency_ms
        if len(pred.scores) != len(batch.events):
            raise DependencyError(
                f"model {pred.model_name} returned {len(pred.scores)} scores "
                f"for {len(batch.events)} events",
                stage="score",
            )
        with trace.stage("decision"):
            decisions = self.engine.decide(pred.scores, cols)
        result.model_version = pred.model_version
        result.shadow = ShadowJob(cols, batch.events, pred, decisions.decision, trace.link)

        t0 = time.perf_counter()
        with trace.stage("encode"):
            outputs, sources = self.outputs(
                batch, cols, pred, decisions, result.stage_ms, _ms(t_batch)
            )
        trace.stamp(outputs, sources)
        result.outputs.extend(outputs)
        result.sources.extend(sources)
        result.stage_ms["encode_ms"] = _ms(t0)
        result.n_scored = len(batch.events)
        for d in decisions.decision:
            result.decisions[d] = result.decisions.get(d, 0) + 1
        result.stage_ms["batch_ms"] = _ms(t_batch)
        return result

    async def isolate(
        self, records: Sequence[InRecord], trace: AnyBatchTrace = NO_TRACE
    ) -> BatchResult:
        """Process `records`, splitting on non-outage failures until each poison record
        stands alone; those become dead letters, the rest is scored as usual.

        A dependency outage (retriable) is raised as it is: the caller pauses and retries.
        Costs about log2(len(records)) extra calls per poison record, only when one fails.
        """
        try:
            return await self.process(records, trace)
        except Exception as e:
            if is_outage(e):
                raise
            if len(records) == 1:
                return self._poison(records[0], e)
        mid = len(records) // 2
        left = await self.isolate(records[:mid], trace)
        right = await self.isolate(records[mid:], trace)
        return left.merge(right)

    def _poison(self, rec: InRecord, e: Exception) -> BatchResult:
        if isinstance(e, RaylaneError):
            err = e
        else:
            err = ProcessingError(f"{type(e).__name__}: {e}", stage="process")
            log.error(
                "%s is poison: %s [trace_id=%s]",
                rec.where,
                err.message,
                trace_id_of(rec.headers) or "-",
                exc_info=e,
            )
        result = BatchResult(
            n_in=1, dlq=[dead_letter(self.cfg, rec, err, self._body_correlation(rec))], poison=1
        )
        result.count_dead_letters()
        return result

    def _body_correlation(self, rec: InRecord) -> str | None:
        """The correlation id in the record's body (it decoded before it failed), if any."""
        oks, _ = self.decode.codec.decode_batch([rec.value or b""])
        cid = oks[0][1].get("correlation_id") if oks else None
        return str(cid) if cid else None
