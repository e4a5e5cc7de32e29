"""Command groups of the ``raylane`` CLI, one module per group, found at start-up.

Each module here defines ``register(app: typer.Typer) -> None``, which adds its commands
(``@app.command``) or its sub-app (``app.add_typer``) to the root app. Modules keep heavy
imports (Ray, MLflow, Evidently) inside the command functions so ``raylane --help`` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

__all__ = ["register_all"]


def register_all(app: typer.Typer) -> None:
    """Import every module of this package, in name order, and call its ``register(app)``."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is None:
            raise RuntimeError(f"{module.__name__} defines no register(app); add one")
        register(app)
