"""docs/archive.md stays true: its example runs, its tables list the config and the columns."""

from __future__ import annotations

import re
from pathlib import Path

from raylane.config import ArchiveConfig
from raylane.sinks.archive import META_COLUMNS

DOC = (Path(__file__).resolve().parents[3] / "docs" / "archive.md").read_text()


def test_the_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "docs/archive.md", "exec"), {})


def test_the_config_table_lists_every_archive_key() -> None:
    documented = set(re.findall(r"^\| `([a-z][a-z_]*)` \| [^|]+ \| [^|]+ \|$", DOC, flags=re.M))
    assert documented == set(ArchiveConfig.model_fields)


def test_the_column_table_lists_the_meta_columns_in_order() -> None:
    documented = re.findall(r"^\| `(_[a-z]+)` \|", DOC, flags=re.M)
    assert documented == list(META_COLUMNS)
