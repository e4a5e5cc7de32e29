"""Open the schema registry a pipeline config names (file or Confluent REST)."""

from __future__ import annotations

import os

from raylane.config import ConfluentRegistryConfig, FileRegistryConfig
from raylane.contracts._registry import FileSchemaRegistry, SchemaRegistry
from raylane.errors import ConfigError

__all__ = ["open_registry"]


def open_registry(
    cfg: FileRegistryConfig | ConfluentRegistryConfig | None = None,
) -> SchemaRegistry:
    """The registry backend for `cfg` (default: the committed file registry)."""
    if cfg is None or isinstance(cfg, FileRegistryConfig):
        return FileSchemaRegistry(cfg.path or None if cfg else None)
    from raylane.contracts._confluent import ConfluentSchemaRegistry

    conf: dict[str, object] = {"timeout": cfg.timeout_s}
    if cfg.basic_auth_env:
        secret = os.environ.get(cfg.basic_auth_env)
        if not secret:
            raise ConfigError(
                f"schema_registry.basic_auth_env names {cfg.basic_auth_env}, which is not set; "
                "export it as `user:password`",
                stage="config",
            )
        conf["basic.auth.user.info"] = secret
    return ConfluentSchemaRegistry(cfg.url, **conf)
