"""docker/grafana/dashboards/raylane.json and docker/prometheus/alerts.yml: their PromQL
against raylane's metric families (raylane.monitoring.metrics, the drift monitor's and the
action layer's)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}
_GROUPING = r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
_SUFFIXES = {
    "counter": ["_total", "_created"],
    "gauge": [""],
    "histogram": ["_bucket", "_count", "_sum", "_created"],
    "summary": ["", "_count", "_sum", "_created"],
}


def metric_families() -> dict[str, tuple[str, set[str]]]:
    """Exposed sample name -> (family, label names), for every collector of METRICS.

    prometheus_client names a counter's family without `_total` and exposes `_total`; a
    histogram exposes `_bucket` (with `le`), `_count` and `_sum`.
    """
    from prometheus_client.metrics import MetricWrapperBase
    from raylane.actions.metrics import ACTION_METRICS
    from raylane.monitoring.drift_monitor import DRIFT_METRICS
    from raylane.monitoring.metrics import METRICS

    out: dict[str, tuple[str, set[str]]] = {}
    collectors = [
        c for group in (METRICS, DRIFT_METRICS, ACTION_METRICS) for c in vars(group).values()
    ]
    for collector in collectors:
        if not isinstance(collector, MetricWrapperBase):
            continue
        labels = set(collector._labelnames)
        for family in collector.describe():
            for suffix in _SUFFIXES[family.type]:
                out[family.name + suffix] = (
                    family.name,
                    labels | ({"le"} if suffix == "_bucket" else set()),
                )
    return out


def promql_parts(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """([(metric name, label names of its matcher)], grouping labels) of a PromQL expression."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings ($variables live there)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    grouping = {
        x.strip() for m in re.finditer(_GROUPING, e) for x in m.group(2).split(",") if x.strip()
    }
    e = re.sub(_GROUPING, " ", e)
    selectors = [
        (m.group(1), set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", m.group(2))))
        for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", e)
    ]
    e = re.sub(r"([A-Za-z_:][\w:]*)?\s*\{[^}]*\}", " ", e)
    selectors += [
        (m.group(1), set())
        for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", e)
        if m.group(1) not in _WORDS
    ]
    return selectors, grouping


def dashboard_queries(dash: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, expr, legendFormat) of every target, plus label_values() of the variables."""
    out = []
    for panel in dash.get("panels", []):
        for sub in [panel, *panel.get("panels", [])]:
            out += [
                (sub.get("title", ""), t.get("expr", ""), t.get("legendFormat", ""))
                for t in sub.get("targets", [])
            ]
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else str(q or "")
        m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_]\w*)\s*\)\s*", q)
        if m:
            out.append((f"variable {var.get('name')}", m.group(1), "{{" + m.group(2) + "}}"))
    return out


def _quantile(q: str, metric: str) -> Callable[[str], bool]:
    return lambda e: f"histogram_quantile({q}," in e and f"{metric}_bucket" in e


#: What the dashboard must show -> a test on one of its expressions.
REQUIRED: dict[str, Callable[[str], Any]] = {
    "events in/s": lambda e: "rate(raylane_events_in_total" in e,
    "scored/s by decision": lambda e: "raylane_events_scored_total" in e and "by (decision)" in e,
    "DLQ/s by error class": lambda e: "raylane_events_dlq_total" in e and "by (error_class)" in e,
    "stage latency p50": _quantile("0.5", "raylane_stage_latency_ms"),
    "stage latency p99": _quantile("0.99", "raylane_stage_latency_ms"),
    "event->scored latency p99": _quantile("0.99", "raylane_event_to_scored_latency_ms"),
    "shadow agreement rate": lambda e: re.search(
        r"raylane_shadow_agreements_total.*\)\s*/\s*.*raylane_shadow_compared_total", e
    ),
    "shadow |delta| p95": _quantile("0.95", "raylane_shadow_abs_delta"),
    "consumer paused": lambda e: "raylane_consumer_paused" in e,
    "breaker open": lambda e: "raylane_breaker_open" in e,
    "batch retries": lambda e: "raylane_batch_retries_total" in e,
    "flag rate per model": lambda e: "raylane_shadow_flag_rate" in e and "role" in e,
    "model latency per model": lambda e: "raylane_shadow_model_latency_ms" in e,
    "consumer lag per partition": lambda e: "raylane_consumer_lag" in e and "partition" in e,
    "seconds since commit": lambda e: "raylane_seconds_since_commit" in e,
    "drift share": lambda e: "raylane_drift_share" in e,
    "drift alert": lambda e: "raylane_drift_open" in e,
    "drift score per column": lambda e: "raylane_drift_column_score" in e and "column" in e,
    "actions by handler and outcome": lambda e: "raylane_actions_total" in e and "outcome" in e,
    "action breaker": lambda e: "raylane_action_breaker_open" in e,
    "prediction cache": lambda e: "raylane_prediction_cache_hit_rate" in e,
}


def alert_problems(rules: dict[str, Any]) -> list[str]:
    """Problems of a Prometheus rule file's expressions: unknown metrics or labels."""
    families = metric_families()
    problems = []
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record") or "?"
            selectors, grouping = promql_parts(str(rule.get("expr", "")))
            if not selectors:
                problems.append(f"{name}: no metric in {rule.get('expr')!r}")
            labels: set[str] = set()
            for metric, used in selectors:
                if metric not in families:
                    problems.append(f"{name}: metric {metric} is not exposed by raylane")
                    continue
                labels |= families[metric][1]
                if used - families[metric][1]:
                    problems.append(
                        f"{name}: {metric} has no label {sorted(used - families[metric][1])}"
                    )
            if grouping - labels and all(n in families for n, _ in selectors):
                problems.append(f"{name}: grouping by unknown labels {sorted(grouping - labels)}")
    return problems


def dashboard_problems(dash: dict[str, Any]) -> list[str]:
    families = metric_families()
    problems = []
    queries = dashboard_queries(dash)
    for title, expr, legend in queries:
        selectors, grouping = promql_parts(expr)
        if not selectors:
            problems.append(f"{title}: no metric in {expr!r}")
        labels: set[str] = set()
        for name, used in selectors:
            if name not in families:
                problems.append(
                    f"{title}: metric {name} is not exposed by raylane.monitoring.metrics.METRICS"
                )
                continue
            labels |= families[name][1]
            if used - families[name][1]:
                problems.append(f"{title}: {name} has no label {sorted(used - families[name][1])}")
        if grouping - labels and all(n in families for n, _ in selectors):
            problems.append(
                f"{title}: grouping by unknown labels {sorted(grouping - labels)} in {expr!r}"
            )
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        scope = grouping if grouping and re.search(r"\b(sum|max|min|avg|count)\b", expr) else labels
        if legend_labels - scope:
            problems.append(
                f"{title}: legend uses {sorted(legend_labels - scope)}, not in {sorted(scope)}"
            )
    exprs = [e for _, e, _ in queries]
    problems += [
        f"no panel shows {what}"
        for what, check in REQUIRED.items()
        if not any(check(e) for e in exprs)
    ]
    return problems
