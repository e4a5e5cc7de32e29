"""`raylane init NAME`: write a working use case into the user's project.

What it writes (relative to the project root), from the templates in
``raylane/templates/usecase/`` (package data):

* ``serve_configs/NAME.yaml``: the pipeline (a custom entity key, a custom event-time
  field, a categorical feature, an online view, a window, a derived column, a primary and
  a shadow model of two flavors, output fields from sources);
* ``contracts/schemas/NAME.events.avsc`` and ``NAME.scored.avsc``, registered in the
  project's file registry ``contracts/registry`` (created from the built-in one);
* ``features/NAME.py`` (entity, view, parquet source) and, in a project without one,
  ``features/feature_store.yaml``;
* ``models/NAME/``: ``world.py`` (synthetic data), ``prepare.py`` (the bootstrap hook),
  ``train.py`` and ``produce.py`` (the producer snippet).

``raylane bootstrap -f serve_configs/NAME.yaml`` and ``serve run serve_configs/NAME.yaml``
then work unchanged, from the project root. Nothing is overwritten unless asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

from raylane.errors import ConfigError

__all__ = ["FLAVORS", "Scaffold", "init_usecase"]

Flavor = Literal["xgboost", "sklearn"]
#: primary flavor -> the shadow's (the other one: a scaffold always compares two flavors)
FLAVORS: dict[str, str] = {"sklearn": "xgboost", "xgboost": "sklearn"}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

_SPEC = {
    "sklearn": (
        'SklearnSpec("{label}", _hist_gradient_boosting, description="scikit-learn '
        'HistGradientBoosting, all columns")'
    ),
    "xgboost": (
        'ModelSpec("{label}", {{**BASE_PARAMS, "max_depth": 4, "eta": 0.2}}, 60, '
        'description="XGBoost, depth 4, 60 rounds")'
    ),
}


@dataclass(frozen=True)
class Scaffold:
    """What :func:`init_usecase` wrote."""

    name: str
    root: Path
    written: list[Path]
    registered: dict[str, int]
    config: Path


def _template(name: str) -> str:
    return (files("raylane") / "templates" / "usecase" / name).read_text(encoding="utf-8")


def _render(text: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        text = text.replace(key, value)
    return text


def init_usecase(
    name: str,
    *,
    root: str | Path = ".",
    flavor: Flavor = "sklearn",
    contracts: str | Path = "contracts",
    force: bool = False,
) -> Scaffold:
    """Write use case `name` into the project at `root`; returns what was written.

    `flavor` is the primary model's (the shadow gets the other one); `contracts` the
    project's contracts folder (relative to `root`). Raises ConfigError for a bad name or
    when a file exists already (unless `force`).
    """
    from raylane.contracts import ProjectContracts, register_contracts

    if not _NAME.match(name):
        raise ConfigError(
            f"use case name {name!r} must be lower case letters, digits and _, starting with "
            "a letter (it names topics, the registered model and Python identifiers)"
        )
    if flavor not in FLAVORS:
        raise ConfigError(f"--flavor {flavor!r}: choose one of {', '.join(FLAVORS)}")
    base = Path(root).resolve()
    cdir = Path(contracts)
    cabs = cdir if cdir.is_absolute() else base / cdir
    shadow = FLAVORS[flavor]
    specs = (
        "#: champion (the primary) and challenger (the shadow), one spec per model flavor\n"
        "SPECS = (\n"
        f"    {_SPEC[flavor].format(label='champion')},\n"
        f"    {_SPEC[shadow].format(label='challenger')},\n"
        ")"
    )
    subs = {
        "__SPECS__": specs,
        "__PRIMARY_FLAVOR__": flavor,
        "__SHADOW_FLAVOR__": shadow,
        "__CAMEL__": "".join(p.capitalize() for p in name.split("_")),
        "__NAME__": name,
    }
    registry = str(cdir / "registry") if not cdir.is_absolute() else str(cabs / "registry")
    plan: dict[Path, str] = {
        base / "serve_configs" / f"{name}.yaml": _template("serve_config.yaml").replace(
            "path: contracts/registry", f"path: {registry}"
        ),
        cabs / "schemas" / f"{name}.events.avsc": _template("events.avsc"),
        cabs / "schemas" / f"{name}.scored.avsc": _template("scored.avsc"),
        base / "features" / f"{name}.py": _template("feast_view.py.tmpl"),
        base / "models" / name / "world.py": _template("world.py.tmpl"),
        base / "models" / name / "prepare.py": _template("prepare.py.tmpl"),
        base / "models" / name / "train.py": _template("train.py.tmpl"),
        base / "models" / name / "produce.py": _template("produce.py.tmpl"),
    }
    store_yaml = base / "features" / "feature_store.yaml"
    if not store_yaml.exists():
        plan[store_yaml] = _template("feature_store.yaml")
    exists = [p for p in plan if p.exists()]
    if exists and not force:
        shown = ", ".join(str(p.relative_to(base)) for p in exists)
        raise ConfigError(
            f"use case {name} exists already in {base} ({shown}); pick another name, or pass "
            "--force to overwrite these files"
        )
    for path, text in plan.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(text, subs), encoding="utf-8")
    project = ProjectContracts(cabs)
    from raylane.contracts import FileSchemaRegistry

    reg = FileSchemaRegistry(project.seed_registry())
    ids = register_contracts(reg, [f"{name}.events", f"{name}.scored"], project.schemas)
    return Scaffold(name, base, list(plan), ids, base / "serve_configs" / f"{name}.yaml")
