"""Autoscaling of a model deployment on local Ray, driven by the config's autoscaling fields.

The primary's ``autoscaling_config`` (short delays) goes through the same
``model_options`` that ``build_app`` uses; sustained concurrent batch calls scale the
deployment from 1 to >= 2 replicas, and it scales back to 1 once the load stops.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"


def _running(app: str, deployment: str) -> int:
    from ray import serve

    st = serve.status().applications[app].deployments[deployment]
    return int(st.replica_states.get("RUNNING", 0))


def test_model_deployment_scales_up_under_load_and_back(bootstrapped) -> None:
    from ray import serve

    from raylane.config import PipelineConfig
    from raylane.serving._deployments import ModelServer
    from raylane.serving.app import model_options
    from raylane.serving.runtime import start_ray
    from raylane.settings import Settings

    args = yaml.safe_load(FRAUD.read_text())["applications"][0]["args"]
    args["models"]["primary"]["placement"] = "deployment"  # a deployment of its own scales
    args["models"]["primary"]["autoscaling_config"] = {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 1,
        "downscale_delay_s": 4,
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2,
    }
    cfg = PipelineConfig.from_args(args)
    m = cfg.models.primary
    opts = model_options(m)
    assert opts["autoscaling_config"]["max_replicas"] == 2
    name, app = "autoscale-model", "autoscale"
    start_ray()
    try:
        serve.start(
            proxy_location="Disabled",
            logging_config={"enable_access_log": False, "log_level": "WARNING"},
        )
        handle = serve.run(
            ModelServer.options(name=name, **opts).bind(  # type: ignore[attr-defined]
                m.model_dump(mode="json"), Settings.load().as_env(), name
            ),
            name=app,
            route_prefix=None,
        )
        features = handle.info.remote().result(timeout_s=60)["features"]
        rng = np.random.default_rng(0)
        cols = {f: rng.uniform(0, 1, 20_000) for f in features}
        assert _running(app, name) == 1

        stop = threading.Event()
        calls = [0]

        def load() -> None:
            while not stop.is_set():
                handle.predict.remote(cols).result(timeout_s=60)
                calls[0] += 1

        workers = [threading.Thread(target=load, daemon=True) for _ in range(6)]
        for w in workers:
            w.start()
        peak, t0 = 1, time.monotonic()
        while time.monotonic() - t0 < 120 and peak < 2:
            peak = max(peak, _running(app, name))
            time.sleep(0.5)
        up_s = time.monotonic() - t0
        stop.set()
        for w in workers:
            w.join(timeout=60)
        print(
            f"scaled to {peak} replicas {up_s:.1f} s into the load "
            f"({calls[0]} batch calls of 20,000 rows)"
        )
        assert peak >= 2

        t1, now = time.monotonic(), peak
        while time.monotonic() - t1 < 120 and now > 1:
            time.sleep(0.5)
            st = serve.status().applications[app].deployments[name]
            now = sum(int(v) for v in st.replica_states.values())
        print(f"back to {now} replica(s) {time.monotonic() - t1:.1f} s after the load stopped")
        assert now == 1
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()
