"""Check docker/ against the code it deploys: `.venv/bin/python docker/checks` (from the repo root).

Prints each problem and exits 1 if there is any. tests/unit/test_docker_files.py runs the same
checks (and shows on mutated copies that they catch what they claim to).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _facts import COMPOSE, DASHBOARD, DOCKER, RAYSERVICE, load_compose
from check_compose import compose_problems
from check_dashboard import dashboard_problems
from check_dockerfile import dockerfile_problems, dockerignore_problems
from check_rayservice import k8s_docs, rayservice_problems, sync_problems
from check_security import all_docs, compose_security_problems, rayservice_security_problems


def all_problems() -> dict[str, list[str]]:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    return {
        "Dockerfile": dockerfile_problems(dockerfile),
        "Dockerfile.dockerignore": dockerignore_problems(
            (DOCKER / "Dockerfile.dockerignore").read_text(), dockerfile
        ),
        "compose.yaml": compose_problems(load_compose(), COMPOSE.parent)
        + compose_security_problems(load_compose()),
        "grafana/dashboards/raylane.json": dashboard_problems(json.loads(DASHBOARD.read_text())),
        "k8s/rayservice.yaml": rayservice_problems(k8s_docs())
        + sync_problems()
        + rayservice_security_problems(all_docs(RAYSERVICE)),
    }


def main() -> int:
    bad = 0
    for name, problems in all_problems().items():
        print(f"docker/{name}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for p in problems:
            print(f"  - {p}")
        bad += len(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
