"""Drift reports take bounded disk: the newest ``drift.report_keep`` are kept, those older
than ``drift.report_max_age_s`` go, and nothing but the monitor's own reports is touched."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from raylane.config import DriftConfig, PipelineConfig
from raylane.monitoring.drift import DriftDetector
from raylane.monitoring.drift_monitor import REPORT_NAME, DriftMonitor, prune_reports

ROOT = Path(__file__).resolve().parents[3]
T = 1_800_000_000.0  # a fixed "now" for file times; no test reads the clock
DAY = 86_400.0


def report(folder: Path, i: int, mtime: float, model: str = "fraud") -> Path:
    p = folder / f"{model}-v{i % 3 + 1}-2026-11-28T06{i:02d}00.123000Z-{i:08x}.html"
    p.write_text(f"report {i}")
    os.utime(p, (mtime, mtime))
    return p


def foreign(folder: Path, mtime: float) -> list[Path]:
    """Files the monitor did not write (and a folder named like a report): never touched."""
    out = []
    for name in ("notes.txt", "fraud-summary.html", "fraud-v1-latest.html", "index.html"):
        p = folder / name
        p.write_text("mine")
        os.utime(p, (mtime, mtime))
        out.append(p)
    d = folder / "fraud-v1-2026-01-01T000000Z-0000abcd.html"
    d.mkdir()
    out.append(d)
    return out


def test_the_newest_reports_are_kept_and_foreign_files_left_alone(tmp_path: Path) -> None:
    reports = [report(tmp_path, i, T - 100 * (9 - i)) for i in range(10)]  # 9 is newest
    mine = foreign(tmp_path, T - 10 * DAY)

    deleted = prune_reports(tmp_path, keep=3, max_age_s=None, now=T)

    assert sorted(deleted) == sorted(reports[:7])
    assert sorted(p for p in tmp_path.iterdir() if p not in mine) == sorted(reports[7:])
    assert all(p.exists() for p in mine)
    assert prune_reports(tmp_path, keep=3, max_age_s=None, now=T) == []  # idempotent


def test_reports_older_than_max_age_go_even_within_keep(tmp_path: Path) -> None:
    old = [report(tmp_path, i, T - 8 * DAY - i) for i in range(3)]
    fresh = [report(tmp_path, 10 + i, T - DAY + i) for i in range(2)]
    mine = foreign(tmp_path, T - 30 * DAY)

    deleted = prune_reports(tmp_path, keep=50, max_age_s=7 * DAY, now=T)

    assert sorted(deleted) == sorted(old)
    assert all(p.exists() for p in fresh + mine)


def test_both_limits_apply_and_the_report_just_written_is_never_deleted(tmp_path: Path) -> None:
    reports = [report(tmp_path, i, T - 10 * (5 - i)) for i in range(6)]
    reports.append(report(tmp_path, 20, T - 9 * DAY))  # the oldest, over the age limit
    just_written = reports[0]  # oldest of the recent ones, by its file time

    deleted = prune_reports(tmp_path, keep=2, max_age_s=DAY, now=T, protect=just_written)

    assert just_written.exists() and just_written not in deleted
    assert sorted(p for p in tmp_path.iterdir()) == sorted([just_written, *reports[4:6]])


def test_a_missing_folder_prunes_nothing(tmp_path: Path) -> None:
    assert prune_reports(tmp_path / "absent", keep=1, max_age_s=1.0, now=T) == []


def test_retention_settings_have_safe_defaults_and_refuse_nonsense() -> None:
    d = DriftConfig()
    assert d.report_keep == 50 and d.report_max_age_s == 7 * DAY
    assert DriftConfig(report_max_age_s=None).report_max_age_s is None
    for bad in ({"report_keep": 0}, {"report_max_age_s": 0}, {"report_keep_days": 3}):
        with pytest.raises(ValidationError):
            DriftConfig(**bad)
    for name in ("report_keep", "report_max_age_s"):
        assert DriftConfig.model_fields[name].description


def _reference(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3, 0.7, n),
            "user_risk_profile__risk_score": rng.beta(2, 8, n),
            "score": rng.beta(1, 30, n),
        }
    )


def test_the_monitor_prunes_its_report_folder_after_each_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def small_report(snapshot: Any, path: Path) -> Path:  # Evidently's HTML is ~3.5 MB
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<html>report</html>")
        return path

    monkeypatch.setattr(DriftDetector, "save_report", staticmethod(small_report))
    doc = yaml.safe_load((ROOT / "serve_configs" / "fraud.yaml").read_text())
    args = copy.deepcopy(doc["applications"][0]["args"])
    args["drift"] = {
        "window_size": 300,
        "min_window_size": 100,
        "method": "psi",
        "drift_share": 0.3,
        "columns": ["amount"],
        "report_keep": 2,
    }
    cfg = PipelineConfig.from_args(args)
    ref = _reference()
    mine = foreign(tmp_path, T - 365 * DAY)
    mon = DriftMonitor(cfg, lambda name, version: ref, report_dir=tmp_path)
    rng = np.random.default_rng(5)
    uris: list[str] = []
    for w in range(3):
        evs = [
            {
                "event_id": f"e{w}-{i}",
                "correlation_id": f"c{i}",
                "model_name": "fraud",
                "model_version": "1",
                "event_time": 1_700_000_000_000 + 60_000 * w + i,
                "score": float(s),
                "features": {"amount": float(a)},
            }
            for i, (a, s) in enumerate(
                zip(rng.lognormal(3, 0.7, 300) * 5, rng.beta(1, 30, 300), strict=True)
            )
        ]
        (closed,) = mon.add(evs)
        ev = mon.evaluate(closed)
        assert ev.event is not None and ev.report is not None
        assert REPORT_NAME.fullmatch(ev.report.name)  # the pattern prune_reports matches
        uris.append(ev.event["report_uri"])

    kept = sorted(p for p in tmp_path.iterdir() if p not in mine)
    assert len(kept) == 2 and all(p.exists() for p in mine)
    paths = [Path(u.removeprefix("file://")) for u in uris]
    assert paths[2].is_file()  # the newest report is always kept
    # the event of a pruned report keeps its (now dangling) report_uri
    assert sum(p.is_file() for p in paths) == 2
