"""Feast integration: load the feature repo with raylane's settings, write sources, materialize.

A use case's ``prepare`` calls :func:`write_sources` (with the offline sources it declares,
by the names of the repo's ``FileSource`` objects) → :func:`apply` → :func:`materialize`;
serving builds an :class:`~raylane.features.online.OnlineFeatureReader` from
:func:`feature_store`. The repo (``features/`` at the repo root) holds
``feature_store.yaml`` and the entity / view definitions; raylane overrides the
Redis connection (from ``REDIS_URL``, see :mod:`raylane.settings`) and the registry
location (``$RAYLANE_HOME/feast/<project>.db``) so one repo runs locally and on a
cluster. Feast errors are wrapped here, once, into :mod:`raylane.errors`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from feast import Entity, FeatureStore, FeatureView, RepoConfig
from feast.errors import FeastError
from pydantic import ValidationError
from redis.connection import parse_url
from redis.exceptions import RedisError

from raylane.errors import ConfigError, DependencyError
from raylane.loading import import_file
from raylane.redaction import mask_url, mask_urls
from raylane.settings import Settings, raylane_home

__all__ = [
    "DEFAULT_REPO",
    "FeastRepo",
    "RepoLike",
    "SourceSchema",
    "apply",
    "feast_connection_string",
    "feature_store",
    "materialize",
    "source_schemas",
    "teardown",
    "write_sources",
]

#: The Feast repo, relative to the raylane repo root.
DEFAULT_REPO = "features"

#: Feast value types -> the pandas dtype a parquet column of that type is written with.
_DTYPES = {
    "Float64": "float64",
    "Float32": "float32",
    "Int64": "int64",
    "Int32": "int32",
    "String": "str",
    "Bool": "bool",
}


@dataclass(frozen=True)
class SourceSchema:
    """One parquet ``FileSource`` of the repo: where it lives and the columns its views read."""

    name: str
    path: str
    timestamp_field: str
    created_column: str | None
    #: column -> pandas dtype, from the schemas of the views reading this source
    columns: dict[str, str]


_FIX = "run `raylane bootstrap`"


def feast_connection_string(redis_url: str) -> str:
    """Translate a ``redis://`` / ``rediss://`` URL into Feast's ``host:port,db=N,...`` form."""
    if not redis_url.startswith(("redis://", "rediss://")):
        raise ConfigError(
            f"REDIS_URL {mask_url(redis_url)!r} is not usable by Feast's Redis online store; "
            "use redis://host:port/db or rediss://host:port/db",
            stage="features",
        )
    kw = parse_url(redis_url)
    parts = [f"{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}", f"db={kw.get('db', 0)}"]
    for name in ("username", "password"):
        if kw.get(name):
            if "," in str(kw[name]):
                raise ConfigError(
                    f"the Redis {name} in REDIS_URL contains ',', which Feast's "
                    "connection string cannot carry; choose one without ','",
                    stage="features",
                )
            parts.append(f"{name}={kw[name]}")
    if redis_url.startswith("rediss://"):
        parts.append("ssl=true")
    return ",".join(parts)


