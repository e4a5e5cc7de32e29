"""The demo's summary: counts and the command-to-first-flagged timing, from what it saw."""

from __future__ import annotations

import time

import psutil
from rich.console import Console

from raylane.config import load_serve_config
from raylane.demo import _deployed, _LiveState, _summary
from raylane.monitoring.live import WatchStats


def test_the_summary_counts_time_from_the_command_to_running_and_first_flagged() -> None:
    st = _LiveState()
    # the process start, as the user's shell started it: not when the state was made
    assert st.command_at == psutil.Process().create_time() <= time.time()
    st.command_at = 1_000.0
    st.app_running_at = 1_041.25
    st.stats = WatchStats()
    st.stats.first_flagged_at = 1_047.5
    st.sent, st.fraud_ids = 10, {"a", "b"}
    st.stats.flagged_ids = {"a", "x"}
    st.stats.flagged = 2
    st.stats.scored_ids = {str(i) for i in range(10)}
    st.stats.all_latencies_ms = [float(i) for i in range(1, 101)]
    console = Console(record=True, width=100)
    out = _summary(st, console)
    assert (out["app_running_s"], out["first_flagged_s"]) == (41.2, 47.5)
    assert (out["fraud_recall"], out["flag_precision"]) == (0.5, 0.5)
    assert out["scored_distinct"] == 10
    assert out["latency_p99_ms"] == 99.0
    assert "first flagged s" in console.export_text()


def test_nothing_flagged_or_not_running_yet_reads_none() -> None:
    st = _LiveState()
    out = _summary(st, Console(record=True))
    assert out["app_running_s"] is None and out["first_flagged_s"] is None


def test_the_status_line_says_where_the_models_run() -> None:
    _, cfg = load_serve_config("serve_configs/fraud.yaml")
    assert _deployed(cfg) == "ingress, champion in the ingress, challenger in the ingress"
