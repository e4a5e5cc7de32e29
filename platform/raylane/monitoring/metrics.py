"""Prometheus metrics of the data path, and where to scrape them.

Each process that runs an ingress replica serves its metrics over HTTP on an
ephemeral port and announces it in a Prometheus ``file_sd`` target file under
``$RAYLANE_HOME/prometheus/targets/`` (docker/prometheus/prometheus.yml scrapes that
directory; the demo's live view reads the same targets). Names follow the
Prometheus conventions: ``raylane_<thing>_<unit>``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "ENV_METRICS_HOST",
    "METRICS",
    "PipelineMetrics",
    "metrics_host",
    "serve_metrics",
    "target_files",
    "withdraw_metrics",
]

ENV_METRICS_HOST = "RAYLANE_METRICS_HOST"

_LATENCY_BUCKETS = (
    0.5,
    1,
    2,
    3,
    5,
    7.5,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    150,
    250,
    500,
    1000,
    2500,
    5000,
)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000)


class PipelineMetrics:
    """The metric families; label `pipeline` everywhere so one Prometheus holds many."""

    def __init__(self) -> None:
        self.events_in = Counter("raylane_events_in_total", "Input records consumed.", ["pipeline"])
        self.scored = Counter(
            "raylane_events_scored_total", "Events scored, by decision.", ["pipeline", "decision"]
        )
        self.dlq = Counter(
            "raylane_events_dlq_total",
            "Records sent to the DLQ, by error class.",
            ["pipeline", "error_class"],
        )
        self.batches = Counter("raylane_batches_total", "Batches processed.", ["pipeline"])
        self.batch_size = Histogram(
            "raylane_batch_size", "Records per micro-batch.", ["pipeline"], buckets=_BATCH_BUCKETS
        )
        self.stage_ms = Histogram(
            "raylane_stage_latency_ms",
            "Per-batch stage latency in ms.",
            ["pipeline", "stage"],
            buckets=_LATENCY_BUCKETS,
        )
        self.e2e_ms = Histogram(
            "raylane_event_to_scored_latency_ms",
            "From the input record's Kafka timestamp to its outputs being acknowledged, in ms.",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS,
        )
        self.retries = Counter(
            "raylane_batch_retries_total",
            "Batch retries after a failure (a dependency outage, or a poison record before "
            "isolation).",
            ["pipeline", "stage"],
        )
        self.isolations = Counter(
            "raylane_poison_isolations_total",
            "Batches split to isolate poison records (each then dead-lettered with its error "
            "class).",
            ["pipeline"],
        )
        self.unreadable_batches = Counter(
            "raylane_unreadable_batches_total",
            "Kafka record batches the ingress could not read (decompressed past "
            "input.max_decompressed_batch_bytes, unsupported codec, corrupt), dead-lettered "
            "whole and gone past.",
            ["pipeline", "error_class"],
        )
        self.publish_rejected = Counter(
            "raylane_publish_rejected_total",
            "Records Kafka refused for good (too large, invalid or unauthorized topic), by "
            "Kafka error; record=output: the input was dead-lettered instead; "
            "record=dead_letter: a dead letter was refused and dropped (alert on it).",
            ["pipeline", "error", "record"],
        )
        self.paused = Gauge(
            "raylane_consumer_paused", "1 while consumption is paused.", ["pipeline"]
        )
        self.breaker_open = Gauge(
            "raylane_breaker_open",
            "1 while a dependency's breaker is open.",
            ["pipeline", "dependency"],
        )
        self.commits = Counter("raylane_offset_commits_total", "Offset commits.", ["pipeline"])
        self.seconds_since_commit = Gauge(
            "raylane_seconds_since_commit",
            "Seconds since the ingress replica last committed offsets (set by its health check).",
            ["pipeline"],
        )
        self.consumer_lag = Gauge(
            "raylane_consumer_lag",
            "Records not yet committed per owned partition (high watermark of the last fetch).",
            ["pipeline", "partition"],
        )
        self.shadow_compared = Counter(
            "raylane_shadow_compared_total",
            "Events compared with a shadow.",
            ["pipeline", "shadow"],
        )
        self.shadow_agree = Counter(
            "raylane_shadow_agreements_total",
            "Shadow decisions equal to the primary's.",
            ["pipeline", "shadow"],
        )
        self.shadow_errors = Counter(
            "raylane_shadow_errors_total",
            "Shadow batches that failed or timed out.",
            ["pipeline", "shadow", "reason"],
        )
        self.shadow_skipped = Counter(
            "raylane_shadow_skipped_total",
            "Shadow batches skipped because too many were in flight.",
            ["pipeline", "shadow"],
        )
        self.shadow_abs_delta = Histogram(
            "raylane_shadow_abs_delta",
            "|primary score - shadow score| per event.",
            ["pipeline", "shadow"],
            buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
        )
        # rolling shadow aggregates of this replica (the shared ones are in Redis)
        self.shadow_agreement_rate = Gauge(
            "raylane_shadow_agreement_rate",
            "Rolling decision agreement rate with a shadow.",
            ["pipeline", "shadow"],
        )
        self.shadow_abs_delta_stat = Gauge(
            "raylane_shadow_abs_delta_rolling",
            "Rolling mean / p95 of |primary - shadow score|.",
            ["pipeline", "shadow", "stat"],
        )
        self.shadow_flag_rate = Gauge(
            "raylane_shadow_flag_rate",
            "Rolling rate of non-default decisions, per model role.",
            ["pipeline", "shadow", "role"],
        )
        self.shadow_latency_ms = Gauge(
            "raylane_shadow_model_latency_ms",
            "Rolling p50 / p99 batch-call latency, per model role.",
            ["pipeline", "shadow", "role", "quantile"],
        )
        self.cache_requests = Counter(
            "raylane_prediction_cache_requests_total",
            "Prediction cache lookups, by result.",
            ["deployment", "result"],
        )
        self.cache_hit_rate = Gauge(
            "raylane_prediction_cache_hit_rate",
            "Hits / lookups of the prediction cache since start.",
            ["deployment"],
        )
        self.model_swaps = Counter(
            "raylane_model_swaps_total",
            "Hot swaps of a model replica to a new version.",
            ["deployment"],
        )
        self.model_swaps_refused = Counter(
            "raylane_model_swaps_refused_total",
            "New versions a model replica refused to swap to (missing column, flavor, load error).",
            ["deployment"],
        )


#: Process-wide metric families (prometheus_client registers each name once).
METRICS = PipelineMetrics()
_served: dict[str, int] = {}


def metrics_host() -> str:
    """The address metrics servers listen on and announce: ``RAYLANE_METRICS_HOST``.

    Loopback (127.0.0.1) by default, so nothing off the machine can read them; on a cluster
    set ``auto`` (this node's address, for a Prometheus on another node) or an address.
    """
    host = os.environ.get(ENV_METRICS_HOST, "").strip() or "127.0.0.1"
    return _node_ip() if host == "auto" else host


def serve_metrics(home: Path, name: str) -> int:
    """Serve this process's metrics on an ephemeral port of :func:`metrics_host` and announce
    it in file_sd.

    Idempotent per process; returns the port.
    """
    if name in _served:
        return _served[name]
    host = metrics_host()
    server, _thread = start_http_server(0, addr=host, registry=REGISTRY)
    port = int(server.server_port)
    targets = home / "prometheus" / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    path = targets / f"{name}-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps([{"targets": [f"{host}:{port}"], "labels": {"job": "raylane", "process": name}}])
    )
    tmp.replace(path)
    _served[name] = port
    return port


def withdraw_metrics(home: Path, name: str) -> None:
    """Remove this process's file_sd target (on clean shutdown)."""
    (home / "prometheus" / "targets" / f"{name}-{os.getpid()}.json").unlink(missing_ok=True)
    _served.pop(name, None)


_LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0")


def target_files(home: Path) -> list[Path]:
    """The announced file_sd targets, without those of local processes that are gone.

    A replica that dies without withdrawing (killed, a crashed test session) leaves its
    file behind; its port is soon reused by some other process, so reading it would count
    another process's metrics, or get no HTTP at all. A local target whose process (the
    pid in the file name) no longer exists is removed. Targets on other hosts are kept.
    """
    out = []
    for f in sorted((home / "prometheus" / "targets").glob("*.json")):
        if _stale(f):
            f.unlink(missing_ok=True)
            continue
        out.append(f)
    return out


def _stale(f: Path) -> bool:
    pid_text = f.stem.rpartition("-")[2]
    if not pid_text.isdigit():
        return False
    try:
        groups = json.loads(f.read_text())
        hosts = {str(t).rpartition(":")[0] for g in groups for t in g.get("targets", [])}
    except (OSError, ValueError, AttributeError, TypeError):
        return False
    if not hosts or not hosts <= set(_LOCAL_HOSTS):
        return False  # another node's process: not ours to judge
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _node_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
