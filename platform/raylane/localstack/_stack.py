"""Bring the embedded stack up, take it down, report its status.

For each component, in order: an address named by the environment is only health-checked;
a process we started earlier and that is still healthy is reused; an address already
serving the component (someone else's broker, the system Redis) is reused as external;
otherwise we start our own process, after checking its port is free. ``stack.json`` records
the outcome for `raylane.settings.Settings.load` and for ``down``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from raylane.errors import StackError
from raylane.settings import Settings, raylane_home

from ._broker import KafkaBroker
from ._component import Component
from ._mlflow import MLflowServer
from ._process import (
    busy_port_message,
    is_running,
    port_in_use,
    port_owner,
    spawn,
    stop_group,
    wait_healthy,
)
from ._redis import Redis
from ._state import (
    ComponentRecord,
    StackState,
    log_path,
    read_state,
    remove_state,
    stack_lock,
    write_state,
)

__all__ = [
    "COMPONENTS",
    "ComponentStatus",
    "StackEvent",
    "down_locked",
    "status",
    "stop_recorded",
    "up_locked",
]

COMPONENTS: dict[str, Component] = {c.name: c for c in (KafkaBroker(), Redis(), MLflowServer())}

Phase = Literal["checking", "starting", "ready", "note", "failed"]


@dataclass(frozen=True)
class StackEvent:
    """Progress of ``up`` for one component, for spinners and logs."""

    component: str
    phase: Phase
    detail: str


OnEvent = Callable[[StackEvent], None]


@dataclass(frozen=True)
class ComponentStatus:
    """One row of ``raylane dev status``."""

    component: str
    address: str
    pid: int | None
    healthy: bool
    owned: bool
    detail: str = ""
    log: Path | None = None


def _select(components: Iterable[str] | None) -> list[Component]:
    if components is None:
        return list(COMPONENTS.values())
    names = [components] if isinstance(components, str) else list(components)
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise StackError(f"unknown component(s) {unknown}; choose from {sorted(COMPONENTS)}")
    return [COMPONENTS[n] for n in COMPONENTS if n in names]


def _port_of(address: str) -> int | None:
    try:
        port = urlsplit(address if "://" in address else f"tcp://{address}").port
    except ValueError:
        return None
    return port


def _record_external(comp: Component, state: StackState, address: str, persistent: bool) -> None:
    """Record ``address`` as served by someone else. A process of ours recorded before is
    stopped, never orphaned; a record ``raylane dev up`` made stays persistent."""
    prev = state.components.get(comp.name)
    if prev is not None and prev.owned and prev.pid:
        stop_group(prev.pid, prev.create_time)
    keep = prev is not None and not prev.owned and prev.address == address and prev.persistent
    state.components[comp.name] = ComponentRecord(
        address, owned=False, persistent=persistent or keep
    )


def _ensure(
    comp: Component, state: StackState, home: Path, persistent: bool, emit: OnEvent
) -> bool:
    """Make ``comp`` healthy and record it in ``state``; True if we started a process."""
    emit(StackEvent(comp.name, "checking", "health check"))
    external = comp.external()
    for key in comp.embedded_settings:
        state.settings.pop(key, None)
    if external is None:
        state.settings.update(comp.embedded_settings)
    else:
        health = comp.probe(external)
        if not health.ok:
            raise StackError(
                f"{comp.what} at {external} (from the environment) is not reachable: "
                f"{health.detail}; {comp.unreachable_hint(external)}"
            )
        _record_external(comp, state, external, persistent)
        emit(StackEvent(comp.name, "ready", f"external {external} ({health.detail})"))
        return False

    prev = state.components.get(comp.name)
    if prev is not None and prev.owned and not is_running(prev.pid, prev.create_time):
        emit(StackEvent(comp.name, "note", f"our pid {prev.pid} has exited; see {prev.log}"))
    elif prev is not None and prev.owned:
        health = comp.probe(prev.address)
        if health.ok:
            prev.persistent = prev.persistent or persistent
            emit(StackEvent(comp.name, "ready", f"already running (pid {prev.pid})"))
            return False
        emit(
            StackEvent(
                comp.name, "note", f"pid {prev.pid} is unhealthy ({health.detail}); restarting"
            )
        )
        assert prev.pid is not None
        stop_group(prev.pid, prev.create_time)

    for i, address in enumerate(comp.reuse_candidates()):
        health = comp.probe(address)
        if health.ok:
            _record_external(comp, state, address, persistent)
            emit(StackEvent(comp.name, "ready", f"reusing {address} ({health.detail})"))
            return False
        if i == 0 and address != comp.local_address():
            emit(StackEvent(comp.name, "note", f"{address} is not reachable ({health.detail})"))

    if port_in_use(comp.port):
        raise StackError(busy_port_message(comp.port, comp.port_env, comp.what))
    address = comp.local_address()
    cmd = comp.command(home)
    emit(StackEvent(comp.name, "starting", f"starting on {address}"))
    t0 = time.monotonic()
    spawned = spawn(cmd, log_path(home, comp.name), comp.env(home))
    # Recorded before the wait, so that `down` finds it even if we are killed meanwhile.
    state.components[comp.name] = ComponentRecord(
        address,
        owned=True,
        pid=spawned.pid,
        create_time=spawned.create_time,
        log=str(spawned.log),
        persistent=persistent,
        started_at=time.time(),
    )
    _save(home, state)
    try:
        wait_healthy(
            spawned,
            lambda: comp.probe(address, timeout_s=2.0),
            comp.start_timeout_s,
            f"{comp.what} ({comp.name}, pid {spawned.pid})",
            comp.poll_interval_s,
        )
    except BaseException:
        del state.components[comp.name]  # wait_healthy has stopped it
        raise
    elapsed = time.monotonic() - t0
    emit(StackEvent(comp.name, "ready", f"started pid {spawned.pid} in {elapsed:.1f} s"))
    return True


def _save(home: Path, state: StackState) -> None:
    for name, rec in state.components.items():
        if name in COMPONENTS:
            state.settings[COMPONENTS[name].settings_key] = rec.address
    write_state(home, state)


def up_locked(
    components: Iterable[str] | None, *, persistent: bool, on_event: OnEvent | None = None
) -> tuple[Settings, list[str]]:
    """``up`` under the stack lock; returns the settings and the components we started."""
    emit: OnEvent = on_event or (lambda e: None)
    selected = _select(components)
    home = raylane_home()
    started: list[str] = []
    with stack_lock(home):
        state = read_state(home)
        for comp in selected:
            try:
                if _ensure(comp, state, home, persistent, emit):
                    started.append(comp.name)
            except StackError as e:
                emit(StackEvent(comp.name, "failed", e.message))
                raise
            finally:
                # Record each component as soon as it runs, so that `down` can stop it
                # even if a later one fails or this process is killed.
                if state.components:
                    _save(home, state)
                else:
                    remove_state(home)
    loaded = Settings.load()
    resolved = {c.settings_key: state.components[c.name].address for c in selected}
    settings = Settings(
        kafka_bootstrap=resolved.get("kafka_bootstrap", loaded.kafka_bootstrap),
        redis_url=resolved.get("redis_url", loaded.redis_url),
        mlflow_tracking_uri=resolved.get("mlflow_tracking_uri", loaded.mlflow_tracking_uri),
        home=home,
    )
    if settings.kafka_bootstrap == loaded.kafka_bootstrap:
        settings = replace(settings, kafka_idempotence=loaded.kafka_idempotence)
    return settings, started


def stop_recorded(home: Path, only: Callable[[ComponentRecord], bool] | None = None) -> list[str]:
    """Stop the processes we own (records matching ``only``) and forget them; the caller
    holds the stack lock. Returns the names of the components stopped."""
    stopped = []
    state = read_state(home)
    for name, rec in list(state.components.items()):
        if only is not None and not only(rec):
            continue
        if rec.owned and rec.pid:
            stop_group(rec.pid, rec.create_time)
            stopped.append(name)
        del state.components[name]
        state.settings.pop(COMPONENTS[name].settings_key if name in COMPONENTS else name, None)
        for key in COMPONENTS[name].embedded_settings if name in COMPONENTS else ():
            state.settings.pop(key, None)
    if state.components:
        write_state(home, state)
    else:
        remove_state(home)
    return stopped


def down_locked() -> list[str]:
    """``down`` under the stack lock; returns the names of the components stopped."""
    home = raylane_home()
    with stack_lock(home):
        return stop_recorded(home)


def _status_of(comp: Component, rec: ComponentRecord | None) -> ComponentStatus:
    if rec is not None and rec.owned:
        alive = is_running(rec.pid, rec.create_time)
        ours = comp.probe(rec.address, timeout_s=1.0) if alive else None
        return ComponentStatus(
            comp.name,
            rec.address,
            rec.pid if alive else None,
            bool(ours and ours.ok),
            True,
            ours.detail if ours else f"pid {rec.pid} is not running; see the log",
            Path(rec.log) if rec.log else None,
        )
    if rec is not None:
        candidates = [rec.address]
    elif comp.external() is not None:
        candidates = [str(comp.external())]
    else:
        candidates = comp.reuse_candidates()
    for address in candidates:
        health = comp.probe(address, timeout_s=1.0)
        if health.ok:
            break  # otherwise the last candidate (where we would start ours) is reported
    port = _port_of(address)
    host = urlsplit(address if "://" in address else f"tcp://{address}").hostname
    owner = port_owner(port) if port and health.ok and host in ("127.0.0.1", "localhost") else None
    return ComponentStatus(
        comp.name, address, owner[0] if owner else None, health.ok, False, health.detail
    )


def status() -> list[ComponentStatus]:
    """Health of each component: the recorded stack, else what ``up`` would use."""
    state = read_state(raylane_home())
    return [_status_of(comp, state.components.get(comp.name)) for comp in COMPONENTS.values()]


def export_fallbacks(settings: Settings) -> None:
    """Point this process (and what it spawns: Ray replicas, subprocesses) at what `up` resolved
    where the environment named something else, e.g. valkey when REDIS_URL is unreachable.

    Only variables already set are replaced; unset ones are read from stack.json anyway.
    """
    for key, value in settings.as_env().items():
        if os.environ.get(key) and os.environ[key] != value:
            os.environ[key] = value
