"""The fault suite's own parts, without services: the fault proxy, the row arithmetic, and
that every poison kind is rejected by the decode stage with the error class the suite expects."""

from __future__ import annotations

import copy
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from raylane.config import PipelineConfig
from raylane.kafka import deadletters as D
from raylane.kafka.records import InRecord, OutRecord, header
from raylane.pipeline.decode import DecodeStage
from raylane.pipeline.wiring import codecs_for
from raylane.testing.faults import Poison, Tally
from raylane.testing.proxy import FaultProxy
from raylane.testing.scenarios import POISON_KINDS, poison_record

ROOT = Path(__file__).resolve().parents[3]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _roundtrip(port: int, payload: bytes = b"ping", timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        return s.recv(4096)


def test_proxy_relays_goes_down_comes_back_on_the_same_port_and_can_go_silent(echo: int) -> None:
    with FaultProxy("127.0.0.1", echo) as proxy:
        port = proxy.port
        assert _roundtrip(port) == b"ping"
        held = socket.create_connection(("127.0.0.1", port), timeout=2)
        held.sendall(b"a")
        assert held.recv(10) == b"a"

        proxy.down()  # open connections are reset, new ones refused
        with pytest.raises(OSError):
            held.sendall(b"b")
            if held.recv(10) == b"":  # a reset may read as EOF first
                raise ConnectionResetError
        with pytest.raises(ConnectionRefusedError):
            _roundtrip(port)

        proxy.up()
        assert proxy.port == port and _roundtrip(port, b"back") == b"back"

        proxy.silence()  # connects succeed, nothing is answered
        with pytest.raises(TimeoutError):
            _roundtrip(port, timeout=0.5)
        proxy.up()
        assert _roundtrip(port, b"again") == b"again"


class _Traffic:
    def __init__(self, sent_at: dict[str, float], poison: dict[tuple[int, int], Poison]) -> None:
        self.sent_at = sent_at
        self.poison = poison


def test_row_counts_lost_duplicates_conflicts_wrong_classes_and_recovery() -> None:
    t = Tally("unused:9092", "scored", "dlq")
    t.scored = {
        "a": [(10.0, "1", "approved"), (12.0, "1", "approved")],  # a harmless duplicate
        "b": [(11.0, "1", "approved"), (13.0, "2", "flagged")],  # a conflicting one
        "c": [(20.0, "1", "approved")],
        "other": [(1.0, "1", "approved")],  # not this traffic's
    }
    t.dlq = {(0, 5): "NonFiniteNumber", (0, 6): "InvalidJson", (0, 99): "X"}
    traffic = _Traffic(
        {"a": 1.0, "b": 2.0, "c": 9.0, "d": 9.5},
        {
            (0, 5): Poison("nan", b"", "NonFiniteNumber"),
            (0, 6): Poison("empty", b"", "EmptyEvent"),
            (0, 7): Poison("empty", b"", "EmptyEvent"),
        },
    )
    row = t.row("s", traffic, fault_end=[5.0, 9.2])  # type: ignore[arg-type]
    assert (row.produced, row.scored) == (4, 3)
    assert row.lost == 1 + 1  # d never scored, poison (0, 7) never dead-lettered
    assert (row.duplicates, row.conflicting) == (2, 1)
    assert (row.dlq, row.expected_dlq, row.wrong_class) == (2, 3, 1)
    # events sent by 5.0 (a, b) were scored by 11.0; by 9.2 also c, scored at 20.0
    assert row.recover_s == pytest.approx(20.0 - 9.2)
    assert not row.ok


def _cfg(**inp: Any) -> PipelineConfig:
    args = copy.deepcopy(
        yaml.safe_load((ROOT / "serve_configs/fraud.yaml").read_text())["applications"][0]["args"]
    )
    args["input"].update(inp)
    return PipelineConfig.from_args(args)


@pytest.mark.parametrize("kind", POISON_KINDS)
def test_every_poison_kind_is_dead_lettered_with_its_class(kind: str) -> None:
    import time

    cfg = _cfg(max_event_age_s=86_400.0, max_decompressed_batch_bytes=2 << 20)
    codec, _ = codecs_for(cfg)  # the formats the pipeline accepts (Avro and JSON)
    now = int(time.time() * 1000)
    ev = {
        "event_id": "e1",
        "correlation_id": "c1",
        "user_id": "u1",
        "merchant_id": "m1",
        "merchant_category": "grocery",
        "amount": 10.0,
        "currency": "EUR",
        "user_history_hash": "h",
        "event_time": now,
        "device_id": None,
    }
    inp = cfg.input
    p = poison_record(
        kind,
        ev,
        codec,
        max_event_bytes=inp.max_event_bytes,
        max_batch_bytes=inp.max_decompressed_batch_bytes,
    )
    good = InRecord("t", 0, 0, b"u1", codec.encode(ev), [], now)
    if p.bomb:  # what the ingress's fetch makes of it: the stand-in for its record batch
        bad = _fetched_alone(p, offset=1, limit=inp.max_decompressed_batch_bytes)
    else:
        bad = InRecord("t", 0, 1, p.key, p.value, p.headers, now)
    dlq: list[OutRecord] = []
    out = DecodeStage(cfg, codec)([good, bad], dlq)
    assert [r.offset for r in out.records] == [0]
    assert len(dlq) == 1
    assert header(dlq[0].headers, D.H_CLASS) == p.expect.encode(), header(
        dlq[0].headers, D.H_MESSAGE
    )


def _fetched_alone(p: Poison, *, offset: int, limit: int) -> InRecord:
    """`p` in a gzip record batch of its own, read by aiokafka's fetch-side parser under
    the ingress's quarantine (no broker: the bytes are what one would send)."""
    from raylane.kafka import batches
    from raylane.testing.kafka import record_batch

    raw = record_batch([p.value], base=offset, codec=1, headers=p.headers, key=p.key)
    q = batches.Quarantine(limit)
    assert batches.parse(raw, "t", 0, offset, q) == ([], offset + 1)
    (stand_in,) = q.take()
    return stand_in
