"""The fault scenarios: each drives valid payments through a :class:`FaultRig` while it
injects one fault, waits for the outputs, and returns its :class:`FaultRow`.

The same functions run at full size in ``bench/faults.py`` and in short versions in
``tests/e2e/test_faults.py``, which asserts ``lost == 0`` and no conflicting duplicate.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

from raylane.contracts import Codec
from raylane.testing.faults import FaultRig, FaultRow, Poison, Traffic

__all__ = [
    "POISON_KINDS",
    "SCENARIOS",
    "action_crash",
    "kill_ingress",
    "kill_model",
    "overload",
    "poison_mix",
    "poison_record",
    "promotion",
    "redis_down",
    "redis_silent",
    "saturation",
]


def _drain(rig: FaultRig, traffic: Traffic, timeout_s: float, dlq: bool = False) -> None:
    traffic.join()
    rig.tally.wait(set(traffic.sent_at), timeout_s, set(traffic.poison) if dlq else set())


def _kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.time()


# -- 1. ingress replicas SIGKILLed ----------------------------------------------------------


def kill_ingress(
    rig: FaultRig, *, events: int, rate: float, kills: int, seed: int = 101
) -> FaultRow:
    """SIGKILL an ingress replica `kills` times, evenly spread over the stream."""
    traffic = Traffic(rig, events, rate, seed=seed).start()
    ends: list[float] = []
    pids: list[int] = []
    for k in range(1, kills + 1):
        traffic.wait_sent(events * k // (kills + 1))
        pid = rig.ingress_pid()
        pids.append(pid)
        ends.append(_kill(pid))
    _drain(rig, traffic, timeout_s=180)
    return rig.tally.row(
        "ingress replica SIGKILLed", traffic, fault_end=ends, detail=f"{kills} kills (pids {pids})"
    )


# -- 2. Redis stopped, Redis silent ---------------------------------------------------------


def _redis_fault(
    rig: FaultRig,
    name: str,
    inject: Callable[[], None],
    *,
    events: int,
    rate: float,
    outage_s: float,
    seed: int,
) -> FaultRow:
    traffic = Traffic(rig, events, rate, seed=seed).start()
    traffic.wait_sent(events // 4)
    inject()
    time.sleep(outage_s)
    rig.proxy.up()
    end = time.time()
    _drain(rig, traffic, timeout_s=180 + outage_s)
    return rig.tally.row(name, traffic, fault_end=[end], detail=f"{outage_s:g} s outage")


def redis_down(
    rig: FaultRig, *, events: int, rate: float, outage_s: float, seed: int = 102
) -> FaultRow:
    """Redis stops (connections reset, port closed) for `outage_s`, then comes back."""
    return _redis_fault(
        rig, "Redis stopped", rig.proxy.down, events=events, rate=rate, outage_s=outage_s, seed=seed
    )


def redis_silent(
    rig: FaultRig, *, events: int, rate: float, outage_s: float, seed: int = 103
) -> FaultRow:
    """Redis accepts connections but answers nothing for `outage_s`, then answers again."""
    return _redis_fault(
        rig,
        "Redis silent (never answers)",
        rig.proxy.silence,
        events=events,
        rate=rate,
        outage_s=outage_s,
        seed=seed,
    )


# -- 3. model replica killed ----------------------------------------------------------------


def kill_model(
    rig: FaultRig, *, events: int, rate: float, kills: int = 1, seed: int = 104
) -> FaultRow:
    """SIGKILL the primary model's replica under load, `kills` times."""
    traffic = Traffic(rig, events, rate, seed=seed).start()
    ends: list[float] = []
    for k in range(1, kills + 1):
        traffic.wait_sent(events * k // (kills + 1))
        ends.append(_kill(rig.model_pid()))
    _drain(rig, traffic, timeout_s=180)
    return rig.tally.row(
        "model replica SIGKILLed", traffic, fault_end=ends, detail=f"{kills} kill(s)"
    )


# -- 4. overload ----------------------------------------------------------------------------


def saturation(rig: FaultRig, *, events: int, seed: int = 105) -> float:
    """Events/s the pipeline sustains: `events` produced flat out, over the outputs' span."""
    traffic = Traffic(rig, events, 1e9, seed=seed).start()
    _drain(rig, traffic, timeout_s=300)
    seen = rig.tally.first_seen(set(traffic.sent_at))
    first = min(traffic.sent_at.values())
    return len(seen) / max(1e-3, max(seen.values()) - first)


def overload(
    rig: FaultRig, *, rate: float, burst_rate: float, burst_s: float, calm_s: float, seed: int = 106
) -> FaultRow:
    """`rate` for `calm_s`, `burst_rate` for `burst_s`, `rate` again for `calm_s`."""

    def schedule(t: float) -> float:
        return burst_rate if calm_s <= t < calm_s + burst_s else rate

    events = int(rate * calm_s * 2 + burst_rate * burst_s)
    traffic = Traffic(rig, events, schedule, seed=seed).start()
    while traffic.started == 0.0 or time.monotonic() < traffic.started + calm_s:
        time.sleep(0.02)
    at_burst = traffic.sent
    time.sleep(burst_s)
    burst_sent = traffic.sent - at_burst
    end = time.time()
    _drain(rig, traffic, timeout_s=300 + events / max(rate, 1.0))
    return rig.tally.row(
        f"overload: {burst_rate:,.0f}/s for {burst_s:g} s",
        traffic,
        fault_end=[end],
        detail=f"{rate:,.0f}/s, then {burst_sent / burst_s:,.0f}/s achieved, then {rate:,.0f}/s; "
        "recovery = backlog drained",
    )


# -- 5. promotion mid-stream ----------------------------------------------------------------


def promotion(rig: FaultRig, *, events: int, rate: float, seed: int = 107) -> FaultRow:
    """Promote the challenger halfway through; every event scored by exactly one version."""
    from raylane.config import PipelineConfig
    from raylane.lifecycle.promotion import promote
    from raylane.lifecycle.shadow_stats import ShadowStore
    from raylane.settings import Settings

    cfg = PipelineConfig.from_args(rig.args)
    store = ShadowStore(Settings.load().redis_url)
    traffic = Traffic(rig, events, rate, seed=seed).start()
    traffic.wait_sent(events // 2)
    deadline = time.monotonic() + 60
    while store.aggregate(cfg.name, "challenger").n < cfg.promotion.min_samples:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    out = promote(cfg, actor="fault-suite", reason="promotion mid-stream scenario")
    end = time.time()
    _drain(rig, traffic, timeout_s=180)
    row = rig.tally.row("promotion mid-stream", traffic, fault_end=[end])
    versions = rig.tally.versions(set(traffic.sent_at))
    row.detail = (
        f"v{out.event['from_version']} -> v{out.event['to_version']}, "
        f"gates {'passed' if all(g.passed for g in out.gates) else 'FAILED'}; "
        f"outputs name {sorted(versions)}"
    )
    if not versions <= set(rig.versions) or not all(g.passed for g in out.gates):
        row.conflicting += 1  # an output naming another version, or a promotion that did not happen
    return row


# -- 6. poison mix --------------------------------------------------------------------------

#: What each kind of poison is, in the order the mix cycles through them.
POISON_KINDS = (
    "nan",
    "json_inf",
    "avro_inf",
    "huge_id",
    "huge_key",
    "far_future",
    "far_past",
    "compressed_oversize",
    "gzip_bomb",
    "non_utf8_json",
    "non_utf8_avro",
    "unknown_schema_id",
    "empty",
)


def poison_record(
    kind: str,
    ev: dict[str, Any],
    codec: Codec,
    *,
    max_event_bytes: int,
    max_batch_bytes: int = 64 << 20,
) -> Poison:
    """One hostile version of the valid event `ev` (`max_batch_bytes`: the pipeline's
    ``input.max_decompressed_batch_bytes``)."""
    ev = dict(ev, event_id=f"poison-{kind}-{ev['event_id']}")
    now_ms = int(time.time() * 1000)
    if kind == "nan":
        return Poison(kind, json.dumps(dict(ev, amount=float("nan"))).encode(), "NonFiniteNumber")
    if kind == "json_inf":
        text = json.dumps(dict(ev, amount=1.5)).replace("1.5", "1e999", 1)
        return Poison(kind, text.encode(), "NonFiniteNumber")
    if kind == "avro_inf":
        raw = _avro_unchecked(codec, dict(ev, amount=float("inf")))
        return Poison(kind, raw, "NonFiniteNumber")
    if kind == "huge_id":
        return Poison(kind, json.dumps(dict(ev, event_id="x" * 600_000)).encode(), "LimitExceeded")
    if kind == "huge_key":
        return Poison(kind, codec.encode(ev), "LimitExceeded", key=b"k" * 100_000)
    if kind == "far_future":
        return Poison(
            kind, codec.encode(dict(ev, event_time=now_ms + 30 * 86_400_000)), "EventTimeOutOfRange"
        )
    if kind == "far_past":
        return Poison(kind, codec.encode(dict(ev, event_time=0)), "EventTimeOutOfRange")
    if kind == "compressed_oversize":
        doc = dict(ev, merchant_id="m" * 10, note=" " * (2 * max_event_bytes))
        return Poison(kind, json.dumps(doc).encode(), "EventTooLarge", compress=True)
    if kind == "gzip_bomb":  # a record batch of its own that inflates past the batch limit
        doc = dict(ev, merchant_id="m" * 10, note=" " * (max_batch_bytes + 1))
        return Poison(kind, json.dumps(doc).encode(), "DecompressedTooLarge", bomb=True)
    if kind == "non_utf8_json":
        body = json.dumps(dict(ev, merchant_id="MARK")).encode().replace(b"MARK", b"m\xff\xfe")
        return Poison(kind, body, "InvalidJson")
    if kind == "non_utf8_avro":  # same length, so the Avro string's length prefix stays right
        raw = codec.encode(dict(ev, merchant_id="MARK")).replace(b"MARK", b"m\xff\xfe\xfd")
        return Poison(kind, raw, "CorruptEvent")
    if kind == "unknown_schema_id":
        raw = codec.encode(ev)
        return Poison(kind, b"\x00" + struct.pack(">I", 987_654) + raw[5:], "UnknownSchemaId")
    if kind == "empty":
        return Poison(kind, b"", "EmptyEvent")
    raise ValueError(f"unknown poison kind {kind!r}; known: {', '.join(POISON_KINDS)}")


def _avro_unchecked(codec: Codec, ev: dict[str, Any]) -> bytes:
    """Confluent Avro of `ev` written without the contract's checks (a careless producer)."""
    import io

    import fastavro

    buf = io.BytesIO()
    fastavro.schemaless_writer(
        buf, fastavro.parse_schema(codec.registry.get_by_id(codec.schema_id)), ev
    )
    return b"\x00" + struct.pack(">I", codec.schema_id) + buf.getvalue()


def poison_mix(
    rig: FaultRig, *, events: int, rate: float, share: float = 0.01, seed: int = 108
) -> FaultRow:
    """One poison record per 1/`share` valid events, cycling through every kind."""
    codec = Codec.for_contract(rig.args["input"]["contract"])
    limit = int(rig.args["input"].get("max_event_bytes", 1 << 20))
    batch_limit = int(rig.args["input"].get("max_decompressed_batch_bytes", 64 << 20))
    every = max(1, round(1 / share))

    def poison(i: int, ev: dict[str, Any]) -> Poison | None:
        if i % every != every // 2:
            return None
        kind = POISON_KINDS[(i // every) % len(POISON_KINDS)]
        return poison_record(kind, ev, codec, max_event_bytes=limit, max_batch_bytes=batch_limit)

    traffic = Traffic(rig, events, rate, seed=seed, poison=poison).start()
    _drain(rig, traffic, timeout_s=180, dlq=True)
    row = rig.tally.row(f"poison mix ({share:.0%})", traffic)
    kinds = sorted({p.kind for p in traffic.poison.values()})
    row.detail = f"{len(kinds)} kinds: {', '.join(kinds)}; {row.detail}".rstrip("; ")
    return row


# -- 7. action runner crash -----------------------------------------------------------------


def action_crash(rig: FaultRig, *, events: int, rate: float, seed: int = 109) -> FaultRow:
    """SIGKILL the action runner while webhook deliveries are in flight (held by the receiver).

    Lost = flagged events whose webhook never arrived; duplicates = deliveries beyond one per
    idempotency key (the event id); conflicting = keys delivered with different bodies.
    """
    rig.webhook.hold(after=2)
    traffic = Traffic(rig, events, rate, seed=seed, fraud_rate=0.08).start()
    deadline = time.monotonic() + 120
    while rig.webhook.held == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = rig.actions_pid()
    end = _kill(pid)
    rig.webhook.release()
    _drain(rig, traffic, timeout_s=180)
    ids = set(traffic.sent_at)
    flagged = rig.tally.flagged(ids)
    wait_until = time.monotonic() + 180
    while not flagged <= rig.webhook.keys().keys() and time.monotonic() < wait_until:
        time.sleep(0.2)
    got = {k: v for k, v in rig.webhook.keys().items() if k in ids}
    row = rig.tally.row("action runner SIGKILLed mid-batch", traffic)
    delivered_at = rig.webhook.first_delivered()
    before = [delivered_at[k] for k in flagged if k in delivered_at and traffic.sent_at[k] <= end]
    row.lost += len(flagged - got.keys())
    row.duplicates = sum(len(v) - 1 for v in got.values())
    row.conflicting += sum(len(set(v)) > 1 for v in got.values())
    row.recover_s = max([end, *before]) - end
    row.detail = (
        f"{len(flagged)} flagged, {len(got)} delivered, {sum(map(len, got.values()))} deliveries; "
        f"killed pid {pid} with {rig.webhook.held} deliveries in flight"
    )
    if not flagged:
        row.conflicting += 1  # nothing was flagged: the scenario proved nothing
    return row


#: name -> the scenario function, in the order of the fault table.
SCENARIOS: dict[str, Callable[..., FaultRow]] = {
    "kill_ingress": kill_ingress,
    "redis_down": redis_down,
    "redis_silent": redis_silent,
    "kill_model": kill_model,
    "overload": overload,
    "promotion": promotion,
    "poison_mix": poison_mix,
    "action_crash": action_crash,
}
