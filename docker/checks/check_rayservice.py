"""docker/k8s/rayservice.yaml against serve_configs/fraud.yaml, raylane's settings and versions."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml
from _facts import (
    BOOTSTRAP_MARKER,
    DOCKER,
    FRAUD,
    RAYSERVICE,
    known_raylane_env_names,
    load_compose,
    pyproject,
    raylane_services,
    settings_env_names,
)

KINDS = ("ConfigMap", "PersistentVolumeClaim", "Job", "RayService")


def k8s_docs(path: Path = RAYSERVICE) -> dict[str, dict[str, Any]]:
    """The manifest's documents by kind."""
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def pod_specs(docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod specs of the bootstrap Job, the Ray head and each worker group."""
    cluster = docs["RayService"]["spec"]["rayClusterConfig"]
    pods = {
        "job": docs["Job"]["spec"]["template"]["spec"],
        "head": cluster["headGroupSpec"]["template"]["spec"],
    }
    for group in cluster["workerGroupSpecs"]:
        pods[f"worker {group['groupName']}"] = group["template"]["spec"]
    return pods


def serve_config_problems(rs: dict[str, Any], fraud: Path) -> list[str]:
    """serveConfigV2: a valid Serve config with fraud.yaml's application, args validated."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema
    from raylane.config import PipelineConfig
    from raylane.errors import ConfigError
    from raylane.serving.runtime import REPLICA_ENV

    problems = []
    cfg = yaml.safe_load(rs["spec"]["serveConfigV2"])
    try:
        ServeDeploySchema.model_validate(cfg)
    except ValidationError as e:
        problems.append(f"serveConfigV2 is not a valid Serve config: {e}")
    src = yaml.safe_load(fraud.read_text())
    if [a.get("name") for a in cfg.get("applications", [])] != [
        a["name"] for a in src["applications"]
    ]:
        return [*problems, f"serveConfigV2 applications differ from {fraud.name}'s"]
    for i, (app, want) in enumerate(zip(cfg["applications"], src["applications"], strict=True)):
        for key in ("import_path", "route_prefix", "args"):
            if app.get(key) != want.get(key):
                problems.append(f"application {app['name']}: {key} differs from {fraud.name}")
        try:
            PipelineConfig.from_args(app["args"], where=f"serveConfigV2.applications[{i}].args")
        except ConfigError as e:
            problems.append(str(e))
        env_vars = (app.get("runtime_env") or {}).get("env_vars") or {}
        if {k: env_vars.get(k) for k in REPLICA_ENV} != REPLICA_ENV:
            problems.append(
                f"application {app['name']}: runtime_env.env_vars lacks REPLICA_ENV {REPLICA_ENV}"
            )
    if cfg.get("logging_config") != src.get("logging_config"):
        problems.append(f"logging_config differs from {fraud.name}")
    return problems


def cluster_problems(docs: dict[str, dict[str, Any]], compose: dict[str, Any]) -> list[str]:
    """Ray version, image, settings, the shared PVC and the bootstrap gate."""
    import ray

    problems = []
    cluster = docs["RayService"]["spec"]["rayClusterConfig"]
    if str(cluster.get("rayVersion")) != ray.__version__:
        problems.append(
            f"rayVersion {cluster.get('rayVersion')} != installed Ray {ray.__version__}"
        )
    image = raylane_services(compose)["ray-head"]["image"]
    version = pyproject()["project"]["version"]
    if image != f"raylane:{version}":
        problems.append(f"compose image {image} is not raylane:{version} (pyproject version)")

    cm = docs["ConfigMap"]
    env = {k: str(v) for k, v in (cm.get("data") or {}).items()}
    problems += [
        f"ConfigMap {cm['metadata']['name']}: {v} (raylane.settings) is not set"
        for v in sorted(settings_env_names() - set(env))
    ]
    problems += [
        f"ConfigMap: {v} is not read by raylane"
        for v in sorted(env)
        if v.startswith("RAYLANE_") and v not in known_raylane_env_names()
    ]
    pvc = docs["PersistentVolumeClaim"]
    if "ReadWriteMany" not in pvc["spec"].get("accessModes", []):
        problems.append("the PVC must be ReadWriteMany (the Job, head and workers share it)")

    for pod_name, pod in pod_specs(docs).items():
        claims = {
            v["name"]
            for v in pod.get("volumes", [])
            if v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]
        }
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{pod_name}/{c['name']}"
            if c.get("image") != image:
                problems.append(f"{where}: image {c.get('image')} != {image}")
            if cm["metadata"]["name"] not in [
                e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])
            ]:
                problems.append(f"{where}: does not load ConfigMap {cm['metadata']['name']}")
            if not any(
                m["name"] in claims and m["mountPath"] == env.get("RAYLANE_HOME")
                for m in c.get("volumeMounts", [])
            ):
                problems.append(
                    f"{where}: the PVC is not mounted at RAYLANE_HOME={env.get('RAYLANE_HOME')}"
                )

    job = " ".join(docs["Job"]["spec"]["template"]["spec"]["containers"][0]["command"])
    if f"raylane bootstrap -f {FRAUD.parent.name}/{FRAUD.name}" not in job:
        problems.append(
            f"the Job does not run `raylane bootstrap -f {FRAUD.parent.name}/{FRAUD.name}`"
        )
    init = " ".join(
        " ".join(c["command"]) for c in pod_specs(docs)["head"].get("initContainers", [])
    )
    marker = f"$RAYLANE_HOME/{BOOTSTRAP_MARKER}"
    if marker not in job or marker not in init:
        problems.append(f"the Ray head must wait for the marker {marker} the Job writes")
    return problems


def sync_module() -> Any:
    """docker/k8s/sync_rayservice.py, the generator of the serveConfigV2 block."""
    spec = importlib.util.spec_from_file_location(
        "_raylane_sync_rayservice", DOCKER / "k8s" / "sync_rayservice.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sync_problems(path: Path = RAYSERVICE, fraud: Path = FRAUD) -> list[str]:
    """The serveConfigV2 block is exactly what the generator makes of `fraud`."""
    sync = sync_module()
    if sync.embedded(path.read_text()) != sync.render(fraud):
        return ["serveConfigV2 is stale: run python docker/k8s/sync_rayservice.py"]
    return []


def rayservice_problems(
    docs: dict[str, dict[str, Any]], fraud: Path = FRAUD, compose: dict[str, Any] | None = None
) -> list[str]:
    missing = [k for k in KINDS if k not in docs]
    if missing:
        return [f"no {k}" for k in missing]
    problems = []
    if docs["RayService"].get("apiVersion") != "ray.io/v1":
        problems.append(
            f"RayService apiVersion {docs['RayService'].get('apiVersion')}, expected ray.io/v1"
        )
    problems += serve_config_problems(docs["RayService"], fraud)
    return problems + cluster_problems(docs, compose if compose is not None else load_compose())
