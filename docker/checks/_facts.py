"""What the deployment files must agree with: paths, settings, versions, the serve config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
PYPROJECT = ROOT / "pyproject.toml"
COMPOSE = DOCKER / "compose.yaml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "raylane.json"
RAYSERVICE = DOCKER / "k8s" / "rayservice.yaml"

#: The compose volume holding $RAYLANE_HOME (shared by the raylane containers and Prometheus).
RAYLANE_VOLUME = "raylane-home"
#: File the bootstrap Job touches under $RAYLANE_HOME; the Ray head waits for it.
BOOTSTRAP_MARKER = "bootstrapped-fraud"


def settings_env_names() -> set[str]:
    """The variables raylane.settings reads (Settings.as_env)."""
    from raylane.settings import Settings

    s = Settings(
        kafka_bootstrap="k:1",
        redis_url="redis://r:1/0",
        mlflow_tracking_uri="http://m:1",
        home=Path("/h"),
    )
    return set(s.as_env())


def known_raylane_env_names() -> set[str]:
    """Every RAYLANE_* variable the package reads (string literals in its source)."""
    names: set[str] = set()
    for py in (ROOT / "platform" / "raylane").rglob("*.py"):
        names |= set(re.findall(r"[\"'](RAYLANE_[A-Z0-9_]+)[\"']", py.read_text()))
    return names


def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


def fraud_app(path: Path = FRAUD) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())["applications"][0]


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def volumes_of(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each mount of a compose service."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((v.get("source", ""), v["target"]))
        else:
            parts = v.split(":")
            out.append((parts[0], parts[1]))
    return out


def raylane_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services running the raylane image."""
    return {
        n: s
        for n, s in compose["services"].items()
        if str(s.get("image", "")).startswith("raylane:")
    }
