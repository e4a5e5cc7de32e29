"""The stack's processes for the benches: who they are, their memory, their CPU over a span,
and py-spy flame graphs of the Serve replicas that score.

Roles come from the command line: a Serve replica is named by its deployment without the
pipeline prefix (``ingress``, ``model-champion``, ``drift`` ...); the rest by program (broker,
redis, mlflow, raylet, gcs, dashboard, ...). ``driver`` is the bench itself (its producer and
the consumer that times the scored records).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

_REPLICA = re.compile(r"ray::ServeReplica:[^:]+:([^ .]+)")
_PROGRAMS = (  # (substring of the command line, role); the first match wins
    ("tansu", "broker"),
    ("redis-server", "redis"),
    ("valkey-server", "redis"),
    ("mlflow", "mlflow"),
    ("ray::ServeController", "serve-controller"),
    ("ray::ProxyActor", "serve-proxy"),
    ("raylet", "raylet"),
    ("gcs_server", "gcs"),
    ("dashboard", "ray-dashboard"),
    ("DashboardAgent", "ray-dashboard"),
    ("RuntimeEnvAgent", "ray-agents"),
    ("log_monitor", "ray-agents"),
    ("monitor.py", "ray-agents"),
    ("ray::IDLE", "ray-idle-workers"),
)


def stack_pids() -> set[int]:
    """This driver, its children, the embedded stack and every Ray process of this machine."""
    from raylane import localstack

    pids = {os.getpid()}
    me = psutil.Process()
    pids |= {p.pid for p in me.children(recursive=True)}
    for s in localstack.status():
        if s.pid:
            pids.add(s.pid)
            with contextlib.suppress(psutil.Error):
                pids |= {c.pid for c in psutil.Process(s.pid).children(recursive=True)}
    # Ray's daemons and workers, and the Redis the stack uses when it is the machine's own
    needles = ("ray::", "/ray/", "raylet", "gcs_server", "redis-server", "valkey-server")
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if any(n in cmd for n in needles):
            pids.add(p.pid)
    return pids


def stack_memory() -> dict[str, float]:
    rss = pss = 0
    pids = stack_pids()
    for pid in pids:
        try:
            mi = psutil.Process(pid).memory_full_info()
            rss += mi.rss
            pss += getattr(mi, "pss", mi.rss)
        except psutil.Error:
            continue
    return {"processes": len(pids), "rss_gib": rss / 2**30, "pss_gib": pss / 2**30}


def role(pid: int, prefix: str = "") -> str:
    """The process's role; a replica's deployment name loses `prefix` (``fraud-``)."""
    if pid == os.getpid():
        return "driver"
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return "gone"
    m = _REPLICA.search(cmd)
    if m:
        name = m.group(1)
        return name[len(prefix) :] if prefix and name.startswith(prefix) else name
    for needle, name in _PROGRAMS:
        if needle in cmd:
            return name
    return "other"


class CpuSpan:
    """CPU seconds each process used between :meth:`start` and :meth:`stop`, by role."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._t0: dict[int, float] = {}
        self._wall0 = 0.0

    def start(self) -> None:
        self._t0 = {}
        for pid in stack_pids():
            with contextlib.suppress(psutil.Error):
                c = psutil.Process(pid).cpu_times()
                self._t0[pid] = c.user + c.system
        self._wall0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        """{"wall_s", "total_cores", "by_role": {role: cores}}: cores = CPU s / wall s."""
        wall = time.perf_counter() - self._wall0
        by_role: dict[str, float] = defaultdict(float)
        for pid in stack_pids():
            try:
                c = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            # a process born during the span counts from zero
            by_role[role(pid, self.prefix)] += c.user + c.system - self._t0.get(pid, 0.0)
        cores = {k: round(v / wall, 3) for k, v in sorted(by_role.items(), key=lambda kv: -kv[1])}
        total = round(sum(cores.values()), 3)
        return {"wall_s": round(wall, 2), "total_cores": total, "by_role": cores}


def replicas(prefix: str, deployments: tuple[str, ...]) -> dict[str, list[int]]:
    """pids of the Serve replicas of `deployments` (names without `prefix`)."""
    out: dict[str, list[int]] = defaultdict(list)
    for pid in stack_pids():
        r = role(pid, prefix)
        if r in deployments:
            out[r].append(pid)
    return {k: sorted(v) for k, v in out.items()}


class FlameGraphs:
    """py-spy ``record`` of each pid for `seconds`, written as SVG flame graphs.

    ``--nonblocking`` samples without pausing the process, so the profile barely moves the
    latency it is taken under (at the price of an occasional torn stack).
    """

    def __init__(self, out_dir: Path, rate_hz: int = 100) -> None:
        self.out_dir = out_dir
        self.rate_hz = rate_hz
        self._procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        exe = Path(sys.executable).parent / "py-spy"  # the venv's, from constraints.txt
        found = str(exe) if exe.exists() else shutil.which("py-spy")
        if found is None:
            raise RuntimeError("py-spy is not installed: `make setup` installs it")
        self.exe = found

    def start(self, targets: dict[str, int], seconds: float) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in targets.items():
            path = self.out_dir / f"{name}.svg"
            cmd = [
                self.exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                str(self.rate_hz),
                "--nonblocking",
                "--format",
                "flamegraph",
                "--output",
                str(path),
            ]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self._procs.append((proc, path))

    def wait(self, timeout_s: float = 60) -> list[str]:
        """Paths written; a py-spy that failed says why on stderr of the bench."""
        written = []
        for proc, path in self._procs:
            try:
                _, err = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode == 0 and path.exists():
                written.append(str(path))
            else:
                msg = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                print(f"py-spy for {path.name} failed ({proc.returncode}): {msg[0]}")
        self._procs = []
        return written
