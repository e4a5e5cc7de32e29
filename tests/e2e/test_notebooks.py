"""The data scientist's half, end to end: archive, labels, backtest on Ray Data, notebooks.

The fraud app runs on local Ray Serve with its own topics, its own copy of the models (so
promoting from a notebook never moves the real aliases), the event archive writing every few
seconds and a drift monitor on small windows. Payments flow with delayed labels from a thread.
Then:

* a backtest of the challenger against the champion on Ray Data equals the same computation
  done directly in pandas, figure for figure;
* the four notebooks run top to bottom against it (nbclient), in order, strict: a notebook
  that does not see what it waits for (the new shadow version, a promotion, a drift event, a
  replay) fails.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
FRAUD = ROOT / "serve_configs" / "fraud.yaml"
NOTEBOOKS = ROOT / "notebooks"
#: payments (and due labels) go out in one send every CHUNK_S seconds
CHUNK_S = 0.25
#: the drift monitor compares these (amount-driven) columns; the drift phase multiplies amounts
DRIFT_COLUMNS = ["amount", "amount_to_user_avg", "user_amount_sum_60s", "amount_60s_to_user_avg"]


class Payments:
    """Live payments (event time = send time) and their delayed labels, from a thread."""

    def __init__(self, args: dict[str, Any], bootstrap: str, rate: float) -> None:
        from raylane.testing import LabelFeed, World

        self.args, self.bootstrap, self.rate = args, bootstrap, rate
        self.world = World(seed=7, n_users=20_000)  # the world bootstrap wrote the profiles of
        self.stream = self.world.stream(fraud_rate=0.05, seed=int(time.time()))
        self.labels = LabelFeed(
            chargeback_min_s=2.0, chargeback_max_s=6.0, maturity_s=8.0, unlabelled_share=0.1, seed=3
        )
        self.sent = self.labelled = 0
        self.drift = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()

    async def _main(self) -> None:
        from raylane.contracts import Codec
        from raylane.kafka.producer import EventProducer

        a = self.args
        try:
            async with (
                EventProducer(
                    self.bootstrap,
                    a["input"]["topic"],
                    Codec.for_contract(a["input"]["contract"]),
                    key_field=a["input"]["key_field"],
                ) as pay,
                EventProducer(
                    self.bootstrap,
                    a["labels"]["topic"],
                    Codec.for_contract(a["labels"]["contract"]),
                    key_field="event_id",
                ) as lab,
            ):
                # events are made at `rate` (event time = when made; after a pause, the
                # missed ones at once, as before) and sent every CHUNK_S:
                # one record batch per partition per send, not one per event. The embedded
                # broker (Tansu 0.6, memory storage) stops serving a partition that holds
                # ~10,000-15,000 record batches (docs/reliability.md); one event per batch at
                # 60/s on 2 partitions reached that in ~8 minutes, and the ingress's fetches
                # hung (its stall check fired, no drift event came)
                t_next = t_send = time.monotonic()
                chunk: list[dict[str, Any]] = []
                while not self.stop.is_set():
                    now = time.monotonic()
                    while self.running.is_set() and now >= t_next:
                        le = next(self.stream)
                        ev = dict(le.event, event_time=int(time.time() * 1000))
                        if self.drift.is_set():
                            ev["amount"] = round(ev["amount"] * 8, 2)
                        chunk.append(ev)
                        self.labels.add(type(le)(ev, le.is_fraud, le.kind))
                        t_next += 1.0 / self.rate
                    if chunk and now >= t_send:
                        await pay.send_many(chunk, wait=False)
                        self.sent += len(chunk)
                        chunk = []
                    if now >= t_send:
                        t_send = now + CHUNK_S
                        if self.running.is_set():
                            due = self.labels.due(int(time.time() * 1000))
                            if due:
                                await lab.send_many(due, wait=False)
                                self.labelled += len(due)
                    await asyncio.sleep(0.01)
                await pay.flush()
                await lab.flush()
        except BaseException as e:
            self.error = e

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise RuntimeError(f"the payment thread failed: {self.error!r}")


class DriftWatch:
    """The drift monitor replica's stats every 5 s, from a thread: when a notebook waits in
    vain for a drift event, the failure says whether the monitor was behind (``pending``),
    stuck in one window (``evaluating`` since when) or failing (``last_error``), with a
    py-spy dump of where its threads are."""

    def __init__(self, running: Any) -> None:
        from ray import serve

        self.handle = serve.get_deployment_handle(
            f"{running.cfg.name}-drift", app_name=running.app_name
        )
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.wait(5):
            try:
                st = self.handle.stats.remote().result(timeout_s=20)
            except Exception as e:
                st = {"error": repr(e)}
            self.samples.append((time.time(), st))

    def report(self) -> str:
        import subprocess
        import sys

        lines = [
            f"{time.strftime('%H:%M:%S', time.localtime(t))} {json.dumps(st, default=str)}"
            for t, st in self.samples[-24:]
        ]
        pid = next((st.get("pid") for _, st in reversed(self.samples) if "pid" in st), None)
        if pid:
            spy = Path(sys.executable).with_name("py-spy")
            try:
                out = subprocess.run(
                    [str(spy), "dump", "--pid", str(pid)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                lines.append(
                    f"py-spy dump of the drift replica (pid {pid}):\n{out.stdout}{out.stderr}"
                )
            except Exception as e:  # diagnostics only
                lines.append(f"py-spy dump failed: {e!r}")
        return "\n".join(lines)

    def close(self) -> None:
        self.stop.set()
        self._thread.join(30)


@pytest.fixture(scope="module")
def app(bootstrapped, tmp_path_factory):
    from raylane.kafka.admin import ensure_topics
    from raylane.serving.runtime import run_pipeline
    from raylane.testing.faults import use_own_model
    from raylane.testing.kafka import isolated_args, isolated_topics

    suffix = f"nb-{uuid.uuid4().hex[:6]}"
    args = isolated_args(FRAUD, suffix, num_replicas=1)
    use_own_model(
        args,
        bootstrapped.mlflow_tracking_uri,
        f"fraud-{suffix}",
        min_samples=50,
        audit_topic=f"models.promoted.{suffix}",
    )
    args["models"]["shadows"][0]["reload_poll_s"] = 1
    args["drift"].update(window_size=300, min_window_size=100, columns=DRIFT_COLUMNS)
    args["archive"].update(flush_interval_s=2)
    ensure_topics(bootstrapped.kafka_bootstrap, isolated_topics(args), partitions=2)
    doc = yaml.safe_load(FRAUD.read_text())
    doc["applications"][0]["args"] = copy.deepcopy(args)
    config = tmp_path_factory.mktemp("nb") / "fraud.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    with run_pipeline(FRAUD, overrides=args) as running:
        running.wait_assigned()
        traffic = Payments(args, bootstrapped.kafka_bootstrap, rate=60)
        watch = DriftWatch(running)
        try:
            yield running, args, config, traffic, watch
        finally:
            watch.close()
            traffic.close()


def _wait(what: str, fn: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})")


def test_a_backtest_on_ray_data_equals_the_same_computation_in_pandas(app, tmp_path):
    from typer.testing import CliRunner

    from raylane.cli import app as cli
    from raylane.lifecycle.backtest import decision_threshold, evaluate, score_frame
    from raylane.registry import load_model
    from raylane.sdk import Pipeline

    _, _, config, traffic, _ = app
    p = Pipeline.load(config)
    scored_topic = p.cfg.outputs.scored.topic
    _wait("1,500 archived scored events", lambda: len(p.archive(scored_topic)) >= 1500, 300)
    traffic.pause()
    # once paused, the archive catches up with the topic: every scored event is in a file
    on_topic = _wait("the scored topic to settle", lambda: set(p.scored()["event_id"]), 60)
    _wait(
        "the archive to hold every scored event",
        lambda: set(p.archive(scored_topic)["event_id"]) >= on_topic,
        60,
    )
    seen: list[int] = []

    def labels_settled() -> bool:  # the last labels sent reach the archive within a flush
        seen.append(len(p.labels()))
        time.sleep(3)
        return len(seen) > 1 and seen[-1] == seen[-2]

    _wait("the archived labels to settle", labels_settled, 60)
    labels = p.labels()
    assert len(labels) >= 500 and labels["label"].nunique() == 2, labels["label"].value_counts()
    start = p.archive(scored_topic)["_timestamp"].min()
    candidate = p.pin(p.cfg.models.shadows[0].uri)
    report = p.backtest(candidate, start=start, labels=labels, engine="ray")
    assert report.extra["engine"] == "ray"
    # the CLI runs the same backtest (every archived label: the same ones, traffic is paused)
    # on its default engine, in process for a range this small: both engines give the same
    out = tmp_path / "backtest.json"
    res = CliRunner().invoke(
        cli,
        [
            "backtest",
            p.name,
            "-f",
            str(config),
            "--candidate",
            candidate,
            "--since",
            start.isoformat(),
            "--json",
            str(out),
        ],
    )
    traffic.resume()
    assert res.exit_code == 0, res.output
    assert "ROC AUC" in res.output and candidate in res.output
    from_cli = json.loads(out.read_text())
    assert from_cli["extra"]["engine"] == "local", from_cli["extra"]
    assert (from_cli["events"], from_cli["labelled"]) == (report.events, report.labelled)
    for m in ("candidate", "champion"):
        assert from_cli["models"][m]["auc"] == pytest.approx(report.models[m].auc, rel=1e-12)

    # the same, in pandas: the archive's rows, both models loaded here, the same functions
    frame = p.archive(scored_topic, start)
    models = {k: load_model(u) for k, u in report.extra["uris"].items()}
    assert report.extra["uris"]["champion"] == p.pin(p.cfg.models.primary.uri)
    direct = evaluate(
        score_frame(frame, models),
        labels,
        decision_threshold(p.cfg),
        candidate="candidate",
        champion="champion",
    )
    assert report.events == direct.events == len(set(frame["event_id"])) >= 1500
    assert report.labelled == direct.labelled >= 400
    for m in ("candidate", "champion"):
        got, want = report.models[m], direct.models[m]
        assert (got.n, got.positives) == (want.n, want.positives)
        assert got.auc == pytest.approx(want.auc, rel=1e-12)
        assert got.precision == pytest.approx(want.precision, rel=1e-12)
        assert got.recall == pytest.approx(want.recall, rel=1e-12)
        assert got.flag_rate == pytest.approx(want.flag_rate, rel=1e-12)
        assert got.auc is not None and got.auc > 0.8, got  # real models on real labels
    assert report.agreement == pytest.approx(direct.agreement, rel=1e-12)
    assert report.mean_abs_delta == pytest.approx(direct.mean_abs_delta, rel=1e-12)


def _run_notebook(name: str, env: dict[str, str]) -> None:
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(
            nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        )
        try:
            client.execute()
        finally:  # the executed copy, outputs and plots included, to look at (not committed)
            out = ROOT / "test-artifacts" / "notebooks"
            out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out / name)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_the_four_notebooks_run_top_to_bottom(app):
    from raylane.sdk import Pipeline

    _, _, config, traffic, watch = app
    env = {
        "RAYLANE_NB_CONFIG": str(config),
        "RAYLANE_NB_SINCE": "1h",
        "RAYLANE_NB_WAIT_S": "240",
        "RAYLANE_NB_STRICT": "1",
    }
    p = Pipeline.load(config)

    def labelled_after_warmup() -> int:
        # notebook 01 trains on labelled events after the archive's first minute (before it,
        # window features are not yet full); labels arrive 2-8 s after their payments
        first = p.archive(p.cfg.input.topic, columns=["_timestamp"])["_timestamp"].min()
        if first is pd.NaT or pd.isna(first):
            return 0
        lab = p.labels()
        if lab.empty:  # nothing archived yet: the frame has only the archive's own columns
            return 0
        return int((lab["event_time"] > first.value // 1_000_000 + 90_000).sum())

    _wait(
        "1,500 labels of events after the first 90 s", lambda: labelled_after_warmup() >= 1500, 600
    )
    _run_notebook("01_features_and_training.ipynb", env)
    _run_notebook("02_shadow_vs_primary.ipynb", env)
    history = p.history()
    assert list(history["action"])[-2:] == ["shadow", "promote"], history
    traffic.drift.set()  # amounts x8: the monitor's next windows drift
    try:
        _run_notebook("03_drift.ipynb", env)
    except Exception as e:
        raise AssertionError(
            f"notebook 03 failed: {e}\nthe drift monitor:\n{watch.report()}"
        ) from e
    finally:
        traffic.drift.clear()
    _run_notebook("04_backtest_and_replay.ipynb", env)
