"""docker/compose.yaml with its Prometheus and Grafana files, against raylane's code."""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from _facts import (
    RAYLANE_VOLUME,
    env_of,
    known_raylane_env_names,
    raylane_services,
    settings_env_names,
    volumes_of,
)

SERVICES = {
    "kafka",
    "redis",
    "postgres",
    "mlflow",
    "bootstrap",
    "ray-head",
    "prometheus",
    "grafana",
}
#: ray-head's start order: the services it needs, and how ready each must be.
HEAD_NEEDS = {
    "kafka": "service_healthy",
    "redis": "service_healthy",
    "mlflow": "service_healthy",
    "bootstrap": "service_completed_successfully",
}
CONDITIONS = ("service_healthy", "service_completed_successfully", "service_started")


#: compose interpolation: ``${VAR}``, ``${VAR:?message}``, ``${VAR:-default}``
INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:[:?\-+][^}]*)?\}")


def interpolated(value: str, placeholder: str = "secret") -> str:
    """`value` with each compose ``${...}`` replaced by `placeholder` (for parsing URLs)."""
    return INTERPOLATION.sub(placeholder, value)


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def _has_healthcheck(svc: dict[str, Any]) -> bool:
    return bool((svc.get("healthcheck") or {}).get("test"))


def graph_problems(services: dict[str, dict[str, Any]]) -> list[str]:
    """Healthchecks and depends_on conditions."""
    problems = []
    one_shot = {n for n, s in services.items() if s.get("restart") == "no"}
    for name, svc in services.items():
        if name not in one_shot and not _has_healthcheck(svc):
            problems.append(f"{name} has no healthcheck")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on without conditions")
            continue
        for dep, spec in deps.items():
            cond = (spec or {}).get("condition")
            if dep not in services:
                problems.append(f"{name} depends on unknown service {dep}")
            elif cond not in CONDITIONS:
                problems.append(f"{name} -> {dep}: condition {cond!r}")
            elif cond == "service_healthy" and not _has_healthcheck(services[dep]):
                problems.append(
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                )
            elif cond == "service_completed_successfully" and dep not in one_shot:
                problems.append(f"{name} waits for {dep} to complete, but {dep} is not one-shot")
    head = services["ray-head"].get("depends_on") or {}
    for dep, cond in HEAD_NEEDS.items():
        if (head.get(dep) or {}).get("condition") != cond:
            problems.append(f"ray-head must wait for {dep} ({cond})")
    if ((services["mlflow"].get("depends_on") or {}).get("postgres") or {}).get(
        "condition"
    ) != "service_healthy":
        problems.append("mlflow must wait for postgres (service_healthy)")
    return problems


def raylane_env_problems(compose: dict[str, Any], base: Path) -> list[str]:
    """The raylane containers: settings from the environment, RAYLANE_HOME on the shared volume."""
    problems = []
    raylane = raylane_services(compose)
    if set(raylane) != {"bootstrap", "ray-head"}:
        problems.append(
            f"raylane image services: {sorted(raylane)}, expected bootstrap and ray-head"
        )
    names, known = settings_env_names(), known_raylane_env_names()
    for name, svc in raylane.items():
        env = env_of(svc)
        problems += [f"{name}: {v} (raylane.settings) is not set" for v in sorted(names - set(env))]
        problems += [
            f"{name}: {v} is not read by raylane"
            for v in sorted(env)
            if v.startswith("RAYLANE_") and v not in known
        ]
        mounts = {t: s for s, t in volumes_of(svc)}
        if mounts.get(env.get("RAYLANE_HOME", "")) != RAYLANE_VOLUME:
            problems.append(
                f"{name}: RAYLANE_HOME={env.get('RAYLANE_HOME')} is not on the "
                f"{RAYLANE_VOLUME} volume"
            )
        build = svc.get("build") or {}
        ctx = (base / build.get("context", ".")).resolve()
        if build and not (ctx / build.get("dockerfile", "Dockerfile")).is_file():
            problems.append(
                f"{name}: build dockerfile {build.get('dockerfile')} not found in {ctx}"
            )
    if not any(s.get("build") for s in raylane.values()):
        problems.append("no service builds the raylane image")
    return problems


