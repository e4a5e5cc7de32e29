"""Keep the RayService's ``serveConfigV2`` in sync with ``serve_configs/fraud.yaml``.

The Serve config inside ``docker/k8s/rayservice.yaml`` is generated from the serve config
file, with two Kubernetes-specific changes (see :data:`K8S_CHANGES`):

* ``proxy_location: EveryNode`` instead of ``Disabled``: KubeRay probes the Serve proxy
  (``:8000/-/healthz``) for worker-pod readiness and counts proxies as the RayService's serve
  endpoints; the pipeline has no HTTP route (``route_prefix: null``), so the proxies carry no
  traffic.
* the application's ``runtime_env.env_vars`` get :data:`raylane.serving.runtime.REPLICA_ENV`
  (Serve's throughput-optimized mode for the replicas), as ``raylane demo`` sets it.

Usage (from the repository root, with raylane installed)::

    python docker/k8s/sync_rayservice.py           # rewrite the serveConfigV2 block in place
    python docker/k8s/sync_rayservice.py --check   # exit 1 if it is stale (the unit tests check it)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIG = ROOT / "serve_configs" / "fraud.yaml"
RAYSERVICE = ROOT / "docker" / "k8s" / "rayservice.yaml"

K8S_CHANGES = {"proxy_location": "EveryNode"}

HEADER = (
    "# GENERATED from serve_configs/fraud.yaml by docker/k8s/sync_rayservice.py; edit that file\n"
    "# and rerun the script. Differences: proxy_location (KubeRay probes the Serve proxy) and\n"
    "# the replicas' runtime_env (raylane.serving.runtime.REPLICA_ENV).\n"
)

_BLOCK = re.compile(r"^(?P<indent>[ ]*)serveConfigV2:[ ]*\|[-+]?[ ]*$")


def _replica_env() -> dict[str, str]:
    from raylane.serving.runtime import REPLICA_ENV

    return dict(REPLICA_ENV)


def serve_config(
    serve_config_path: Path = SERVE_CONFIG, replica_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The Serve config document the RayService embeds, as a dict."""
    doc = yaml.safe_load(serve_config_path.read_text())
    env = _replica_env() if replica_env is None else replica_env
    out: dict[str, Any] = {**doc, **K8S_CHANGES}
    apps = []
    for app in doc["applications"]:
        app = dict(app)
        runtime_env = dict(app.get("runtime_env") or {})
        runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env}
        # keep the file's key order, with runtime_env just before args
        ordered = {k: v for k, v in app.items() if k not in ("runtime_env", "args")}
        ordered["runtime_env"] = runtime_env
        ordered["args"] = app["args"]
        apps.append(ordered)
    out["applications"] = apps
    return out


class _Flow(list):
    pass


class _FlowMap(dict):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)
_Dumper.add_representer(
    _FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _simple(v: Any) -> bool:
    return _scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v))


def _styled(obj: Any, in_list: bool = False) -> Any:
    """Flow style for lists of scalars and for small flat maps (list items, one-key maps)."""
    if isinstance(obj, dict):
        if obj and all(_simple(v) for v in obj.values()) and (in_list or len(obj) == 1):
            return _FlowMap({k: _styled(v) for k, v in obj.items()})
        return {k: _styled(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if all(_scalar(x) for x in obj):
            return _Flow(obj)
        return [_styled(x, in_list=True) for x in obj]
    return obj


def render(
    serve_config_path: Path = SERVE_CONFIG, replica_env: dict[str, str] | None = None
) -> str:
    """The text of the serveConfigV2 block (not indented)."""
    body = yaml.dump(
        _styled(serve_config(serve_config_path, replica_env)),
        Dumper=_Dumper,
        sort_keys=False,
        width=120,
        default_flow_style=False,
    )
    return HEADER + body


def _split(text: str) -> tuple[list[str], int, int, str]:
    """(lines, first line of the block, end of the block, indentation of the block body)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = _BLOCK.match(line.rstrip("\n"))
        if m:
            key_indent = len(m.group("indent"))
            j = i + 1
            while j < len(lines):
                stripped = lines[j].strip()
                if stripped and len(lines[j]) - len(lines[j].lstrip(" ")) <= key_indent:
                    break
                j += 1
            while j > i + 1 and not lines[j - 1].strip():  # trailing blank lines stay outside
                j -= 1
            return lines, i + 1, j, " " * (key_indent + 2)
    raise ValueError("no `serveConfigV2: |` block found")


def embedded(rayservice_text: str) -> str:
    """The serveConfigV2 block of a RayService manifest, dedented."""
    lines, start, end, indent = _split(rayservice_text)
    return "".join(
        line[len(indent) :] if line.startswith(indent) else line.lstrip(" ")
        for line in lines[start:end]
    )


def synced(rayservice_text: str, block: str) -> str:
    """`rayservice_text` with its serveConfigV2 block replaced by `block`."""
    lines, start, end, indent = _split(rayservice_text)
    body = [(indent + line if line.strip() else line) for line in block.splitlines(keepends=True)]
    return "".join(lines[:start] + body + lines[end:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if rayservice.yaml is stale")
    ap.add_argument("--serve-config", type=Path, default=SERVE_CONFIG)
    ap.add_argument("--rayservice", type=Path, default=RAYSERVICE)
    ns = ap.parse_args(argv)
    current = ns.rayservice.read_text()
    want = synced(current, render(ns.serve_config))
    if want == current:
        print(f"{ns.rayservice} is in sync with {ns.serve_config}")
        return 0
    if ns.check:
        print(
            f"{ns.rayservice} is stale: run python docker/k8s/sync_rayservice.py", file=sys.stderr
        )
        return 1
    ns.rayservice.write_text(want)
    print(f"updated serveConfigV2 of {ns.rayservice} from {ns.serve_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
