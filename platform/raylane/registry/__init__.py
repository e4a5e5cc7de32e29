"""The MLflow model registry, plain MLflow (no Ray): resolve, load, register, alias.

``load_model("models:/fraud@champion")`` pins the alias to a version and returns a
:class:`LoadedModel` that scores columnar batches with one call of the model's library
(XGBoost, LightGBM, scikit-learn or MLflow pyfunc: :mod:`raylane.flavors`). MLflow errors
are wrapped once into :class:`~raylane.errors.ModelError` with the fix in the message; a
model needing a column the pipeline does not produce is refused
(:class:`~raylane.flavors.MissingColumnsError`).
Promotion, rollback, gates and audit build on this package in :mod:`raylane.lifecycle`.
"""

from raylane.flavors import MissingColumnsError
from raylane.registry._mlflow import parse_uri
from raylane.registry.loaded import REFERENCE_ARTIFACT, LoadedModel, load_model, load_reference
from raylane.registry.refs import (
    ModelRef,
    model_tags,
    register,
    resolve,
    set_alias,
    version_tags,
)

__all__ = [
    "REFERENCE_ARTIFACT",
    "LoadedModel",
    "MissingColumnsError",
    "ModelRef",
    "load_model",
    "load_reference",
    "model_tags",
    "parse_uri",
    "register",
    "resolve",
    "set_alias",
    "version_tags",
]
