"""Prometheus samples for the dashboard: where they come from, and their history.

A snapshot is what :func:`raylane.monitoring.live.scrape` returns: every ``raylane_*``
sample of one pipeline summed over its processes, keyed ``name{label=value,...}`` (labels
sorted, without ``pipeline``). Two sources give one: the replicas' own endpoints found
through the file_sd targets under ``$RAYLANE_HOME/prometheus/targets/`` (a machine running
the pipeline locally), or a Prometheus server's HTTP API (a cluster, where the dashboard
cannot reach the replicas). :class:`MetricsHistory` keeps the snapshots of the last minutes
and turns counters into rates and histogram buckets into quantiles over time, as PromQL's
``rate`` and ``histogram_quantile`` do.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from raylane.errors import DependencyError
from raylane.monitoring.live import histogram_quantile, scrape

__all__ = [
    "FileSDSource",
    "MetricsHistory",
    "MetricsSource",
    "PrometheusSource",
    "Snapshot",
    "parse_key",
    "quantile",
    "total",
    "totals_by",
]

Samples = Mapping[str, float]
MetricsSource = Callable[[], dict[str, float]]

#: Labels a Prometheus server adds to every series; a snapshot sums over them.
_TARGET_LABELS = frozenset({"instance", "job", "process", "pipeline"})


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """``name{a=1,b=2}`` -> ``("name", {"a": "1", "b": "2"})``."""
    name, _, rest = key.partition("{")
    labels = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if "=" in p)
    return name, labels


def _key(name: str, labels: Mapping[str, str]) -> str:
    return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def totals_by(
    samples: Samples, name: str, by: str, where: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Sum of the samples of `name` per value of label `by` (those matching `where`)."""
    out: dict[str, float] = {}
    for key, v in samples.items():
        n, labels = parse_key(key)
        if n != name or any(labels.get(k) != w for k, w in (where or {}).items()):
            continue
        g = labels.get(by, "")
        out[g] = out.get(g, 0.0) + v
    return out


def total(samples: Samples, name: str, where: Mapping[str, str] | None = None) -> float:
    """Sum of every sample of `name` (matching `where`)."""
    return sum(totals_by(samples, name, "", where).values())


def quantile(
    samples: Samples, name: str, q: float, where: Mapping[str, str] | None = None
) -> float:
    """``histogram_quantile`` of `name`'s buckets, summed over every label but ``le`` and those
    in `where` (NaN without observations)."""
    summed: dict[str, float] = {}
    for key, v in samples.items():
        n, labels = parse_key(key)
        if n != f"{name}_bucket" or any(labels.get(k) != w for k, w in (where or {}).items()):
            continue
        k = _key(n, {"le": labels["le"], **(where or {})})
        summed[k] = summed.get(k, 0.0) + v
    inner = ",".join(f"{k}={v}" for k, v in sorted((where or {}).items()))
    return histogram_quantile(summed, name, q, inner)


@dataclass(frozen=True)
class Snapshot:
    t: float
    samples: dict[str, float]


@dataclass
class MetricsHistory:
    """Snapshots of the last `keep_s` seconds, and rates and quantiles between them."""

    keep_s: float = 900.0
    snapshots: deque[Snapshot] = field(default_factory=deque)

    def add(self, samples: dict[str, float], t: float | None = None) -> Snapshot:
        snap = Snapshot(time.time() if t is None else t, samples)
        self.snapshots.append(snap)
        while self.snapshots and self.snapshots[0].t < snap.t - self.keep_s:
            self.snapshots.popleft()
        return snap

    @property
    def latest(self) -> dict[str, float]:
        return self.snapshots[-1].samples if self.snapshots else {}

    def _pairs(self) -> list[tuple[Snapshot, Snapshot]]:
        s = list(self.snapshots)
        return [(a, b) for a, b in itertools.pairwise(s) if b.t > a.t]

    def rate_series(
        self, name: str, by: str = "", where: Mapping[str, str] | None = None
    ) -> tuple[list[float], dict[str, list[float]]]:
        """(times, {group: per-second increase of `name` between consecutive snapshots}).

        A counter that went down (a replica restarted) counts from zero, as PromQL's
        ``rate`` does.
        """
        times: list[float] = []
        out: dict[str, list[float]] = {}
        for a, b in self._pairs():
            prev, cur = totals_by(a.samples, name, by, where), totals_by(b.samples, name, by, where)
            times.append(b.t)
            for g in set(prev) | set(cur) | set(out):
                inc = cur.get(g, 0.0) - prev.get(g, 0.0)
                if inc < 0:
                    inc = cur.get(g, 0.0)
                out.setdefault(g, [0.0] * (len(times) - 1)).append(inc / (b.t - a.t))
        return times, out

    def quantile_series(
        self, name: str, q: float, where: Mapping[str, str] | None = None
    ) -> tuple[list[float], list[float | None]]:
        """(times, quantile `q` of the observations between consecutive snapshots; None
        where there were none)."""
        times: list[float] = []
        values: list[float | None] = []
        bucket = f"{name}_bucket"
        for a, b in self._pairs():
            delta = {}
            for key, v in b.samples.items():
                if key.startswith(bucket + "{"):
                    inc = v - a.samples.get(key, 0.0)
                    delta[key] = v if inc < 0 else inc
            value = quantile(delta, name, q, where)
            times.append(b.t)
            values.append(None if math.isnan(value) else value)
        return times, values


class FileSDSource:
    """Scrapes the replicas announced in ``<home>/prometheus/targets/`` (this machine)."""

    def __init__(self, home: Path, pipeline: str, timeout_s: float = 1.0) -> None:
        self.home, self.pipeline, self.timeout_s = home, pipeline, timeout_s

    def __call__(self) -> dict[str, float]:
        return scrape(self.home, self.timeout_s, pipeline=self.pipeline)

    def describe(self) -> str:
        return f"file_sd targets in {self.home / 'prometheus' / 'targets'}"


class PrometheusSource:
    """Reads the same samples from a Prometheus server that scrapes the replicas."""

    def __init__(self, url: str, pipeline: str, timeout_s: float = 3.0) -> None:
        self.url, self.pipeline, self.timeout_s = url.rstrip("/"), pipeline, timeout_s

    def __call__(self) -> dict[str, float]:
        query = '{__name__=~"raylane_.+"}'
        try:
            r = httpx.get(
                f"{self.url}/api/v1/query", params={"query": query}, timeout=self.timeout_s
            )
            r.raise_for_status()
            result = r.json()["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError) as e:
            raise DependencyError(
                f"cannot query the Prometheus server at {self.url}: {e}; check --prometheus",
                stage="dashboard",
            ) from e
        return samples_of_vector(result, self.pipeline)

    def describe(self) -> str:
        return f"Prometheus server {self.url}"


def samples_of_vector(result: list[dict[str, object]], pipeline: str) -> dict[str, float]:
    """A Prometheus instant vector as a snapshot (summed over instances, this pipeline's)."""
    out: dict[str, float] = {}
    for series in result:
        metric = dict(series["metric"])  # type: ignore[call-overload]
        name = str(metric.pop("__name__", ""))
        if metric.get("pipeline", pipeline) != pipeline:
            continue
        labels = {str(k): str(v) for k, v in metric.items() if k not in _TARGET_LABELS}
        value = float(series["value"][1])  # type: ignore[index]
        key = _key(name, labels)
        out[key] = out.get(key, 0.0) + value
    return out
