"""On-disk state of the embedded stack under ``raylane_home()``.

``stack.json`` holds the connection settings that `raylane.settings.Settings.load` reads
(``kafka_bootstrap``, ``redis_url``, ``mlflow_tracking_uri``) plus one record per component:
its address, whether we own the process, its pid and start time, its log. ``stack.lock``
serialises ``up``/``down`` across processes (engineers share a checkout), and
``sessions/<pid>-<id>`` leases record the test sessions using a stack, so one session never
stops a stack another session still uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._process import is_running, process_create_time

__all__ = [
    "ComponentRecord",
    "StackState",
    "add_lease",
    "live_leases",
    "log_path",
    "read_state",
    "remove_lease",
    "remove_state",
    "stack_lock",
    "state_path",
    "write_state",
]

STATE_FILE = "stack.json"


@dataclass
class ComponentRecord:
    """What we know about one component of a running stack."""

    address: str
    owned: bool
    pid: int | None = None
    create_time: float | None = None
    log: str | None = None
    #: False for components a test session started: the last session using them stops them.
    persistent: bool = True
    started_at: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ComponentRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class StackState:
    """Contents of ``stack.json``: settings keys plus per-component records."""

    settings: dict[str, str] = field(default_factory=dict)
    components: dict[str, ComponentRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.settings,
            "owned": sorted(n for n, c in self.components.items() if c.owned),
            "pids": {n: c.pid for n, c in self.components.items() if c.owned},
            "components": {n: asdict(c) for n, c in self.components.items()},
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackState:
        comps = data.get("components") or {}
        settings = {k: v for k, v in data.items() if isinstance(v, str) and k != "updated_at"}
        return cls(settings, {n: ComponentRecord.from_json(c) for n, c in comps.items()})


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def log_path(home: Path, component: str) -> Path:
    return home / "logs" / f"{component}.log"


def read_state(home: Path) -> StackState:
    """The recorded state; empty when there is none (or it is unreadable)."""
    try:
        return StackState.from_json(json.loads(state_path(home).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError, AttributeError):
        return StackState()


def write_state(home: Path, state: StackState) -> None:
    """Write ``stack.json`` atomically (readers never see half a file)."""
    home.mkdir(parents=True, exist_ok=True)
    tmp = state_path(home).with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, state_path(home))


def remove_state(home: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(home).unlink()


@contextlib.contextmanager
def stack_lock(home: Path) -> Iterator[None]:
    """Exclusive inter-process lock on the stack of ``home`` (released if we die)."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "stack.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _lease_dir(home: Path) -> Path:
    return home / "sessions"


def add_lease(home: Path, pid: int) -> str:
    """Record that process ``pid`` (a test session) uses the stack; returns the lease id.

    One lease per session, not per process, so nested sessions in one process work."""
    d = _lease_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    lease = f"{pid}-{uuid.uuid4().hex[:8]}"
    (d / lease).write_text(json.dumps({"pid": pid, "create_time": process_create_time(pid)}))
    return lease


def remove_lease(home: Path, lease: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (_lease_dir(home) / lease).unlink()


def live_leases(home: Path) -> list[str]:
    """Leases of sessions still running; leases of dead sessions are removed."""
    d = _lease_dir(home)
    live = []
    for lease in sorted(d.glob("*")) if d.is_dir() else []:
        try:
            data = json.loads(lease.read_text())
            pid, created = int(data["pid"]), data.get("create_time")
        except (ValueError, KeyError, TypeError, OSError, json.JSONDecodeError):
            lease.unlink(missing_ok=True)
            continue
        if is_running(pid, created):
            live.append(lease.name)
        else:
            lease.unlink(missing_ok=True)
    return live
