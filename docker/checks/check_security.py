"""Security properties of docker/compose.yaml and docker/k8s/rayservice.yaml.

Secure by default: publish only what a person opens, only on the host's 127.0.0.1; every
control plane with auth (Ray token auth, MLflow basic auth, a Redis password, Grafana without
anonymous or default admin); no Prometheus lifecycle API; secrets from the environment, never
literals; on Kubernetes, KubeRay token auth, a NetworkPolicy and no credentials in ConfigMaps.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from _facts import env_of
from check_compose import INTERPOLATION

#: services whose UI a person opens; nothing else is published
PUBLISHED = {"ray-head": {8265}, "mlflow": {5000}, "grafana": {3000}}
_SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _ports(svc: dict[str, Any]) -> list[tuple[str | None, int]]:
    """(host ip, container port) of each published port, short or long syntax."""
    out: list[tuple[str | None, int]] = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append((p.get("host_ip"), int(str(p.get("target")).split("/")[0])))
            continue
        parts = str(p).split("/")[0].rsplit(":", 2)
        host_ip = parts[0] if len(parts) == 3 else None
        out.append((host_ip, int(parts[-1])))
    return out


def _is_secret_ref(value: str) -> bool:
    return bool(INTERPOLATION.fullmatch(value.strip()))


def _command(svc: dict[str, Any]) -> str:
    cmd = svc.get("command") or []
    return cmd if isinstance(cmd, str) else " ".join(str(c) for c in cmd)


def compose_security_problems(compose: dict[str, Any]) -> list[str]:
    services: dict[str, dict[str, Any]] = compose.get("services") or {}
    problems = []
    for name, svc in services.items():
        for host_ip, port in _ports(svc):
            if port not in PUBLISHED.get(name, set()):
                problems.append(
                    f"{name} publishes port {port}: only {PUBLISHED} are published "
                    "(the rest stays inside the compose network)"
                )
            elif host_ip not in _LOOPBACK:
                problems.append(
                    f"{name} publishes {port} on {host_ip or 'every interface'}: "
                    f"publish it as 127.0.0.1:{port}:{port}"
                )
        for key, value in env_of(svc).items():
            if _SECRET_KEY.search(key) and value and not _is_secret_ref(str(value)):
                problems.append(f"{name}: {key} is a literal; use ${{{key}:?...}} from .env")
    head = services.get("ray-head", {})
    env = env_of(head)
    if env.get("RAY_AUTH_MODE") != "token" or not _is_secret_ref(env.get("RAY_AUTH_TOKEN", "")):
        problems.append("ray-head needs Ray token auth: RAY_AUTH_MODE=token, RAY_AUTH_TOKEN=${...}")
    redis_cmd = _command(services.get("redis", {}))
    if "--requirepass" not in redis_cmd:
        problems.append("redis runs without a password: add --requirepass ${...}")
    for name in ("bootstrap", "ray-head"):
        url = env_of(services.get(name, {})).get("REDIS_URL", "")
        if not INTERPOLATION.search(url.split("@")[0] if "@" in url else ""):
            problems.append(f"{name}: REDIS_URL carries no password (redis://:${{...}}@redis...)")
    mlflow_cmd = _command(services.get("mlflow", {}))
    if not re.search(r"--app-name[= ]basic-auth", mlflow_cmd):
        problems.append("mlflow runs without auth: add --app-name=basic-auth")
    if not _is_secret_ref(env_of(services.get("mlflow", {})).get("MLFLOW_AUTH_ADMIN_PASSWORD", "")):
        problems.append("mlflow: MLFLOW_AUTH_ADMIN_PASSWORD must come from .env")
    if "MLFLOW_TRACKING_PASSWORD" not in env:
        problems.append("ray-head: MLFLOW_TRACKING_USERNAME/PASSWORD missing for basic auth")
    kafka = env_of(services.get("kafka", {}))
    protocols = dict(
        item.split(":", 1)
        for item in kafka.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "").split(",")
        if ":" in item
    )
    if services.get("kafka", {}).get("ports") and any(
        p != "SASL_SSL" for n, p in protocols.items() if n != "CONTROLLER"
    ):
        problems.append("kafka is published with a listener that is not SASL_SSL")
    grafana = env_of(services.get("grafana", {}))
    if str(grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() != "false":
        problems.append("grafana allows anonymous access: GF_AUTH_ANONYMOUS_ENABLED=false")
    if not _is_secret_ref(grafana.get("GF_SECURITY_ADMIN_PASSWORD", "")):
        problems.append("grafana: GF_SECURITY_ADMIN_PASSWORD must come from .env, not a default")
    if "--web.enable-lifecycle" in _command(services.get("prometheus", {})):
        problems.append("prometheus: --web.enable-lifecycle lets anyone shut it down over HTTP")
    return problems


def all_docs(path: Path) -> list[dict[str, Any]]:
    """Every document of a multi-document manifest."""
    import yaml

    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def rayservice_security_problems(docs: list[dict[str, Any]]) -> list[str]:
    from raylane.redaction import has_credentials

    problems = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind", ""), []).append(d)
    for rs in by_kind.get("RayService", []):
        cluster = rs.get("spec", {}).get("rayClusterConfig", {})
        if (cluster.get("authOptions") or {}).get("mode") != "token":
            problems.append("RayService without Ray token auth: rayClusterConfig.authOptions.mode")
    policies = by_kind.get("NetworkPolicy", [])
    selects = [
        p
        for p in policies
        if (p.get("spec", {}).get("podSelector", {}).get("matchLabels") or {}).get(
            "app.kubernetes.io/name"
        )
        == "raylane"
        and "Ingress" in (p.get("spec", {}).get("policyTypes") or [])
    ]
    if not selects:
        problems.append("no NetworkPolicy restricts ingress to the raylane pods")
    for p in selects:
        for rule in p["spec"].get("ingress") or []:
            if not rule.get("from"):
                problems.append("a NetworkPolicy ingress rule allows every source")
            if any("ipBlock" in f for f in rule.get("from") or []):
                problems.append("a NetworkPolicy ingress rule opens the Ray pods to an ipBlock")
    for svc in by_kind.get("Service", []):
        if svc.get("spec", {}).get("type") in ("LoadBalancer", "NodePort"):
            problems.append(f"Service {svc['metadata']['name']} exposes Ray outside the cluster")
    if by_kind.get("Ingress"):
        problems.append("an Ingress exposes Ray's dashboard (its Jobs API runs code)")
    for cm in by_kind.get("ConfigMap", []):
        for key, value in (cm.get("data") or {}).items():
            if has_credentials(str(value)) or _SECRET_KEY.search(key):
                problems.append(
                    f"ConfigMap {cm['metadata']['name']}: {key} holds a credential; "
                    "put it in the raylane-secrets Secret"
                )
    return problems