def connection_problems(services: dict[str, dict[str, Any]]) -> list[str]:
    """ray-head's Kafka, Redis and MLflow settings reach the services as they are configured."""
    from importlib.metadata import version

    from mlflow.server.security_utils import is_allowed_host_header

    problems = []
    env, kafka = env_of(services["ray-head"]), env_of(services["kafka"])
    advertised = {
        a.split("://", 1)[1] for a in kafka.get("KAFKA_ADVERTISED_LISTENERS", "").split(",") if a
    }
    if env.get("RAYLANE_KAFKA_BOOTSTRAP") not in advertised:
        problems.append(
            f"RAYLANE_KAFKA_BOOTSTRAP={env.get('RAYLANE_KAFKA_BOOTSTRAP')} is not an "
            f"advertised Kafka listener {sorted(advertised)}"
        )
    try:
        cluster_id_ok = len(base64.urlsafe_b64decode(kafka.get("CLUSTER_ID", "") + "==")) == 16
    except ValueError:
        cluster_id_ok = False
    if not cluster_id_ok:
        problems.append("kafka CLUSTER_ID must be a base64url-encoded UUID (22 characters)")
    redis = urlparse(interpolated(env.get("REDIS_URL", "")))
    if redis.scheme != "redis" or redis.hostname not in services:
        problems.append(f"REDIS_URL={env.get('REDIS_URL')} does not name a compose service")

    uri = urlparse(env.get("MLFLOW_TRACKING_URI", ""))
    cmd = services["mlflow"].get("command") or []
    flags = _flags(cmd)
    if uri.hostname != "mlflow" or str(uri.port) != flags.get("port"):
        problems.append(
            f"MLFLOW_TRACKING_URI={env.get('MLFLOW_TRACKING_URI')} is not the mlflow "
            f"service on --port={flags.get('port')}"
        )
    allowed = [h.strip() for h in flags.get("allowed-hosts", "").split(",") if h.strip()]
    if not allowed or not is_allowed_host_header(allowed, uri.netloc):
        problems.append(f"mlflow --allowed-hosts {allowed} rejects Host: {uri.netloc}")
    if not flags.get("backend-store-uri", "").startswith("postgresql"):
        problems.append("mlflow must use the postgres backend store")
    if "--serve-artifacts" not in cmd or "artifacts-destination" not in flags:
        problems.append("mlflow must serve artifacts (--serve-artifacts, --artifacts-destination)")
    image = services["mlflow"].get("image", "")
    tag = re.search(r":v?([0-9.]+)", image)
    if not tag or tag.group(1) != version("mlflow"):
        problems.append(f"mlflow image {image} is not the pinned mlflow {version('mlflow')}")
    return problems


def target_layout() -> str:
    """Where raylane.monitoring.metrics looks for file_sd targets, relative to RAYLANE_HOME."""
    from raylane.monitoring.metrics import target_files

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        probe = home / "prometheus" / "targets" / "fraud-ingress-1.json"
        probe.parent.mkdir(parents=True)
        probe.write_text("[]")
        if target_files(home) != [probe]:
            raise AssertionError(
                "raylane.monitoring.metrics no longer keeps targets in "
                "prometheus/targets/*.json: update the checks and prometheus.yml"
            )
        return str(probe.relative_to(home))


