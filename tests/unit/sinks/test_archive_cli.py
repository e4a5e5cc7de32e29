"""`raylane archive status`: one row per archived topic, read from file footers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from raylane.cli import app
from raylane.kafka.records import InRecord
from raylane.sinks.archive import ArchiveSink

FRAUD = Path(__file__).resolve().parents[3] / "serve_configs" / "fraud.yaml"


def _config(tmp_path: Path, archive: dict[str, object] | None) -> Path:
    doc = yaml.safe_load(FRAUD.read_text())
    args = doc["applications"][0]["args"]
    args.pop("archive")
    if archive is not None:
        args["archive"] = archive
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_status_counts_each_topic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    root = tmp_path / "arch"
    recs = [InRecord("t.one", 0, o, None, b"{}", [], 1_700_000_000_000) for o in range(3)]
    ArchiveSink(str(root)).write_sync(recs)
    cfg = _config(tmp_path, {"topics": ["t.one", "t.two"], "path": str(root)})
    out = CliRunner().invoke(app, ["archive", "status", "-f", str(cfg)])
    assert out.exit_code == 0, out.output
    one = next(line for line in out.output.splitlines() if "t.one" in line)
    two = next(line for line in out.output.splitlines() if "t.two" in line)
    assert "│     1 │       3 │" in one and "2023-11-14 22:13:20" in one
    assert "│     0 │       0 │" in two


def test_status_without_an_archive_section_says_how_to_add_one(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["archive", "status", "-f", str(_config(tmp_path, None))])
    assert out.exit_code == 0 and "has no archive section" in out.output
