"""Every listening socket of the local stack and of a local Ray (``raylane dev status``).

The stack's own processes (``stack.json``'s pids and their children) and every process of a
Ray started on this machine by this user (GCS, raylet, agents, workers: the Serve replicas,
whose metrics endpoints are among them), with the address each listens on, so a user sees
at a glance that nothing of raylane's is reachable from the network.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["Listener", "is_loopback", "listeners"]

#: process names / command-line marks of a local Ray's processes
_RAY_NAMES = ("gcs_server", "raylet")
_RAY_MARKS = ("ray::", "ray/_private", "ray/dashboard", "ray/autoscaler", "default_worker.py")


@dataclass(frozen=True)
class Listener:
    process: str
    pid: int
    #: "stack" (a dev stack component or its child) or "ray" (a local Ray process)
    owner: str
    ip: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.ip)


def is_loopback(ip: str) -> bool:
    """Whether `ip` (v4, v6 or v4-mapped v6) is a loopback address."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _is_ray(p: psutil.Process) -> bool:
    name = p.name()
    if name in _RAY_NAMES:
        return True
    cmd = " ".join(p.cmdline())
    return name.startswith("ray::") or any(m in cmd for m in _RAY_MARKS)


def _processes(home: Path) -> dict[int, tuple[psutil.Process, str]]:
    found: dict[int, tuple[psutil.Process, str]] = {}
    try:
        pids = json.loads((home / "stack.json").read_text()).get("pids", {}).values()
    except (OSError, ValueError):
        pids = []
    for pid in pids:
        try:
            p = psutil.Process(int(pid))
            for q in [p, *p.children(recursive=True)]:
                found[q.pid] = (q, "stack")
        except psutil.Error:
            continue
    uid = os.getuid()
    for p in psutil.process_iter():
        try:
            if p.pid not in found and p.uids().real == uid and _is_ray(p):
                found[p.pid] = (p, "ray")
        except psutil.Error:
            continue
    return found


def listeners(home: Path) -> list[Listener]:
    """The listening TCP sockets of the stack's and a local Ray's processes, by owner and port."""
    out: set[Listener] = set()
    for p, owner in _processes(home).values():
        try:
            name = p.name()
            conns = p.net_connections(kind="inet")
        except psutil.Error:
            continue
        out.update(
            Listener(name, p.pid, owner, str(c.laddr.ip), int(c.laddr.port))
            for c in conns
            if c.status == psutil.CONN_LISTEN
        )
    return sorted(out, key=lambda x: (x.owner, x.process, x.port))
