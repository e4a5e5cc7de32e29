"""Where the dashboard's data comes from: metrics, Redis, the report folder and MLflow.

:class:`DashboardData` reads, for one pipeline, what the platform already keeps: the
replicas' Prometheus samples (a :data:`~raylane.dashboard.samples.MetricsSource`, scraped
every few seconds into a :class:`~raylane.dashboard.samples.MetricsHistory`), the shadow
entries and counts in Redis (the same store `raylane shadow report` and `raylane promote`
read), the drift state and window list in Redis, the drift reports on disk, and the model
versions, aliases and promotion history in MLflow (cached for a few seconds). Each page's
figures are then shaped by :mod:`raylane.dashboard.pages`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylane.config import PipelineConfig
from raylane.dashboard import pages
from raylane.dashboard.samples import MetricsHistory, MetricsSource
from raylane.errors import RaylaneError
from raylane.lifecycle.shadow_stats import ShadowStore
from raylane.monitoring.drift_monitor import REPORT_NAME, report_dir_for
from raylane.monitoring.drift_state import read_state, read_windows
from raylane.settings import Settings

__all__ = ["DashboardData"]

log = logging.getLogger("raylane.dashboard")


class _Cached:
    """One value (or its error) recomputed at most every `ttl_s` seconds (MLflow is slow to
    ask, slower still to say it cannot answer)."""

    def __init__(self, fn: Callable[[], Any], ttl_s: float) -> None:
        self.fn, self.ttl_s = fn, ttl_s
        self._at = -float("inf")
        self._value: Any = None
        self._error: RaylaneError | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                try:
                    self._value, self._error = self.fn(), None
                except RaylaneError as e:
                    self._error = e
                self._at = time.monotonic()
            if self._error is not None:
                raise self._error
            return self._value


class DashboardData:
    """The four pages' data for one pipeline."""

    def __init__(
        self,
        cfg: PipelineConfig,
        source: MetricsSource,
        *,
        settings: Settings | None = None,
        scrape_every_s: float = 2.0,
        mlflow_ttl_s: float = 10.0,
    ) -> None:
        self.cfg = cfg
        self.settings = settings or Settings.load()
        self.source = source
        self.scrape_every_s = scrape_every_s
        self.history = MetricsHistory()
        self.metrics_error: str | None = None
        self._store = ShadowStore(self.settings.redis_url)
        self._models = _Cached(self._read_models, mlflow_ttl_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- metrics, scraped in the background ------------------------------------------

    def scrape_once(self) -> None:
        try:
            samples = self.source()
            self.metrics_error = None
        except RaylaneError as e:
            self.metrics_error = e.message
            return
        with self._lock:
            self.history.add(samples)

    def start(self) -> None:
        """Scrape every `scrape_every_s` seconds in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self.scrape_once()

        def loop() -> None:
            while not self._stop.wait(self.scrape_every_s):
                try:
                    self.scrape_once()
                except Exception:  # a bad scrape must not end the loop
                    log.exception("dashboard scrape failed")

        self._thread = threading.Thread(target=loop, name="dashboard-scrape", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- pages ------------------------------------------------------------------------

    def shadow(self) -> dict[str, Any]:
        names = [s.name for s in self.cfg.models.shadows]
        entries = {s: self._store.entries(self.cfg.name, s) for s in names}
        counts = {s: self._store.counts(self.cfg.name, s) for s in names}
        drift = read_state(self.settings.redis_url, self.cfg.name)
        return pages.shadow_page(self.cfg, entries, counts, drift)

    def pipeline(self) -> dict[str, Any]:
        with self._lock:
            out = pages.pipeline_page(self.cfg, self.history)
        out["metrics_error"] = self.metrics_error
        out["source"] = getattr(self.source, "describe", lambda: "custom")()
        return out

    def drift(self) -> dict[str, Any]:
        state = read_state(self.settings.redis_url, self.cfg.name)
        windows = read_windows(self.settings.redis_url, self.cfg.name)
        folder = self.report_dir
        reports = (
            [p.name for p in folder.iterdir() if REPORT_NAME.fullmatch(p.name)]
            if folder.is_dir()
            else []
        )
        return pages.drift_page(self.cfg, state, windows, reports)

    def actions(self) -> dict[str, Any]:
        with self._lock:
            samples = dict(self.history.latest)
        try:
            models, history = self._models.get()
            error = None
        except RaylaneError as e:
            models, history, error = {}, [], e.message
        out = pages.actions_page(self.cfg, samples, models, history)
        out["mlflow_error"] = error
        return out

    # -- drift reports ----------------------------------------------------------------

    @property
    def report_dir(self) -> Path:
        return report_dir_for(self.cfg, self.settings.home)

    def report_path(self, name: str) -> Path | None:
        """The report file called `name`, only if it is one of the monitor's reports."""
        if not REPORT_NAME.fullmatch(name) or "/" in name or "\\" in name:
            return None
        path = self.report_dir / name
        return path if path.is_file() else None

    # -- MLflow -----------------------------------------------------------------------

    def _read_models(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from raylane.lifecycle.promotion import history
        from raylane.registry import parse_uri
        from raylane.registry._mlflow import boundary, client

        name = parse_uri(self.cfg.models.primary.uri)[0]
        uri = self.settings.mlflow_tracking_uri
        with boundary(f"reading the versions of model {name}", uri, name=name):
            c = client(uri)
            registered = c.get_registered_model(name).aliases or {}
            aliases = {str(k): str(v) for k, v in registered.items()}
            found = c.search_model_versions(f"name='{name}'")
        by_version: dict[str, list[str]] = {}
        for alias, v in aliases.items():
            by_version.setdefault(v, []).append(alias)
        versions = [
            {
                "version": str(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "status": str(mv.status),
                "created_ms": int(mv.creation_timestamp or 0),
                "run_id": str(mv.run_id or ""),
                "source": str(mv.source or ""),
            }
            for mv in sorted(found, key=lambda mv: int(mv.version), reverse=True)
        ]
        events = history(self.cfg, tracking_uri=uri)
        return {"name": name, "aliases": aliases, "versions": versions}, events
