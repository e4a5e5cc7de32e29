"""Run a pipeline's Serve app from Python: what `raylane demo`, the bench and e2e tests use.

Equivalent to `serve run serve_configs/<name>.yaml` on a local Ray, but returns
control to the caller (which then drives traffic) and cleans up on exit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray import serve

from raylane.config import PipelineConfig, load_serve_config
from raylane.errors import RaylaneError
from raylane.serving.app import build_app, deployment_names
from raylane.settings import Settings

__all__ = ["ENV_RAY_HOST", "REPLICA_ENV", "RunningPipeline", "run_pipeline", "start_ray"]

log = logging.getLogger("raylane.serving")

#: Address a local Ray started here listens on (default 127.0.0.1: nothing off the machine)
ENV_RAY_HOST = "RAYLANE_RAY_HOST"

#: Ray Serve's documented latency/throughput mode for the replicas: user code and the
#: handle router on the replica's own event loop, no extra thread hop per model call.
#: (Not for the driver: it calls handles synchronously.) That mode also turns on Serve's
#: "direct ingress": HTTP/gRPC servers in the application's ingress replica, which on stop
#: stays open 30 s (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S) for load balancers to
#: deregister it. raylane's ingress reads Kafka and serves no HTTP, so that only delayed
#: every stop (Ctrl-C, a redeploy, each test module) by 30 s and opened unused listeners.
REPLICA_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}


def _loopback_only() -> dict[str, Any]:
    """ray.init options that keep a new local Ray's GCS, raylet, agents and workers on 127.0.0.1.

    Ray resolves ``_node_ip_address="127.0.0.1"`` back to the machine's LAN address unless
    its single-machine mode is on (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's own switch
    for "this node is the whole cluster"): then every server binds the loopback address.
    The variable is read at import, so the driver's constant is set too; Ray's processes
    inherit the variable. ``RAYLANE_RAY_HOST`` set to another address opts out.
    """
    host = os.environ.get(ENV_RAY_HOST, "").strip() or "127.0.0.1"
    if host != "127.0.0.1":
        return {"_node_ip_address": host}
    from ray._private import ray_constants

    var = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    _saved.setdefault("mode", (os.environ.get(var), ray_constants.ENABLE_RAY_CLUSTER))
    os.environ[var] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    return {"_node_ip_address": "127.0.0.1"}


_saved: dict[str, tuple[str | None, bool]] = {}


def _restore_cluster_mode() -> None:
    """Undo :func:`_loopback_only` after ``ray.shutdown`` (a later ray.init in this process
    may join or build a multi-node cluster)."""
    if "mode" not in _saved:
        return
    from ray._private import ray_constants

    env, enabled = _saved.pop("mode")
    var = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    if env is None:
        os.environ.pop(var, None)
    else:
        os.environ[var] = env
    ray_constants.ENABLE_RAY_CLUSTER = enabled


def start_ray(num_cpus: int | None = None, object_store_mb: int = 256) -> None:
    """A local Ray sized for a laptop / CI box, quiet, no dashboard, on 127.0.0.1, token auth
    (Ray's default for a new local cluster; a warning if the environment turned it off).

    With ``RAY_ADDRESS`` set, connects to that cluster instead (its own settings apply).
    """
    if ray.is_initialized():
        return
    # Ray lowers its workers to nice 15; on a small box that starves the replicas behind
    # the broker and Redis. The raylet reads this when ray.init starts it.
    os.environ.setdefault("RAY_worker_niceness", "0")
    local = {} if os.environ.get("RAY_ADDRESS") else _loopback_only()
    ray.init(
        **local,
        num_cpus=num_cpus or max(4, os.cpu_count() or 2),
        include_dashboard=False,
        object_store_memory=object_store_mb * 1024 * 1024,
        logging_level=logging.WARNING,
        log_to_driver=os.environ.get("RAYLANE_RAY_LOGS", "0") == "1",
        runtime_env={"env_vars": {**Settings.load().replica_env(), **REPLICA_ENV}},
    )
    # Ray 2.60 turns token auth on for a new local cluster unless RAY_AUTH_MODE says
    # otherwise (it sets the variable itself; the token lives in ~/.ray/auth_token). Setting
    # it here instead would not reach the driver's already-loaded Ray config.
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        log.warning(
            "Ray runs without token authentication (RAY_AUTH_MODE=%s); anyone who reaches "
            "its ports can run code. Unset RAY_AUTH_MODE or set it to token.",
            os.environ.get("RAY_AUTH_MODE", ""),
        )


class RunningPipeline:
    def __init__(self, cfg: PipelineConfig, app_name: str) -> None:
        self.cfg = cfg
        self.app_name = app_name
        self.names = deployment_names(cfg)

    @property
    def ingress(self) -> Any:
        return serve.get_deployment_handle(self.names["ingress"], app_name=self.app_name)

    def model(self, label: str) -> Any:
        """The deployment handle of a model (``placement: deployment``)."""
        if self._placement(label) == "ingress":
            raise RaylaneError(
                f"model {label} of {self.cfg.name} is placed in the ingress: it has no "
                "deployment; use model_info()"
            )
        return serve.get_deployment_handle(self.names[label], app_name=self.app_name)

    def model_info(self, label: str) -> dict[str, Any]:
        """`info()` of a model wherever it is placed (from one replica the handle picks)."""
        if self._placement(label) == "ingress":
            return dict(self.ingress.model_info.remote(label).result(timeout_s=30))
        return dict(self.model(label).info.remote().result(timeout_s=30))

    def _placement(self, label: str) -> str:
        models = [self.cfg.models.primary, *self.cfg.models.shadows]
        for m in models:
            if m.name == label:
                return m.placement
        raise KeyError(f"no model {label!r} in {self.cfg.name}: {[m.name for m in models]}")

    def stats(self) -> dict[str, Any]:
        """Stats of one ingress replica (the handle picks one)."""
        return dict(self.ingress.stats.remote().result(timeout_s=30))

    def wait_assigned(self, timeout_s: float = 120) -> None:
        """Block until the ingress consumer has joined its group and owns partitions."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.stats()
            if last.get("assignment"):
                return
            if not last.get("running", True):
                break
            time.sleep(0.5)
        raise RaylaneError(
            f"ingress of {self.cfg.name} did not get partitions in {timeout_s:g} s: {last}"
        )


@contextmanager
def run_pipeline(
    config_path: str | Path, *, num_cpus: int | None = None, overrides: dict[str, Any] | None = None
) -> Iterator[RunningPipeline]:
    """Deploy the pipeline of a serve config on local Ray; tear everything down on exit.

    `overrides` are merged into the application's args (shallowly per top-level key),
    e.g. to point a test at unique topics.
    """
    doc, _ = load_serve_config(config_path)
    app = doc["applications"][0]
    args = dict(app["args"])
    for k, v in (overrides or {}).items():
        args[k] = (
            {**args.get(k, {}), **v} if isinstance(v, dict) and isinstance(args.get(k), dict) else v
        )
    cfg = PipelineConfig.from_args(args)
    interrupted = False
    start_ray(num_cpus)
    try:
        serve.start(
            proxy_location="Disabled",
            logging_config={"enable_access_log": False, "log_level": "WARNING"},
        )
        serve.run(
            build_app(args), name=app.get("name", cfg.name), route_prefix=None, blocking=False
        )
        yield RunningPipeline(cfg, app.get("name", cfg.name))
    except KeyboardInterrupt:
        # Ctrl-C reached Ray's processes too: a graceful Serve shutdown would wait on a
        # controller that is going away. Stop Ray at once; uncommitted input is re-read.
        interrupted = True
        raise
    finally:
        try:
            if not interrupted:
                serve.shutdown()
        finally:
            ray.shutdown()
            _restore_cluster_mode()
