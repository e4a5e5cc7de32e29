"""The MLflow component: ``mlflow server`` on sqlite + local artifacts, or ``MLFLOW_TRACKING_URI``.

Artifacts are served through the tracking server (``--serve-artifacts`` with
``--artifacts-destination``), so clients log to ``mlflow-artifacts:/`` URIs and never need
the server's filesystem. To keep memory small it runs one uvicorn worker and no job
execution: with MLflow 3.17 defaults the job runner adds seven huey consumer processes
(~1.2 GB RSS measured on the dev box).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from raylane.errors import StackError
from raylane.settings import ENV_MLFLOW

from ._component import Component, Health

__all__ = ["MLflowServer", "mlflow_health"]


def mlflow_health(uri: str, timeout_s: float = 2.0) -> Health:
    """GET ``<uri>/health`` for http(s) URIs; other URIs (sqlite, file) have no server."""
    if not uri.startswith(("http://", "https://")):
        scheme = uri.split(":", 1)[0] if ":" in uri else "file"
        return Health(True, f"no server to check ({scheme} URI)")
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
            body = resp.read(64).decode("utf-8", "replace").strip()
            if resp.status == 200:
                return Health(True, f"/health {body or resp.status}")
            return Health(False, f"/health returned HTTP {resp.status}")
    except urllib.error.HTTPError as e:
        return Health(False, f"/health returned HTTP {e.code}")
    except urllib.error.URLError as e:
        return Health(False, f"{getattr(e.reason, 'strerror', None) or e.reason}")
    except Exception as e:
        return Health(False, f"{type(e).__name__}: {e}")


class MLflowServer(Component):
    name = "mlflow"
    settings_key = "mlflow_tracking_uri"
    what = "an MLflow server"
    port_env = "RAYLANE_MLFLOW_PORT"
    default_port = 5000
    start_timeout_s = 90.0  # ~8 s idle on 2 cores; much more while a test suite runs
    poll_interval_s = 0.25

    def external(self) -> str | None:
        return os.environ.get(ENV_MLFLOW) or None

    def local_address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, home: Path) -> list[str]:
        if importlib.util.find_spec("mlflow") is None:
            raise StackError(
                "mlflow is not installed in this environment; reinstall with `make setup`"
            )
        root = home / "mlflow"
        artifacts = root / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            artifacts.as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]

    def env(self, home: Path) -> dict[str, str]:
        return {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONUNBUFFERED": "1",
        }

    def probe(self, address: str, timeout_s: float = 2.0) -> Health:
        return mlflow_health(address, timeout_s)

    def unreachable_hint(self, address: str) -> str:
        return f"start that server or unset {ENV_MLFLOW} to use the embedded MLflow"
