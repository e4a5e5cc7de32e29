"""Connection settings from the environment, with the embedded stack as the fallback.

Order of precedence for each setting: the environment variable, then what
`raylane dev up` wrote to ``$RAYLANE_HOME/stack.json``, then a local default.
So the same serve config runs against the embedded stack and against a real
Kafka / Redis / MLflow by changing only the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings", "raylane_home"]

ENV_KAFKA = "RAYLANE_KAFKA_BOOTSTRAP"
ENV_REDIS = "REDIS_URL"
ENV_MLFLOW = "MLFLOW_TRACKING_URI"
ENV_HOME = "RAYLANE_HOME"


def raylane_home() -> Path:
    """Directory holding the embedded stack's state, pids and logs (default ./.raylane)."""
    return Path(os.environ.get(ENV_HOME, ".raylane")).resolve()


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    redis_url: str
    mlflow_tracking_uri: str
    home: Path

    @classmethod
    def load(cls) -> Settings:
        home = raylane_home()
        stack: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            stack = json.loads((home / "stack.json").read_text())
        return cls(
            kafka_bootstrap=os.environ.get(ENV_KAFKA)
            or stack.get("kafka_bootstrap", "127.0.0.1:9092"),
            redis_url=os.environ.get(ENV_REDIS)
            or stack.get("redis_url", "redis://127.0.0.1:6379/0"),
            mlflow_tracking_uri=os.environ.get(ENV_MLFLOW)
            or stack.get("mlflow_tracking_uri", "http://127.0.0.1:5000"),
            home=home,
        )

    def as_env(self) -> dict[str, str]:
        """The same settings as environment variables, for subprocesses and Ray workers."""
        return {
            ENV_KAFKA: self.kafka_bootstrap,
            ENV_REDIS: self.redis_url,
            ENV_MLFLOW: self.mlflow_tracking_uri,
            ENV_HOME: str(self.home),
        }
