"""docker/: the image, the compose stack, Prometheus/Grafana files and the KubeRay RayService.

No Docker engine, services or Ray cluster. The checks live in docker/checks/ (also runnable as
`python docker/checks`); each returns a list of problems. Here they must find none in the
shipped files, and must find the defect in copies mutated on purpose (so they can fail).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
sys.path.insert(0, str(DOCKER / "checks"))

import check_compose  # noqa: E402 - after the sys.path insert above
import check_dashboard  # noqa: E402 - after the sys.path insert above
import check_dockerfile  # noqa: E402 - after the sys.path insert above
import check_rayservice  # noqa: E402 - after the sys.path insert above
import check_security  # noqa: E402 - after the sys.path insert above
from _facts import load_compose, raylane_services, settings_env_names  # noqa: E402 - after the sys.path insert above

DASHBOARD = DOCKER / "grafana" / "dashboards" / "raylane.json"


def _has(problems: list[str], text: str) -> bool:
    return any(text in p for p in problems)


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_image_is_the_installed_ray() -> None:
    import ray

    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    base = check_dockerfile.base_image((DOCKER / "Dockerfile").read_text())
    assert base == f"rayproject/ray:{ray.__version__}-{py}-cpu"


def test_dockerfile_gpu_variant_is_a_build_arg() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    gpu, n = re.subn(r"(?m)^ARG RAY_VARIANT=cpu$", "ARG RAY_VARIANT=gpu", text)
    assert n == 1
    assert check_dockerfile.base_image(gpu).endswith("-py311-gpu")


def test_dockerfile_copies_what_the_package_needs_and_installs_with_constraints() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    copied = {src for _n, srcs, _dst in check_dockerfile.copies(text) for src in srcs}
    assert set(check_dockerfile.needed_paths()) == {
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "platform",
        "features",
        "models",
        "serve_configs",
    }
    assert set(check_dockerfile.needed_paths()) <= copied
    assert check_dockerfile.dockerfile_problems(text) == []


def test_dockerfile_check_bites(tmp_path: Path) -> None:
    work = tmp_path / "Dockerfile"
    text = (DOCKER / "Dockerfile").read_text()
    mutations = {  # pattern, replacement, expected problem
        "drop models": (r"(?m)^COPY --chown=ray:users models/ models/\n", "", "models (bootstrap"),
        "older ray": (r"ARG RAY_VERSION=[0-9.]+", "ARG RAY_VERSION=2.59.0", "has Ray 2.59.0"),
        "unpinned": (r"pip install -c constraints.txt \.", "pip install .", "constraints.txt .`"),
        "root": (r"(?m)^USER ray$", "USER root", "non-root"),
        "source late": (
            r"(?m)^(COPY --chown=ray:users platform/ platform/\n)(.*?)(# What the commands)",
            r"\2\1\3",
            "platform is not copied before the pip install",
        ),
        "shell CMD": (
            r'CMD \["serve", "run", "serve_configs/fraud.yaml"\]',
            "CMD serve run serve_configs/fraud.yaml",
            "exec form",
        ),
    }
    for name, (pattern, repl, expect) in mutations.items():
        mutated, n = re.subn(pattern, repl, text, flags=re.DOTALL)
        assert n == 1, name
        work.write_text(mutated)
        problems = check_dockerfile.dockerfile_problems(work.read_text())
        assert _has(problems, expect), (name, problems)


def test_dockerignore_keeps_what_the_image_copies_and_drops_local_state() -> None:
    ignore = DOCKER / "Dockerfile.dockerignore"  # BuildKit: <Dockerfile>.dockerignore beside it
    problems = check_dockerfile.dockerignore_problems(
        ignore.read_text(), (DOCKER / "Dockerfile").read_text()
    )
    assert problems == []


def test_dockerignore_check_bites() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    text = (DOCKER / "Dockerfile.dockerignore").read_text()
    assert _has(
        check_dockerfile.dockerignore_problems(text.replace("!models\n", ""), dockerfile),
        "COPY models: the ignore file leaves out",
    )
    assert _has(
        check_dockerfile.dockerignore_problems(text + "**/*.avsc\n", dockerfile),
        "COPY platform: the ignore file leaves out",
    )
    assert _has(
        check_dockerfile.dockerignore_problems(text.replace("features/data\n", ""), dockerfile),
        "features/data/user_profiles.parquet would be sent",
    )
    rules = check_dockerfile.ignore_rules("*\n!platform\n**/__pycache__\n")
    assert not check_dockerfile.ignored(rules, "platform/raylane/cli.py")
    assert check_dockerfile.ignored(rules, "platform/raylane/__pycache__/cli.pyc")
    assert check_dockerfile.ignored(rules, "tests/unit/x.py")


# --------------------------------------------------------------------------- compose


def test_compose_parses_with_services_and_healthchecks() -> None:
    compose = load_compose()
    services = compose["services"]
    assert set(services) >= check_compose.SERVICES
    for name, svc in services.items():
        assert svc.get("healthcheck") or svc.get("restart") == "no", name
    assert check_compose.compose_problems(compose, DOCKER) == []


def test_compose_raylane_env_names_are_raylane_settings() -> None:
    from raylane import settings

    names = {settings.ENV_KAFKA, settings.ENV_REDIS, settings.ENV_MLFLOW, settings.ENV_HOME}
    assert names == settings_env_names()
    services = raylane_services(load_compose())
    assert set(services) == {"bootstrap", "ray-head"}
    for name, svc in services.items():
        assert names <= set(svc["environment"]), name


def test_compose_referenced_files_exist() -> None:
    for rel in (
        "Dockerfile",
        "prometheus/prometheus.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/raylane.yml",
        "grafana/dashboards/raylane.json",
    ):
        assert (DOCKER / rel).is_file(), rel


def test_compose_check_bites(tmp_path: Path) -> None:
    work = tmp_path / "docker"
    shutil.copytree(DOCKER, work, ignore=shutil.ignore_patterns("__pycache__"))
    text = (work / "compose.yaml").read_text()

    def problems_of(mutated: str) -> list[str]:
        (work / "compose.yaml").write_text(mutated)
        return check_compose.compose_problems(
            yaml.safe_load((work / "compose.yaml").read_text()), work
        )

    assert problems_of(text) == []
    cases = {  # old, new, expected problem
        "env name": (
            "  REDIS_URL: redis://",
            "  REDIS_URI: redis://",
            "ray-head: REDIS_URL (raylane.settings) is not set",
        ),
        "unknown RAYLANE_*": (
            "RAYLANE_METRICS_HOST: auto",
            "RAYLANE_METRIC_HOST: auto",
            "RAYLANE_METRIC_HOST is not read by raylane",
        ),
        "mlflow host check": (
            "--allowed-hosts=mlflow,mlflow:5000,",
            "--allowed-hosts=",
            "rejects Host: mlflow:5000",
        ),
        "kafka listener": (
            "RAYLANE_KAFKA_BOOTSTRAP: kafka:19092",
            "RAYLANE_KAFKA_BOOTSTRAP: kafka:9092",
            "is not an advertised Kafka listener",
        ),
        "file_sd path": (
            "raylane-home:/raylane:ro",
            "raylane-home:/srv/raylane:ro",
            "no file_sd glob",
        ),
        "mlflow version": (
            "ghcr.io/mlflow/mlflow:v3.17.2-full",
            "ghcr.io/mlflow/mlflow:v3.1.0-full",
            "is not the pinned mlflow",
        ),
        "start order": (
            "condition: service_completed_successfully",
            "condition: service_started",
            "ray-head must wait for bootstrap",
        ),
    }
    for name, (old, new, expect) in cases.items():
        assert text.count(old) == 1, name
        assert _has(problems_of(text.replace(old, new)), expect), name

    no_health = yaml.safe_load(text)
    del no_health["services"]["redis"]["healthcheck"]
    problems = problems_of(yaml.safe_dump(no_health, sort_keys=False))
    assert "redis has no healthcheck" in problems
    assert "ray-head waits for redis to be healthy, but redis has no healthcheck" in problems

    (work / "grafana" / "dashboards" / "raylane.json").unlink()
    assert _has(problems_of(text), "raylane.json does not exist")
    (work / "prometheus" / "prometheus.yml").unlink()
    assert _has(problems_of(text), "mount source ./prometheus/prometheus.yml")


# --------------------------------------------------------------------------- security


def test_compose_is_secure_by_default() -> None:
    assert check_security.compose_security_problems(load_compose()) == []


def test_compose_secrets_are_all_in_the_env_example() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", text))
    example = (DOCKER / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.MULTILINE))
    assert required and required <= listed, required - listed
    # every secret is required (${VAR:?...}): compose refuses to start rather than run blank
    secrets = {
        v
        for v in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)
        if re.search("PASSWORD|SECRET|TOKEN", v)
    }
    assert secrets and secrets <= required, secrets - required


def test_compose_security_check_bites() -> None:
    text = (DOCKER / "compose.yaml").read_text()

    def problems_of(mutated: str) -> list[str]:
        return check_security.compose_security_problems(yaml.safe_load(mutated))

    cases = {  # old, new, expected problem
        "published everywhere": (
            '"127.0.0.1:8265:8265"',
            '"8265:8265"',
            "ray-head publishes 8265 on every interface",
        ),
        "published on a LAN address": (
            '"127.0.0.1:5000:5000"',
            '"0.0.0.0:5000:5000"',
            "mlflow publishes 5000 on 0.0.0.0",
        ),
        "redis published": (
            "      REDISCLI_AUTH:",
            '    ports: ["127.0.0.1:6379:6379"]\n    environment:\n      REDISCLI_AUTH:',
            "redis publishes port 6379",
        ),
        "no ray token": ("  RAY_AUTH_MODE: token", "  RAY_AUTH_MODE: disabled", "Ray token auth"),
        "redis without password": (
            '"--requirepass", ',
            "",
            "redis runs without a password",
        ),
        "mlflow without auth": ("--app-name=basic-auth", "--workers=1", "mlflow runs without auth"),
        "literal secret": (
            "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?set it in the .env file}",
            "GF_SECURITY_ADMIN_PASSWORD: admin",
            "GF_SECURITY_ADMIN_PASSWORD is a literal",
        ),
        "anonymous grafana": (
            'GF_AUTH_ANONYMOUS_ENABLED: "false"',
            'GF_AUTH_ANONYMOUS_ENABLED: "true"',
            "grafana allows anonymous access",
        ),
        "prometheus lifecycle": (
            "      - --storage.tsdb.path=/prometheus\n",
            "      - --storage.tsdb.path=/prometheus\n      - --web.enable-lifecycle\n",
            "--web.enable-lifecycle",
        ),
    }
    for name, (old, new, expect) in cases.items():
        assert text.count(old) == 1, name
        assert _has(problems_of(text.replace(old, new)), expect), name
    plaintext_kafka = yaml.safe_load(text)
    plaintext_kafka["services"]["kafka"]["ports"] = ["127.0.0.1:9092:9092"]
    assert _has(
        check_security.compose_security_problems(plaintext_kafka), "kafka publishes port 9092"
    )
    assert _has(check_security.compose_security_problems(plaintext_kafka), "not SASL_SSL")


def test_rayservice_has_token_auth_and_a_network_policy() -> None:
    docs = check_security.all_docs(DOCKER / "k8s" / "rayservice.yaml")
    assert check_security.rayservice_security_problems(docs) == []
    assert {"NetworkPolicy", "RayService"} <= {d["kind"] for d in docs}


def test_rayservice_security_check_bites() -> None:
    docs = check_security.all_docs(DOCKER / "k8s" / "rayservice.yaml")

    def mutated(change: Any) -> list[str]:
        copy_ = copy.deepcopy(docs)
        change(copy_)
        return check_security.rayservice_security_problems(copy_)

    def by_kind(ds: list[dict[str, Any]], kind: str) -> dict[str, Any]:
        return next(d for d in ds if d["kind"] == kind)

    assert _has(
        mutated(
            lambda ds: by_kind(ds, "RayService")["spec"]["rayClusterConfig"].pop("authOptions")
        ),
        "without Ray token auth",
    )
    assert _has(mutated(lambda ds: ds.remove(by_kind(ds, "NetworkPolicy"))), "no NetworkPolicy")
    assert _has(
        mutated(lambda ds: by_kind(ds, "NetworkPolicy")["spec"]["ingress"].append({})),
        "allows every source",
    )
    assert _has(
        mutated(
            lambda ds: by_kind(ds, "ConfigMap")["data"].update(
                REDIS_URL="redis://:hunter2@redis:6379/0"
            )
        ),
        "REDIS_URL holds a credential",
    )
    assert _has(
        mutated(
            lambda ds: ds.append(
                {"kind": "Service", "metadata": {"name": "dash"}, "spec": {"type": "LoadBalancer"}}
            )
        ),
        "Service dash exposes Ray",
    )


# --------------------------------------------------------------------------- dashboard


def test_dashboard_metrics_exist_in_raylane_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    queries = check_dashboard.dashboard_queries(dash)
    assert len(queries) >= len(check_dashboard.REQUIRED)
    families = check_dashboard.metric_families()
    used = {name for _t, expr, _l in queries for name, _ in check_dashboard.promql_parts(expr)[0]}
    assert used <= set(families)
    assert check_dashboard.dashboard_problems(dash) == []


def test_promql_parser_and_metric_names() -> None:
    selectors, grouping = check_dashboard.promql_parts(
        "histogram_quantile(0.99, sum by (le, stage) (rate(raylane_stage_latency_ms_bucket"
        '{pipeline=~"$pipeline"}[$__rate_interval]))) / on(stage) foo_total'
    )
    assert selectors == [("raylane_stage_latency_ms_bucket", {"pipeline"}), ("foo_total", set())]
    assert grouping == {"le", "stage"}
    families = check_dashboard.metric_families()
    assert families["raylane_events_in_total"] == ("raylane_events_in", {"pipeline"})
    assert families["raylane_stage_latency_ms_bucket"][1] == {"pipeline", "stage", "le"}
    assert "raylane_consumer_paused" in families
    assert "raylane_events_in" not in families  # a counter is exposed as <name>_total


def test_dashboard_check_bites(tmp_path: Path) -> None:
    work = tmp_path / "raylane.json"
    shutil.copy(DASHBOARD, work)
    text = work.read_text()
    cases = {  # old, new, expected problem
        "metric name": (
            "raylane_events_in_total{",
            "raylane_events_in{",
            "metric raylane_events_in is not exposed",
        ),
        "group label": (
            "sum by (decision)",
            "sum by (decison)",
            "grouping by unknown labels ['decison']",
        ),
        "matcher label": (
            "raylane_breaker_open{pipeline=~",
            "raylane_breaker_open{pipelne=~",
            "raylane_breaker_open has no label ['pipelne']",
        ),
        "required panel": (
            "(rate(raylane_shadow_abs_delta_bucket",
            "(rate(raylane_shadow_abs_delta_sum",
            "no panel shows shadow |delta| p95",
        ),
        "legend": (
            '"legendFormat": "{{error_class}}"',
            '"legendFormat": "{{error}}"',
            "legend uses ['error']",
        ),
    }
    for name, (old, new, expect) in cases.items():
        assert old in text, name
        work.write_text(text.replace(old, new))
        problems = check_dashboard.dashboard_problems(json.loads(work.read_text()))
        assert _has(problems, expect), (name, problems)


# --------------------------------------------------------------------------- KubeRay


def test_rayservice_embeds_the_fraud_application() -> None:
    assert check_rayservice.rayservice_problems(check_rayservice.k8s_docs()) == []


def test_rayservice_args_equal_serve_config_and_validate() -> None:
    from raylane.config import PipelineConfig

    rs = check_rayservice.k8s_docs()["RayService"]
    assert rs["apiVersion"] == "ray.io/v1"
    app = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]
    want = yaml.safe_load(FRAUD.read_text())["applications"][0]
    assert app["import_path"] == want["import_path"] == "raylane.serving.app:build_app"
    assert app["args"] == want["args"]
    assert PipelineConfig.from_args(app["args"]).name == "fraud"


def test_rayservice_is_generated_by_the_sync_script() -> None:
    assert check_rayservice.sync_problems() == []
    assert check_rayservice.sync_module().main(["--check"]) == 0


def test_rayservice_check_bites(tmp_path: Path) -> None:
    sync = check_rayservice.sync_module()
    fraud = tmp_path / "fraud.yaml"
    fraud.write_text(FRAUD.read_text().replace("max_batch_size: 500", "max_batch_size: 250"))
    rayservice = tmp_path / "rayservice.yaml"
    shutil.copy(DOCKER / "k8s" / "rayservice.yaml", rayservice)
    argv = ["--serve-config", str(fraud), "--rayservice", str(rayservice)]

    assert check_rayservice.rayservice_problems(check_rayservice.k8s_docs(rayservice), fraud) == [
        "application fraud: args differs from fraud.yaml"
    ]
    assert _has(check_rayservice.sync_problems(rayservice, fraud), "serveConfigV2 is stale")
    assert sync.main(["--check", *argv]) == 1
    assert sync.main(argv) == 0  # regenerates the block from the edited serve config
    assert sync.main(["--check", *argv]) == 0
    assert "max_batch_size: 250" in rayservice.read_text()
    assert check_rayservice.rayservice_problems(check_rayservice.k8s_docs(rayservice), fraud) == []

    bad = copy.deepcopy(check_rayservice.k8s_docs())
    bad["ConfigMap"]["data"].pop("MLFLOW_TRACKING_URI")
    bad["RayService"]["spec"]["rayClusterConfig"]["rayVersion"] = "2.59.0"
    worker = bad["RayService"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"][
        "spec"
    ]
    worker["containers"][0]["volumeMounts"][0]["mountPath"] = "/tmp/elsewhere"
    bad["Job"]["spec"]["template"]["spec"]["containers"][0]["command"][-1] = "raylane bootstrap"
    problems = check_rayservice.rayservice_problems(bad)
    for expect in (
        "MLFLOW_TRACKING_URI (raylane.settings) is not set",
        "rayVersion 2.59.0",
        "worker cpu/ray-worker: the PVC is not mounted at RAYLANE_HOME",
        "the Job does not run `raylane bootstrap -f serve_configs/fraud.yaml`",
    ):
        assert _has(problems, expect), (expect, problems)


# --------------------------------------------------------------------------- README


def test_docker_readme_names_existing_files_and_commands() -> None:
    text = (DOCKER / "README.md").read_text()
    refs = set(re.findall(r"docker/[\w./-]+\.(?:yaml|yml|py|json|md)|docker/Dockerfile\b", text))
    assert refs
    for ref in sorted(refs):
        assert (ROOT / ref).is_file(), ref
    for command in (
        "docker build -f docker/Dockerfile",
        "docker compose -f docker/compose.yaml up",
        "kubectl apply -f docker/k8s/rayservice.yaml",
        "python docker/k8s/sync_rayservice.py",
    ):
        assert command in text, command


# --------------------------------------------------------------------------- alert rules

ALERTS = DOCKER / "prometheus" / "alerts.yml"
PROMTOOL_HINT = (
    "promtool is not installed: `sudo apt-get install -y prometheus` (Debian; .ci/run "
    "installs it) to check the alert rules"
)


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(PROMTOOL_HINT)
    return found


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    import subprocess

    promtool = _promtool()
    check = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 8 rules found" in check.stdout
    # each alert fires on series that should fire it and not on others (alerts.test.yml)
    test = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_alert_rules_cover_the_issue_and_use_raylanes_metrics() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "RaylaneConsumerPaused",
        "RaylaneDLQRate",
        "RaylaneNoCommit",
        "RaylaneDriftAlert",
        "RaylaneShadowAgreementDrop",
        "RaylaneBreakerOpen",
    } <= names
    assert check_dashboard.alert_problems(rules) == []
    tested = yaml.safe_load((ALERTS.parent / "alerts.test.yml").read_text())
    fired = {
        t["alertname"]
        for case in tested["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    assert fired == names  # every alert has a test case in which it fires
    # Prometheus loads them: prometheus.yml names the file and compose mounts it there
    prom = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = load_compose()["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_alert_check_bites() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    rule = rules["groups"][0]["rules"][0]
    rule["expr"] = rule["expr"].replace("raylane_consumer_paused", "raylane_consumer_pause")
    rules["groups"][0]["rules"][1]["expr"] = "max by (dependncy) (raylane_breaker_open) > 0"
    problems = check_dashboard.alert_problems(rules)
    assert _has(problems, "metric raylane_consumer_pause is not exposed")
    assert _has(problems, "grouping by unknown labels ['dependncy']")
