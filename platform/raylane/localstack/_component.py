"""The interface every embedded-stack component implements.

`_stack` drives components only through this class: where the environment points (an
external service we must not start), which addresses may already serve it (reused), where
we would start our own, the command line, and a health probe. Adding a component (a schema
registry, say) is one subclass in its own module plus an entry in ``_stack.COMPONENTS``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from raylane.errors import StackError

from ._process import Health

__all__ = ["Component", "Health", "env_port"]


def env_port(var: str, default: int) -> int:
    """A port from environment variable ``var``, validated, else ``default``."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{var}={raw!r} is not a port number; set it to e.g. {default}") from None
    if not 0 < port < 65536:
        raise StackError(f"{var}={port} is out of range; set it to a port in 1..65535")
    return port


class Component(ABC):
    """One service of the embedded stack (Kafka broker, Redis, MLflow)."""

    #: Short name used in stack.json, logs and the CLI.
    name: ClassVar[str]
    #: Key in stack.json and field of `raylane.settings.Settings`.
    settings_key: ClassVar[str]
    #: Human description used in messages ("a Kafka broker").
    what: ClassVar[str]
    #: Environment variable overriding the local port, and its default.
    port_env: ClassVar[str]
    default_port: ClassVar[int]
    #: Seconds to wait for a started process to become healthy, and the poll interval.
    start_timeout_s: ClassVar[float] = 30.0
    #: Extra stack.json settings that hold for the embedded service (ours, or one reused at
    #: our local address), never for one the environment names.
    embedded_settings: ClassVar[dict[str, str]] = {}
    poll_interval_s: ClassVar[float] = 0.05

    @property
    def port(self) -> int:
        return env_port(self.port_env, self.default_port)

    def external(self) -> str | None:
        """Address named by the environment that we must only health-check, never start."""
        return None

    def reuse_candidates(self) -> list[str]:
        """Addresses that may already serve this component, tried before starting ours."""
        return [self.local_address()]

    @abstractmethod
    def local_address(self) -> str:
        """The address our own process serves on (127.0.0.1 and ``self.port``)."""

    @abstractmethod
    def command(self, home: Path) -> list[str]:
        """Command line starting our own process (raises StackError if the binary is missing)."""

    def env(self, home: Path) -> dict[str, str]:
        """Extra environment for our own process."""
        return {}

    @abstractmethod
    def probe(self, address: str, timeout_s: float = 2.0) -> Health:
        """One health check of ``address``; never raises."""

    def unreachable_hint(self, address: str) -> str:
        """What to do when the external service named by the environment is down."""
        return f"start it or unset the variable to use the embedded {self.name}"
