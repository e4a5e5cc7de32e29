"""Stage 4 of a batch: the scored records and the decision topics' records, encoded in bulk.

Each output carries the input's ``event_id`` and ``correlation_id`` (body and headers), so
downstream consumers de-duplicate; only the fields an output contract declares are kept.
An output's ``fields:`` (see :class:`~raylane.config.OutputConfig`) fill more of them from a
small set of sources: now, the event time, the score, the decision, the model, an input
field or a feature column.
Next to the outputs it returns the input record of each (a parallel list of references), so
the ingress can dead-letter the input of an output Kafka refuses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raylane.config import OutputConfig, PipelineConfig
from raylane.kafka.records import InRecord, OutRecord
from raylane.pipeline.decision import Decisions
from raylane.pipeline.decode import CORRELATION_HEADER, GENERATED_HEADER, Decoded
from raylane.pipeline.ports import OutputCodec, Prediction

__all__ = ["OutputStage", "out_headers"]


def out_headers(ev: Mapping[str, Any], generated: bool) -> list[tuple[str, bytes]]:
    """The correlation and event id headers every output of `ev` carries."""
    h = [
        (CORRELATION_HEADER, str(ev["correlation_id"]).encode()),
        ("event_id", str(ev["event_id"]).encode()),
    ]
    if generated:
        h.append((GENERATED_HEADER, b"true"))
    return h


def _project(
    records: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
    sources: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Keep only the fields an output contract declares (the rest would be rejected),
    filling those named in `sources` (an output's ``fields:``) from their source."""
    if not sources:
        return [{f: r.get(f) for f in fields} for r in records]
    return [
        {f: field_value(r, sources[f]) if f in sources else r.get(f) for f in fields}
        for r in records
    ]


def field_value(rec: Mapping[str, Any], source: str) -> Any:
    """The value of one ``fields:`` source for a scored record (see OutputConfig.fields)."""
    kind, _, name = source.partition(".")
    if kind == "input":
        return rec["_input"].get(name)
    if kind == "feature":
        return rec["features"].get(name)
    if kind == "now":
        return rec["scored_at"]
    if kind == "event_time":
        return rec["_event_time_ms"]
    return rec[kind]  # score, decision, rule, model_name, model_version


class OutputStage:
    """Encodes a scored batch into output records (scored topic plus rule topics)."""

    def __init__(self, cfg: PipelineConfig, output_codecs: Mapping[str, OutputCodec]) -> None:
        self.cfg = cfg
        self.output_codecs = output_codecs
        self.columns = cfg.features.columns()
        self._scored = output_codecs[cfg.outputs.scored.contract]

    @staticmethod
    def _sources(out: OutputConfig) -> dict[str, str]:
        return dict(out.fields)

    def __call__(
        self,
        batch: Decoded,
        cols: Mapping[str, np.ndarray],
        pred: Prediction,
        decisions: Decisions,
        stage_ms: Mapping[str, float],
        batch_ms: float,
    ) -> tuple[list[OutRecord], list[InRecord]]:
        """The output records of a scored batch, and the input record of each."""
        cfg = self.cfg
        events = batch.events
        now_ms = int(time.time() * 1000)
        latency = {k: round(v, 3) for k, v in stage_ms.items()}
        latency["batch_ms"] = round(batch_ms, 3)
        col_lists = {c: cols[c].tolist() for c in self.columns}
        scores = pred.scores.astype(np.float64).tolist()
        rules = cfg.decision.rules
        event_time = cfg.input.event_time
        scored_recs: list[dict[str, Any]] = []
        by_rule: dict[int, list[int]] = {}
        for i, ev in enumerate(events):
            feats = {
                c: (None if math.isnan(v) else v)
                for c, v in ((c, col_lists[c][i]) for c in self.columns)
            }
            lat = dict(latency)
            rec_in: InRecord = batch.records[i]
            if rec_in.timestamp_ms:
                lat["e2e_ms"] = float(now_ms - rec_in.timestamp_ms)
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
                _input=ev,
                _event_time_ms=event_time.ms_or_none(ev),
            )
            scored_recs.append(rec)
            r = int(decisions.rule_index[i])
            if r >= 0 and rules[r].publish is not None:
                by_rule.setdefault(r, []).append(i)

        key_field = cfg.input.key_field
        keys = [str(ev.get(key_field, "")).encode() for ev in events]
        hdrs = [out_headers(ev, g) for ev, g in zip(events, batch.generated, strict=True)]
        values = self._scored.encode_many(
            _project(scored_recs, self._scored.field_names, self._sources(cfg.outputs.scored))
        )
        topic = cfg.outputs.scored.topic
        out = [OutRecord(topic, k, v, h) for k, v, h in zip(keys, values, hdrs, strict=True)]
        sources = list(batch.records)
        for r, idxs in by_rule.items():
            pub = rules[r].publish
            assert pub is not None
            codec = self.output_codecs[pub.contract]
            vals = codec.encode_many(
                _project([scored_recs[i] for i in idxs], codec.field_names, self._sources(pub))
            )
            out.extend(
                OutRecord(pub.topic, keys[i], v, hdrs[i]) for i, v in zip(idxs, vals, strict=True)
            )
            sources.extend([batch.records[i] for i in idxs])
        return out, sources