def prometheus_problems(
    prom: dict[str, Any], raylane_mount: str | None, ray_head: dict[str, Any]
) -> list[str]:
    """file_sd over the raylane volume; Ray's metrics on the head's --metrics-export-port."""
    problems = []
    jobs = {j["job_name"]: j for j in prom.get("scrape_configs") or []}
    if raylane_mount is None:
        problems.append(f"prometheus does not mount the {RAYLANE_VOLUME} volume")
    else:
        target = f"{raylane_mount.rstrip('/')}/{target_layout()}"
        globs = [
            f
            for sd in (jobs.get("raylane") or {}).get("file_sd_configs") or []
            for f in sd.get("files", [])
        ]
        if not any(fnmatch.fnmatch(target, g) for g in globs):
            problems.append(f"no file_sd glob of job raylane matches {target} (globs: {globs})")
    port = re.search(r"--metrics-export-port[= ](\d+)", " ".join(ray_head.get("command") or []))
    targets = [
        t
        for sc in (jobs.get("ray") or {}).get("static_configs") or []
        for t in sc.get("targets", [])
    ]
    if not port or f"ray-head:{port.group(1)}" not in targets:
        problems.append(
            f"job ray does not scrape ray-head on its --metrics-export-port ({targets})"
        )
    return problems


def _provisioned(directory: Path, key: str) -> list[dict[str, Any]]:
    return [
        item
        for f in sorted(directory.glob("*.y*ml"))
        for item in (yaml.safe_load(f.read_text()) or {}).get(key, [])
    ]


def grafana_problems(grafana: dict[str, Any], base: Path) -> list[str]:
    """Provisioned Prometheus datasource and dashboard, as mounted into the container."""
    problems = []
    mounts = {t: base / s for s, t in volumes_of(grafana) if s.startswith(".")}
    prov = mounts.get("/etc/grafana/provisioning")
    if prov is None:
        return ["grafana provisioning is not mounted at /etc/grafana/provisioning"]
    prom = [
        d
        for d in _provisioned(prov / "datasources", "datasources")
        if d.get("type") == "prometheus"
    ]
    if len(prom) != 1 or urlparse(prom[0].get("url", "")).netloc != "prometheus:9090":
        problems.append(
            f"grafana needs one Prometheus datasource at http://prometheus:9090, got {prom}"
        )
    paths = [
        p.get("options", {}).get("path") for p in _provisioned(prov / "dashboards", "providers")
    ]
    dirs = [mounts[p] for p in paths if p in mounts]
    if not dirs:
        problems.append(f"no dashboard provider path {paths} is a mounted directory")
    elif not (dirs[0] / "raylane.json").is_file():
        problems.append(f"{dirs[0]}/raylane.json does not exist")
    else:
        dash = json.loads((dirs[0] / "raylane.json").read_text())
        used = {
            p.get("datasource", {}).get("uid")
            for p in dash.get("panels", [])
            if p.get("type") != "row"
        }
        unknown = used - {d.get("uid") for d in prom}
        if unknown:
            problems.append(
                f"the dashboard uses datasource uids {unknown} that are not provisioned"
            )
    home = env_of(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        local = next(
            (d / home[len(t) + 1 :] for t, d in mounts.items() if home.startswith(t + "/")), None
        )
        if local is None or not local.is_file():
            problems.append(
                f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH={home} is not a mounted file"
            )
    return problems


def compose_problems(compose: dict[str, Any], base: Path) -> list[str]:
    """Problems of a compose document whose relative paths are relative to `base`."""
    services: dict[str, dict[str, Any]] = compose.get("services") or {}
    missing = SERVICES - set(services)
    if missing:
        return [f"services missing: {sorted(missing)}"]
    problems = graph_problems(services) + raylane_env_problems(compose, base)
    problems += connection_problems(services)
    for name, svc in services.items():
        for src, target in volumes_of(svc):
            if src.startswith((".", "/")) and not (base / src).exists():
                problems.append(f"{name}: mount source {src} -> {target} does not exist")
    prom_svc = volumes_of(services["prometheus"])
    config = next((s for s, t in prom_svc if t == "/etc/prometheus/prometheus.yml"), None)
    if config is None or not (base / config).is_file():
        problems.append("prometheus.yml is not mounted at /etc/prometheus/prometheus.yml")
    else:
        problems += prometheus_problems(
            yaml.safe_load((base / config).read_text()),
            dict(prom_svc).get(RAYLANE_VOLUME),
            services["ray-head"],
        )
    return problems + grafana_problems(services["grafana"], base)
