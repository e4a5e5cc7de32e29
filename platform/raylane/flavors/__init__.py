"""Model flavors: one loader per MLflow flavor, chosen by name from :data:`FLAVORS`.

``pick_flavor(["sklearn", "python_function"])`` returns the loader to use: the model
config's ``flavor:`` when set (it must be one the model was logged with), else the first
of the model's own flavors (its ``MLmodel`` file) in :data:`PREFERENCE` order. A new flavor
is one new file in this folder and one line in the table.
"""

from __future__ import annotations

from collections.abc import Collection

from raylane.errors import ModelError
from raylane.flavors.base import (
    Flavor,
    MissingColumnsError,
    Scorer,
    read_mlmodel,
    require_columns,
)
from raylane.flavors.lightgbm import LightGBMFlavor
from raylane.flavors.pyfunc import PyfuncFlavor
from raylane.flavors.sklearn import SklearnFlavor
from raylane.flavors.xgboost import XGBoostFlavor

__all__ = [
    "FLAVORS",
    "PREFERENCE",
    "Flavor",
    "MissingColumnsError",
    "Scorer",
    "model_flavors",
    "pick_flavor",
    "read_mlmodel",
    "require_columns",
]

#: The loaders, by MLflow flavor name (the values of a model config's ``flavor:``).
FLAVORS: dict[str, Flavor] = {
    "xgboost": XGBoostFlavor(),
    "sklearn": SklearnFlavor(),
    "lightgbm": LightGBMFlavor(),
    "python_function": PyfuncFlavor(),
}

#: Which of a model's own flavors is loaded when the config names none: native boosters
#: first (one call per batch on a matrix), the generic pyfunc wrapper last.
PREFERENCE: tuple[str, ...] = ("xgboost", "lightgbm", "sklearn", "python_function")


def model_flavors(path: str) -> list[str]:
    """The flavors a downloaded MLflow model directory was logged with (its MLmodel file)."""
    return list(read_mlmodel(path).flavors)


def pick_flavor(
    available: Collection[str], configured: str | None = None, *, label: str = "the model"
) -> Flavor:
    """The loader for a model logged with flavors `available`.

    `configured` (the model config's ``flavor:``) wins when set; otherwise the first of
    :data:`PREFERENCE` the model has. Raises ModelError naming the model's flavors and the
    fix when none fits.
    """
    have = ", ".join(available) or "none"
    if configured is not None:
        if configured not in FLAVORS:
            raise ModelError(
                f"flavor {configured!r} is not one raylane loads ({', '.join(FLAVORS)}); "
                "fix `flavor:` in the model config",
                stage="config",
            )
        if configured not in available:
            usable = [n for n in PREFERENCE if n in available]
            fix = (
                f"set `flavor: {usable[0]}` in the model config, or register a {configured} model"
                if usable
                else f"register a {configured} model (raylane loads {', '.join(PREFERENCE)})"
            )
            raise ModelError(
                f"{label} has flavors [{have}]; this deployment loads {configured}; {fix}",
                stage="registry",
            )
        return FLAVORS[configured]
    for name in PREFERENCE:
        if name in available:
            return FLAVORS[name]
    raise ModelError(
        f"{label} has flavors [{have}]; raylane loads {', '.join(PREFERENCE)}: log the model "
        "with one of them (any model can be logged as python_function), or add a loader in "
        "raylane/flavors/",
        stage="registry",
    )
