"""The MLflow model registry, plain MLflow (no Ray): resolve, load, register, alias.

``load_model("models:/fraud@champion")`` pins the alias to a version and returns a
:class:`LoadedModel` that scores columnar batches with one XGBoost call. MLflow errors
are wrapped once into :class:`~raylane.errors.ModelError` with the fix in the message.
``promote`` / ``rollback`` / ``history`` move and audit the champion alias behind the
gates of :mod:`raylane.registry.gates`.
"""

from raylane.registry._mlflow import parse_uri
from raylane.registry.gates import (
    DriftCheck,
    DriftStatus,
    GateResult,
    RedisDriftCheck,
    evaluate_gates,
)
from raylane.registry.loaded import REFERENCE_ARTIFACT, LoadedModel, load_model, load_reference
from raylane.registry.promotion import GatesFailed, history, promote, rollback
from raylane.registry.refs import ModelRef, register, resolve, set_alias

__all__ = [
    "REFERENCE_ARTIFACT",
    "DriftCheck",
    "DriftStatus",
    "GateResult",
    "GatesFailed",
    "LoadedModel",
    "ModelRef",
    "RedisDriftCheck",
    "evaluate_gates",
    "history",
    "load_model",
    "load_reference",
    "parse_uri",
    "promote",
    "register",
    "resolve",
    "rollback",
    "set_alias",
]
