"""Child processes of the embedded stack: spawn, identify, wait for health, stop whole groups.

Every component runs in its own session (``start_new_session=True``), so its pid is also
its process-group id and `stop_group` can take down the component together with anything
it forked (MLflow's uvicorn worker, for one). Ports are probed here too, so a busy port is
reported with the pid and name of its owner instead of as a confusing start-up crash.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from raylane.errors import StackError

try:  # psutil comes with feast; everything here degrades gracefully without it
    import psutil
except ImportError:  # pragma: no cover - exercised only on stripped-down installs
    psutil = None

__all__ = [
    "Health",
    "Spawned",
    "busy_port_message",
    "is_running",
    "log_tail",
    "port_in_use",
    "port_owner",
    "process_create_time",
    "spawn",
    "stop_group",
    "wait_healthy",
]

#: Popen handles of children started by this interpreter, so they can be reaped (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Health:
    """Result of one probe: healthy or not, and why (shown in `status` and errors)."""

    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Spawned:
    """A started component process; ``pid`` is also its process-group id."""

    pid: int
    create_time: float | None
    log: Path
    cmd: tuple[str, ...]


def spawn(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Spawned:
    """Start ``cmd`` in a new session with stdout/stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        except OSError as e:
            raise StackError(
                f"could not execute {cmd[0]}: {e.strerror}; reinstall with `make setup`"
            ) from e
    _children[proc.pid] = proc
    return Spawned(proc.pid, process_create_time(proc.pid), log, tuple(cmd))


def process_create_time(pid: int) -> float | None:
    """Start time of ``pid`` (psutil), used to tell our process from a recycled pid."""
    if psutil is None:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _reap(pid: int) -> int | None:
    """Collect the exit status of our own child ``pid``; None while it still runs."""
    proc = _children.get(pid)
    if proc is None:
        return None
    rc = proc.poll()
    if rc is not None:
        _children.pop(pid, None)
    return rc


def is_running(pid: int | None, create_time: float | None = None) -> bool:
    """True if ``pid`` runs (zombies do not count) and, if given, started at ``create_time``."""
    if not pid:
        return False
    if _reap(pid) is not None:
        return False
    if psutil is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except psutil.Error:
        return False


def _group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) members of process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    if psutil is None:
        return [pgid]
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _descendants(pid: int) -> list[int]:
    if psutil is None:
        return []
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _signal_all(pgid: int, extra: Sequence[int], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in extra:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_group(pid: int, create_time: float | None = None, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``, wait up to ``timeout_s``, then SIGKILL it.

    Descendants that left the group are signalled too. When ``pid`` now belongs to another
    process (recycled pid: same pid, different ``create_time``) nothing is signalled. When
    ``pid`` is gone, its orphans still in the group are stopped: the kernel does not hand a
    pid out while a group of that id exists, so those members can only be ours.
    """
    if create_time is not None and not is_running(pid, create_time) and is_running(pid):
        return
    extra = [p for p in _descendants(pid) if p != pid]

    def alive() -> bool:
        _reap(pid)
        return bool(_group_pids(pid)) or any(is_running(p) for p in extra)

    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        _signal_all(pid, extra, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive():
                return
            time.sleep(0.05)
    if alive():
        raise StackError(f"process group {pid} survived SIGKILL; check `ps -g {pid}`")


def wait_healthy(
    spawned: Spawned, probe: Callable[[], Health], timeout_s: float, what: str, interval_s: float
) -> None:
    """Poll ``probe`` until healthy; on exit or timeout stop the group and raise StackError."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            rc = _reap(spawned.pid)
            if rc is not None or not is_running(spawned.pid):
                stop_group(spawned.pid, timeout_s=2.0)
                raise StackError(
                    f"{what} exited (code {rc}) right after start; last lines of "
                    f"{spawned.log}:\n{log_tail(spawned.log)}"
                )
            health = probe()
            if health.ok:
                return
            if time.monotonic() > deadline:
                stop_group(spawned.pid, timeout_s=5.0)
                raise StackError(
                    f"{what} did not become healthy within {timeout_s:.0f} s ({health.detail}); "
                    f"last lines of {spawned.log}:\n{log_tail(spawned.log)}"
                )
            time.sleep(interval_s)
    except BaseException:
        # Ctrl-C or an error while waiting: never leave an unrecorded process behind.
        if is_running(spawned.pid):
            stop_group(spawned.pid, timeout_s=2.0)
        raise


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if a listener holds ``host:port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_owner(port: int) -> tuple[int, str] | None:
    """(pid, process name) of the listener on ``port``, if psutil can tell."""
    if psutil is None:
        return None
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return None
            try:
                return conn.pid, psutil.Process(conn.pid).name()
            except psutil.Error:
                return conn.pid, "?"
    return None


def _free_ports_after(port: int, host: str = "127.0.0.1") -> Iterator[int]:
    for candidate in range(port + 1, min(port + 50, 65535)):
        if not port_in_use(candidate, host):
            yield candidate


def busy_port_message(port: int, port_env: str, what: str) -> str:
    """'port 9092 is in use by pid N (name); stop it or set RAYLANE_KAFKA_PORT=9093'."""
    owner = port_owner(port)
    by = f"pid {owner[0]} ({owner[1]})" if owner else "another process"
    suggestion = next(_free_ports_after(port), port + 1)
    return (
        f"port {port} is in use by {by}, which does not answer as {what}; "
        f"stop it or set {port_env}={suggestion}"
    )


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(log is empty)"
