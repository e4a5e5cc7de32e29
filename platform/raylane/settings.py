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

from raylane.redaction import has_credentials

__all__ = ["ENV_IDEMPOTENCE", "Settings", "raylane_home"]

ENV_KAFKA = "RAYLANE_KAFKA_BOOTSTRAP"
ENV_REDIS = "REDIS_URL"
ENV_MLFLOW = "MLFLOW_TRACKING_URI"
ENV_HOME = "RAYLANE_HOME"
ENV_IDEMPOTENCE = "RAYLANE_KAFKA_IDEMPOTENCE"

#: stack.json key: ``"false"`` when the stack's broker grants no producer ids (Tansu)
STACK_IDEMPOTENCE = "kafka_idempotence"


def raylane_home() -> Path:
    """Directory holding the embedded stack's state, pids and logs (default ./.raylane)."""
    return Path(os.environ.get(ENV_HOME, ".raylane")).resolve()


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    redis_url: str
    mlflow_tracking_uri: str
    home: Path
    #: what the embedded stack recorded about its broker's idempotent producer (None: nothing)
    kafka_idempotence: bool | None = None

    @classmethod
    def load(cls) -> Settings:
        home = raylane_home()
        stack: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            stack = json.loads((home / "stack.json").read_text())
        kafka = os.environ.get(ENV_KAFKA) or stack.get("kafka_bootstrap", "127.0.0.1:9092")
        recorded = stack.get(STACK_IDEMPOTENCE)
        idempotence = None
        # only about the stack's own broker, not one the environment points elsewhere
        if isinstance(recorded, str) and kafka == stack.get("kafka_bootstrap"):
            idempotence = recorded.strip().lower() == "true"
        return cls(
            kafka_bootstrap=kafka,
            redis_url=os.environ.get(ENV_REDIS)
            or stack.get("redis_url", "redis://127.0.0.1:6379/0"),
            mlflow_tracking_uri=os.environ.get(ENV_MLFLOW)
            or stack.get("mlflow_tracking_uri", "http://127.0.0.1:5000"),
            home=home,
            kafka_idempotence=idempotence,
        )

    def as_env(self) -> dict[str, str]:
        """The same settings as environment variables, for subprocesses on this machine."""
        env = {
            ENV_KAFKA: self.kafka_bootstrap,
            ENV_REDIS: self.redis_url,
            ENV_MLFLOW: self.mlflow_tracking_uri,
            ENV_HOME: str(self.home),
        }
        if self.kafka_idempotence is not None:
            env[ENV_IDEMPOTENCE] = "true" if self.kafka_idempotence else "false"
        return env

    def replica_env(self) -> dict[str, str]:
        """:meth:`as_env` without secrets, for Serve init args and Ray's runtime_env.

        A URL that carries a password (``redis://:pw@host``) is left out: the replica reads
        it from its own environment (a Kubernetes Secret, the shell that started Ray), where
        Ray's init args, its GCS and its dashboard never see it.
        """
        return {k: v for k, v in self.as_env().items() if not has_credentials(v)}