@dataclass(frozen=True)
class FeastRepo:
    """A Feast feature repo as raylane runs it: path, project, Redis and registry location."""

    path: Path
    project: str
    redis_url: str
    registry_path: Path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] = DEFAULT_REPO,
        *,
        project: str | None = None,
        redis_url: str | None = None,
        registry_path: str | os.PathLike[str] | None = None,
    ) -> FeastRepo:
        """Read ``feature_store.yaml`` under `path`; `project` etc. override it (tests use them)."""
        root = Path(path).resolve()
        yaml_file = root / "feature_store.yaml"
        if not yaml_file.is_file():
            raise ConfigError(
                f"{yaml_file} does not exist; features.feast_repo must name the "
                "Feast repo directory (default `features`)",
                stage="features",
            )
        proj = project or str(_read_yaml(yaml_file).get("project") or "")
        if not proj:
            raise ConfigError(
                f"{yaml_file} names no project; add `project: raylane`", stage="features"
            )
        return cls(
            path=root,
            project=proj,
            redis_url=redis_url or Settings.load().redis_url,
            registry_path=Path(registry_path)
            if registry_path
            else raylane_home() / "feast" / f"{proj}.db",
        )

    def repo_config(self) -> RepoConfig:
        """Feast's RepoConfig: the YAML with raylane's project, Redis and registry applied."""
        raw = _read_yaml(self.path / "feature_store.yaml")
        raw["project"] = self.project
        registry = raw.get("registry")
        raw["registry"] = {
            **(registry if isinstance(registry, dict) else {}),
            "path": str(self.registry_path),
        }
        raw["online_store"] = {
            **raw.get("online_store", {}),
            "type": "redis",
            "connection_string": feast_connection_string(self.redis_url),
        }
        try:
            cfg = RepoConfig(**raw)
        except (ValidationError, FeastError) as e:
            raise ConfigError(
                f"{self.path}/feature_store.yaml is not a valid Feast config: {e}", stage="features"
            ) from e
        cfg.repo_path = self.path
        return cfg

    def store(self) -> FeatureStore:
        """A FeatureStore on this repo (the registry directory is created if missing)."""
        self.registry_path.parent.mkdir(parents=True, exist_ok=True)
        return FeatureStore(repo_path=str(self.path), config=self.repo_config())


RepoLike = FeastRepo | str | os.PathLike[str]


def _read_yaml(path: Path) -> dict[str, Any]:
    """feature_store.yaml as Feast reads it: environment variables expanded first."""
    try:
        raw = yaml.safe_load(os.path.expandvars(path.read_text()))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}", stage="features") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of Feast settings", stage="features")
    return raw


def _repo(repo: RepoLike) -> FeastRepo:
    return repo if isinstance(repo, FeastRepo) else FeastRepo.load(repo)


@contextmanager
def _wrap(repo: FeastRepo, action: str) -> Iterator[None]:
    """Turn Redis / Feast / file errors into raylane errors that name the fix."""
    try:
        yield
    except (ConfigError, DependencyError):
        raise
    except (RedisError, ConnectionError, TimeoutError) as e:
        raise DependencyError(
            f"{action}: Redis at {mask_url(repo.redis_url)} failed ({mask_urls(str(e))}); start it "
            "(`raylane dev up`) or set REDIS_URL",
            stage="features",
        ) from e
    except FileNotFoundError as e:
        raise ConfigError(
            f"{action}: {e.filename or e} is missing in {repo.path}; {_FIX} "
            "(it writes the parquet sources)",
            stage="features",
        ) from e
    except FeastError as e:
        raise ConfigError(
            f"{action} failed for project {repo.project}: {e}; {_FIX}", stage="features"
        ) from e


def feature_store(repo: RepoLike = DEFAULT_REPO) -> FeatureStore:
    """The Feast FeatureStore of `repo`, configured from the environment."""
    r = _repo(repo)
    with _wrap(r, "opening the Feast repo"):
        return r.store()


def source_schemas(repo: RepoLike = DEFAULT_REPO) -> dict[str, SourceSchema]:
    """The repo's local parquet ``FileSource`` objects read by its feature views, by name."""
    from feast import FileSource

    r = _repo(repo)
    out: dict[str, SourceSchema] = {}
    for obj in _load_definitions(r.path):
        src = getattr(obj, "batch_source", None)
        if not isinstance(obj, FeatureView) or not isinstance(src, FileSource):
            continue
        if "://" in src.path:
            continue  # remote sources are written by whoever owns them
        have = out.get(src.name)
        cols = dict(have.columns) if have else {}
        for f in [*obj.entity_columns, *obj.features]:
            cols[f.name] = _DTYPES.get(str(f.dtype), "object")
        out[src.name] = SourceSchema(
            src.name, src.path, src.timestamp_field, src.created_timestamp_column or None, cols
        )
    return out


