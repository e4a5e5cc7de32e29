"""Serving the dashboard: loopback by default, a token whenever it is bound elsewhere.

:func:`open_dashboard` builds the data source and the app for one pipeline;
:class:`DashboardServer` runs it with uvicorn in a background thread (`raylane demo`, the
tests) or in the foreground (`raylane dashboard`).
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from typing import Any

import uvicorn

from raylane.config import PipelineConfig
from raylane.dashboard.app import create_app
from raylane.dashboard.collect import DashboardData
from raylane.dashboard.samples import FileSDSource, MetricsSource, PrometheusSource
from raylane.errors import ConfigError
from raylane.settings import Settings

__all__ = [
    "DEFAULT_PORT",
    "ENV_PROMETHEUS",
    "ENV_TOKEN",
    "DashboardServer",
    "check_bind",
    "open_dashboard",
]

DEFAULT_PORT = 8350
ENV_TOKEN = "RAYLANE_DASHBOARD_TOKEN"
#: a Prometheus server that scrapes the replicas (a cluster); unset: the local file_sd targets
ENV_PROMETHEUS = "RAYLANE_PROMETHEUS_URL"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if not _loopback(host) and not token:
        raise ConfigError(
            f"the dashboard would listen on {host}, reachable from other machines, without a "
            f"token; set {ENV_TOKEN} (or pass --token), or bind 127.0.0.1",
            stage="dashboard",
        )


def open_dashboard(
    cfg: PipelineConfig,
    *,
    prometheus_url: str | None = None,
    settings: Settings | None = None,
    scrape_every_s: float = 2.0,
) -> DashboardData:
    """The dashboard data of `cfg`'s pipeline, reading metrics from a Prometheus server when
    `prometheus_url` (or ``RAYLANE_PROMETHEUS_URL``) is set, else from the file_sd targets."""
    s = settings or Settings.load()
    url = prometheus_url or os.environ.get(ENV_PROMETHEUS, "").strip() or None
    source: MetricsSource = (
        PrometheusSource(url, cfg.name) if url else FileSDSource(s.home, cfg.name)
    )
    return DashboardData(cfg, source, settings=s, scrape_every_s=scrape_every_s)


class DashboardServer:
    """uvicorn serving the dashboard app; :meth:`start` in a thread, :meth:`run` in this one."""

    def __init__(
        self,
        data: DashboardData,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        refresh_s: float = 5.0,
    ) -> None:
        token = token or os.environ.get(ENV_TOKEN) or None
        check_bind(host, token)
        self.data, self.host, self.token = data, host, token
        app = create_app(data, token=token, refresh_s=refresh_s)
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        servers: list[Any] = getattr(self._server, "servers", [])
        for srv in servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return int(self._server.config.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout_s: float = 20.0) -> str:
        """Serve in a daemon thread; returns the URL once it listens."""
        self.data.start()
        self._thread = threading.Thread(target=self._server.run, name="dashboard", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"the dashboard did not start on {self.host}:{self._server.config.port} "
                    "(is the port taken? pass --port)",
                    stage="dashboard",
                )
            time.sleep(0.05)
        return self.url

    def run(self) -> None:
        """Serve in this thread until Ctrl-C."""
        self.data.start()
        try:
            self._server.run()
        finally:
            self.data.stop()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.data.stop()
