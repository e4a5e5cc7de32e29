"""A running local pipeline listens on loopback only: Ray, the replicas' metrics, the stack.

The fraud app is deployed on local Ray (as `make demo` does, via run_pipeline); every
listening socket of this process, its descendants (Ray's GCS, raylet, agents, workers and
replicas) and the embedded stack's processes must be on 127.0.0.0/8 or ::1.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _processes(stack_home: Any) -> list[psutil.Process]:
    me = psutil.Process()
    procs = {p.pid: p for p in [me, *me.children(recursive=True)]}
    state = json.loads((stack_home / "stack.json").read_text())
    for pid in state.get("pids", {}).values():
        try:
            p = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        for q in [p, *p.children(recursive=True)]:
            procs[q.pid] = q
    return list(procs.values())


def test_no_listener_of_the_running_pipeline_leaves_loopback(
    fraud_app: tuple[Any, dict[str, Any]], bootstrapped: Any
) -> None:
    from raylane.monitoring.metrics import target_files

    listeners: list[tuple[str, int, str, int]] = []
    for p in _processes(bootstrapped.home):
        try:
            name = p.name()
            conns = p.net_connections(kind="inet")
        except psutil.Error:
            continue
        listeners += [
            (name, p.pid, str(c.laddr.ip), int(c.laddr.port))
            for c in conns
            if c.status == psutil.CONN_LISTEN
        ]
    names = {n for n, *_ in listeners}
    # the test sees what it claims to: Ray's own servers and the replicas' metrics endpoints
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), names
    ports = {port for *_, port in listeners}
    metrics_ports = {
        int(t.rpartition(":")[2])
        for f in target_files(bootstrapped.home)
        for g in json.loads(f.read_text())
        for t in g["targets"]
    }
    assert metrics_ports & ports, (metrics_ports, sorted(ports))
    open_ = [entry for entry in listeners if not _loopback(entry[2])]
    assert not open_, f"listeners off loopback: {open_}"
    assert os.environ.get("RAY_AUTH_MODE") == "token"