def write_sources(
    sources: Mapping[str, pd.DataFrame], repo: RepoLike = DEFAULT_REPO
) -> dict[str, Path]:
    """Write offline sources of the repo: source name (its ``FileSource``'s name) -> rows.

    The file goes where the ``FileSource`` says (relative to the repo). Columns: those the
    views reading it declare (join keys and features, cast to the views' types), its
    timestamp field and created column (naive timestamps are taken as UTC, as Feast does);
    extra columns are dropped. Each file is replaced atomically. Returns name -> path.
    """
    r = _repo(repo)
    known = source_schemas(r)
    out: dict[str, Path] = {}
    for name, df in sources.items():
        if name not in known:
            raise ConfigError(
                f"{r.path} has no local parquet FileSource named {name!r} read by a feature "
                f"view; its sources: {sorted(known)}",
                stage="features",
            )
        schema = known[name]
        table = _conform(schema, df)
        path = r.path / schema.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".parquet.tmp{os.getpid()}")
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        out[name] = path
    return out


def _conform(schema: SourceSchema, df: pd.DataFrame) -> pd.DataFrame:
    times = [schema.timestamp_field] + ([schema.created_column] if schema.created_column else [])
    cols = [*schema.columns, *times]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(
            f"source {schema.name}: the DataFrame lacks columns {missing}; it needs {cols}",
            stage="features",
        )
    out = pd.DataFrame(index=df.index)
    for col, dtype in schema.columns.items():
        try:
            out[col] = df[col].astype(dtype)
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"{schema.name}.{col} cannot be stored as {dtype} ({e}); fill or drop "
                "the missing/non-numeric values",
                stage="features",
            ) from e
    for col in times:
        ts = pd.to_datetime(df[col])
        out[col] = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    return out.reset_index(drop=True)


def _load_definitions(root: Path) -> list[Entity | FeatureView]:
    """Entities and feature views defined in the repo's top-level ``*.py`` files.

    Each file is imported under a module name unique to its path, so two copies of the
    repo (tests) never share a cached module.
    """
    objs: list[Entity | FeatureView] = []
    for py in sorted(root.glob("*.py")):
        if py.name.startswith(("_", ".")):
            continue
        tag = hashlib.sha1(str(py).encode()).hexdigest()[:12]
        module = import_file(py, f"_raylane_feast_{tag}_{py.stem}")
        for value in vars(module).values():
            if isinstance(value, Entity | FeatureView) and not any(value is o for o in objs):
                objs.append(value)
    if not objs:
        raise ConfigError(f"{root} defines no Feast entities or feature views", stage="features")
    return objs


def apply(repo: RepoLike = DEFAULT_REPO) -> FeatureStore:
    """Register the repo's entities and feature views in the registry (``feast apply``)."""
    r = _repo(repo)
    with _wrap(r, "feast apply"):
        store = r.store()
        objects: list[Any] = _load_definitions(r.path)
        store.apply(objects)
        return store


def materialize(repo: RepoLike = DEFAULT_REPO, end: datetime | None = None) -> FeatureStore:
    """Load the latest row per entity up to `end` (default now) into Redis, incrementally.

    The first run covers each view's TTL; later runs start where the previous one ended.
    """
    r = _repo(repo)
    with _wrap(r, "feast materialize"):
        store = r.store()
        views = store.list_feature_views()
        if not views:
            raise ConfigError(f"project {r.project} has no feature views; {_FIX}", stage="features")
        for fv in views:
            path = getattr(fv.batch_source, "path", None)
            if path and "://" not in path and not (r.path / path).exists():
                raise ConfigError(
                    f"source {path} of feature view {fv.name} is missing in "
                    f"{r.path}; {_FIX} (it writes the parquet sources)",
                    stage="features",
                )
        store.materialize_incremental(end_date=end or datetime.now(UTC))
        return store


def teardown(repo: RepoLike = DEFAULT_REPO) -> None:
    """Delete the project's online rows from Redis and its registry (``feast teardown``)."""
    r = _repo(repo)
    with _wrap(r, "feast teardown"):
        if r.registry_path.exists():
            r.store().teardown()
