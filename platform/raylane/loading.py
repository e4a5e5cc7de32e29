"""Import a Python file by path: the use cases' hooks (``prepare.py``, ``train.py``) and the
Feast repo's definition files, which are not on the import path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["import_file"]


def import_file(path: Path | str, name: str) -> ModuleType:
    """Execute the file at `path` as a module named `name` and return it.

    The module is registered in ``sys.modules`` under `name` before it runs: dataclasses
    (and pickling) look their defining module up there. Give each distinct file its own
    name; importing the same name again replaces the earlier module.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
