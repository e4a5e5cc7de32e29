"""file_sd targets: stale ones (their process is gone) are dropped; a scrape survives a
target whose port now belongs to something that does not speak HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, start_http_server

from raylane.monitoring.live import scrape
from raylane.monitoring.metrics import target_files


def _announce(home: Path, name: str, pid: int, target: str) -> Path:
    d = home / "prometheus" / "targets"
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"{name}-{pid}.json"
    f.write_text(json.dumps([{"targets": [target], "labels": {"job": "raylane", "process": name}}]))
    return f


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_targets_of_gone_local_processes_are_removed(tmp_path: Path) -> None:
    gone = _announce(tmp_path, "fraud-ingress", _dead_pid(), "127.0.0.1:1")
    alive = _announce(tmp_path, "fraud-model-champion", os.getpid(), "127.0.0.1:2")
    remote = _announce(tmp_path, "fraud-ingress", _dead_pid(), "10.0.0.7:3")  # another node's
    assert target_files(tmp_path) == sorted([alive, remote])
    assert not gone.exists()


def _not_http_server() -> tuple[int, threading.Event]:
    """A listener that answers every connection with bytes that are not HTTP (a reused port)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(1024)
                conn.sendall(b"\x00\x00\x00\x18\x40\x00\x00\x00\xfe binary protocol\r\n\r\n")
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], stop


def test_scrape_skips_a_target_that_does_not_speak_http(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    Counter("raylane_events_in", "events", ["pipeline"], registry=reg).labels(pipeline="fraud").inc(
        7
    )
    server, _ = start_http_server(0, addr="127.0.0.1", registry=reg)
    port, stop = _not_http_server()
    try:
        _announce(tmp_path, "fraud-ingress", os.getpid(), f"127.0.0.1:{server.server_port}")
        _announce(tmp_path, "fraud-drift", os.getppid(), f"127.0.0.1:{port}")
        got = scrape(tmp_path)
    finally:
        stop.set()
        server.shutdown()
    assert got["raylane_events_in_total{}"] == 7.0
