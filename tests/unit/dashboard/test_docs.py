"""docs/dashboard.md stays true: its commands' options exist and its alert table is the rules'."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from raylane.cli import app

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "dashboard.md").read_text()


def test_the_documented_options_exist() -> None:
    result = CliRunner().invoke(app, ["dashboard", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    used = set(re.findall(r"raylane dashboard[^\n]*", DOC))
    options = {o for line in used for o in re.findall(r"(--[a-z-]+)", line)}
    assert options >= {"--port", "--refresh", "--host", "--prometheus"}
    for option in options:
        assert option in result.output, option


def test_the_alert_table_lists_the_shipped_rules() -> None:
    rules = yaml.safe_load((ROOT / "docker" / "prometheus" / "alerts.yml").read_text())
    shipped = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    documented = set(re.findall(r"^\| `(Raylane\w+)` \|", DOC, flags=re.M))
    assert documented == shipped
