"""docs/contracts.md stays true: its DLQ header table, declaration example and CLI names."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from raylane.contracts import ConsumerDeclaration
from raylane.kafka import deadletters as D

DOC = (Path(__file__).resolve().parents[3] / "docs/contracts.md").read_text()


def test_dlq_header_table_lists_every_header() -> None:
    names = {getattr(D, n) for n in D.__all__ if n.startswith("H_")}
    table = set(re.findall(r"^\| `(raylane\.[a-z_.]+)` \|", DOC, flags=re.MULTILINE))
    assert table == names


def test_declaration_example_is_a_valid_declaration() -> None:
    block = DOC.split("**Adding a declaration**", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    decl = ConsumerDeclaration.model_validate(yaml.safe_load(block))
    assert decl.reads["payments.scored"]["model_version"] == "string?"


def test_documented_commands_exist() -> None:
    from typer.testing import CliRunner

    from raylane.cli import app

    runner = CliRunner()
    for group, cmds in {
        "schema": ("check", "register", "compat"),
        "dlq": ("inspect", "replay"),
    }.items():
        for cmd in cmds:
            assert f"raylane {group} {cmd}" in DOC
            assert runner.invoke(app, [group, cmd, "--help"]).exit_code == 0
