"""The rig of the fault suite: a deployed pipeline, traffic, a tally of what came out.

:class:`FaultRig` deploys a serve config's pipeline on local Ray with its own topics, its
own registered model name (so a promotion scenario never moves the real aliases), Redis
behind a :class:`~raylane.testing.proxy.FaultProxy`, and a webhook action whose receiver
(:class:`WebhookReceiver`) records every delivery. :class:`Traffic` produces valid payments
at a rate (with poison records mixed in, if asked) from a thread while a scenario injects its
fault; :class:`Tally` reads the scored topic and the DLQ from a thread and answers "which
event ids came out, when, scored by which version". The scenarios are in
:mod:`raylane.testing.scenarios`; ``bench/faults.py`` runs them at full size and
``tests/e2e/test_faults.py`` runs short versions of the same functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http.server
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from raylane.contracts import Codec
from raylane.errors import StackError
from raylane.kafka.client import connection
from raylane.kafka.deadletters import H_CLASS, H_OFFSET, H_PARTITION
from raylane.settings import ENV_REDIS, Settings
from raylane.testing.proxy import FaultProxy
from raylane.testing.simulator import World

log = logging.getLogger(__name__)

__all__ = [
    "FaultRig",
    "FaultRow",
    "Poison",
    "Tally",
    "Traffic",
    "WebhookReceiver",
    "use_own_model",
]


@dataclass
class FaultRow:
    """One line of the fault table.

    ``lost`` counts valid events never scored, poison records not found on the DLQ, and (for
    action scenarios) flagged events whose webhook never arrived. ``duplicates`` counts
    outputs beyond the first per event id (at-least-once redelivery); ``conflicting`` counts
    event ids whose repeated outputs disagree (decision or model version for scores, body
    for webhooks): the duplicates that de-duplication by event id cannot make harmless.
    ``recover_s`` is the time from the end of the fault (a kill, or the dependency coming
    back) until every event produced before that moment had been scored.
    """

    scenario: str
    produced: int
    scored: int
    lost: int
    duplicates: int
    conflicting: int
    dlq: int
    expected_dlq: int
    recover_s: float | None
    detail: str = ""
    wrong_class: int = 0  # poison records dead-lettered under another error class than their kind's

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.conflicting == 0
            and self.wrong_class == 0
            and self.dlq == self.expected_dlq
            and self.scored == self.produced
        )


@dataclass
class Poison:
    """One hostile record: its bytes, and the DLQ error class it must get."""

    kind: str
    value: bytes
    expect: str
    key: bytes | None = b"poison"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    compress: bool = False
    #: sent gzip-compressed in a record batch of its own (its dead letter is the batch's)
    bomb: bool = False


# -- tally ----------------------------------------------------------------------------------


class Tally:
    """Reads the scored topic and the input DLQ from the start, in a thread, until closed."""

    def __init__(self, bootstrap: str, scored_topic: str, dlq_topic: str) -> None:
        self.bootstrap = bootstrap
        self.scored_topic = scored_topic
        self.dlq_topic = dlq_topic
        self.codec = Codec.for_contract("payments.scored")
        # event_id -> [(received at, model_version, decision)]
        self.scored: dict[str, list[tuple[float, str, str]]] = {}
        # (source partition, source offset) -> error class
        self.dlq: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Tally:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the tally's consumer did not start in 60 s")
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    async def _run(self) -> None:
        c = connection(self.bootstrap).consumer(
            self.scored_topic,
            self.dlq_topic,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        await c.start()
        self._ready.set()
        try:
            while not self._stop.is_set():
                batch = await c.getmany(timeout_ms=200, max_records=10_000)
                now = time.time()
                with self._lock:
                    for tp, msgs in batch.items():
                        for m in msgs:
                            if tp.topic == self.scored_topic:
                                r = self.codec.decode(m.value)
                                self.scored.setdefault(r["event_id"], []).append(
                                    (now, str(r["model_version"]), str(r["decision"]))
                                )
                            else:
                                h = {k: v.decode("utf-8", "replace") for k, v in m.headers}
                                where = (int(h.get(H_PARTITION, -1)), int(h.get(H_OFFSET, -1)))
                                self.dlq[where] = h.get(H_CLASS, "")
        finally:
            await c.stop()

    def first_seen(self, ids: set[str]) -> dict[str, float]:
        with self._lock:
            return {i: self.scored[i][0][0] for i in ids if i in self.scored}

    def flagged(self, ids: set[str]) -> set[str]:
        """Event ids among `ids` whose (first) score was a flag."""
        with self._lock:
            return {i for i in ids if i in self.scored and self.scored[i][0][2] == "flagged"}

    def versions(self, ids: set[str]) -> set[str]:
        """Every model version named by an output of the events `ids`."""
        with self._lock:
            return {v for i in ids for _, v, _ in self.scored.get(i, [])}

    def wait(
        self,
        ids: set[str],
        timeout_s: float,
        dlq: set[tuple[int, int]] = frozenset(),  # type: ignore[assignment]
    ) -> bool:
        """Block until every id is scored and every DLQ coordinate is there (or time out)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if all(i in self.scored for i in ids) and dlq <= self.dlq.keys():
                    return True
            time.sleep(0.2)
        return False

    def row(
        self,
        scenario: str,
        traffic: Traffic,
        *,
        fault_end: list[float] | None = None,
        detail: str = "",
    ) -> FaultRow:
        """The table row for what `traffic` produced, as far as the outputs show now."""
        ids = set(traffic.sent_at)
        with self._lock:
            mine = {i: list(self.scored[i]) for i in ids if i in self.scored}
            dlq = {w: c for w, c in self.dlq.items() if w in traffic.poison}
        dup = sum(len(v) - 1 for v in mine.values())
        conflicting = sum(len({(ver, dec) for _, ver, dec in v}) > 1 for v in mine.values())
        wrong = {
            w: (traffic.poison[w].kind, c) for w, c in dlq.items() if c != traffic.poison[w].expect
        }
        lost = len(ids - mine.keys()) + len(traffic.poison.keys() - dlq.keys())
        recover: float | None = None
        for end in fault_end or []:
            before = [mine[i][0][0] for i, t in traffic.sent_at.items() if t <= end and i in mine]
            r = max([end, *before]) - end
            recover = r if recover is None else max(recover, r)
        if wrong:
            detail = f"{detail}; wrong DLQ class {sorted(wrong.values())[:5]}".lstrip("; ")
        return FaultRow(
            scenario=scenario,
            produced=len(ids),
            scored=len(mine),
            lost=lost,
            duplicates=dup,
            conflicting=conflicting,
            dlq=len(dlq),
            expected_dlq=len(traffic.poison),
            recover_s=recover,
            detail=detail,
            wrong_class=len(wrong),
        )


# -- traffic --------------------------------------------------------------------------------


class Traffic:
    """Valid payments at `rate(elapsed_s)` per second from a thread; poison mixed in if given.

    Each event's ``event_time`` is set to the moment it is sent (a live stream), and its send
    time is kept (``sent_at``) for the recovery figures. ``poison(i)`` is asked after each
    valid event; a record it returns is sent as raw bytes and remembered by its Kafka
    coordinates, which its dead letter must name.

    Events leave in chunks every `tick_s` (50 ms), so a partition gets at most one record
    batch per tick (2,000 in a 100 s scenario). The embedded broker (Tansu 0.6, memory
    storage) slows down and then stops serving fetches once a partition holds 10,000 to
    15,000 record batches (``bench/broker_fetch.py``; docs/reliability.md), which a
    one-event-per-batch stream reaches within the full-size scenarios; that is the test
    broker's limit, not the pipeline's, and this keeps the suite measuring the pipeline.
    """

    #: seconds between chunks; at most one record batch per partition each
    tick_s = 0.05

    def __init__(
        self,
        rig: FaultRig,
        n: int,
        rate: float | Callable[[float], float],
        *,
        seed: int,
        fraud_rate: float = 0.01,
        poison: Callable[[int, dict[str, Any]], Poison | None] | None = None,
    ) -> None:
        self.rig = rig
        self.n = n
        self.rate = rate if callable(rate) else (lambda _t, r=float(rate): r)
        self.events = [
            le.event for le in rig.world.stream(fraud_rate=fraud_rate, seed=seed).take(n)
        ]
        self.poison_fn = poison
        self.sent = 0
        self.sent_at: dict[str, float] = {}
        self.poison: dict[tuple[int, int], Poison] = {}
        self.error: BaseException | None = None
        self.started = 0.0
        self.finished = 0.0
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def join(self, timeout_s: float = 600) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"traffic still running after {timeout_s:g} s ({self.sent} sent)")
        if self.error is not None:
            raise RuntimeError(f"traffic failed after {self.sent} events: {self.error!r}")

    def wait_sent(self, k: int) -> None:
        """Block until `k` valid events are sent."""
        while self.sent < k and self._thread.is_alive():
            time.sleep(0.02)

    def _main(self) -> None:
        try:
            asyncio.run(self._send_all())
        except BaseException as e:
            self.error = e

    async def _send_all(self) -> None:
        from raylane.kafka.producer import EventProducer

        rig = self.rig
        codec = Codec.for_contract(rig.args["input"]["contract"])
        conn = connection(rig.bootstrap)
        raw = conn.producer(max_request_size=8 << 20, linger_ms=2)
        gz = conn.producer(max_request_size=8 << 20, compression_type="gzip")
        # a bomb inflates past any request size: the client checks the uncompressed size
        big = conn.producer(max_request_size=1 << 30, compression_type="gzip")
        await raw.start()
        await gz.start()
        await big.start()
        pending: list[tuple[asyncio.Future[Any], Poison]] = []
        acks: list[asyncio.Future[Any]] = []
        try:
            async with EventProducer(
                rig.bootstrap,
                rig.args["input"]["topic"],
                codec,
                key_field=rig.args["input"]["key_field"],
            ) as prod:
                self.started = t0 = last = time.monotonic()
                due = 0.0  # events the schedule owes so far
                i = 0
                while i < self.n:
                    now = time.monotonic()
                    due += self.rate(now - t0) * (now - last)
                    last = now
                    take = min(int(due), self.n - i)
                    if take > 0:
                        due -= take
                        chunk = self.events[i : i + take]
                        sent_ms = int(time.time() * 1000)
                        for ev in chunk:
                            ev["event_time"] = sent_ms
                        acks += await prod.send_many(chunk, wait=False)
                        for ev in chunk:
                            self.sent_at[ev["event_id"]] = sent_ms / 1000
                        for j, ev in enumerate(chunk):
                            p = self.poison_fn(i + j, ev) if self.poison_fn else None
                            if p is not None:
                                via = big if p.bomb else gz if p.compress else raw
                                fut = await via.send(
                                    rig.args["input"]["topic"],
                                    p.value,
                                    key=p.key,
                                    headers=p.headers,
                                )
                                if p.bomb:  # acknowledged before the next send: a batch of one
                                    await fut
                                pending.append((fut, p))
                        i += take
                        self.sent = i
                    await asyncio.sleep(self.tick_s)
                await prod.flush()
            await asyncio.gather(*acks)  # a valid event the broker refused is the driver's fault
            for fut, p in pending:
                md = await fut
                self.poison[(md.partition, md.offset)] = p
            self.finished = time.monotonic()
        finally:
            await raw.stop()
            await gz.stop()
            await big.stop()


# -- webhook receiver -----------------------------------------------------------------------


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 recording every delivery's idempotency key and body.

    ``hold(after)`` answers `after` more requests, then makes the next ones wait (up to 30 s)
    before answering, so a scenario can kill the action runner while a handler is in flight;
    ``release()`` lets them go.
    """

    def __init__(self) -> None:
        self.deliveries: list[tuple[float, str, bytes]] = []
        self.held = 0
        self._passes = 0
        self._hold = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                key = self.headers.get("idempotency-key", "")
                with receiver._lock:
                    receiver.deliveries.append((time.time(), key, body))
                    wait = receiver._hold.is_set() and receiver._passes <= 0
                    receiver._passes -= 1
                    receiver.held += wait
                if wait:
                    receiver._release.wait(30)
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def hold(self, after: int = 0) -> None:
        with self._lock:
            self._passes = after
            self.held = 0
        self._release.clear()
        self._hold.set()

    def release(self) -> None:
        self._hold.clear()
        self._release.set()

    def first_delivered(self) -> dict[str, float]:
        """When each idempotency key was first delivered."""
        out: dict[str, float] = {}
        with self._lock:
            for t, k, _ in self.deliveries:
                out.setdefault(k, t)
        return out

    def keys(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        with self._lock:
            for _, k, body in self.deliveries:
                out.setdefault(k, []).append(body)
        return out

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


# -- the rig --------------------------------------------------------------------------------


def _via_proxy(redis_url: str, port: int) -> str:
    parts = urlsplit(redis_url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{port}", parts.path, "", ""))


class FaultRig:
    """A pipeline deployed for fault injection; see the module docstring."""

    def __init__(
        self,
        config: Path,
        args: dict[str, Any],
        running: Any,
        proxy: FaultProxy,
        webhook: WebhookReceiver,
        tally: Tally,
        world: World,
        versions: tuple[str, str],
    ) -> None:
        self.config = config
        self.args = args
        self.running = running
        self.proxy = proxy
        self.webhook = webhook
        self.tally = tally
        self.world = world
        self.versions = versions
        self.bootstrap = Settings.load().kafka_bootstrap

    @classmethod
    @contextlib.contextmanager
    def deploy(
        cls,
        config: Path,
        *,
        ingress_replicas: int = 2,
        claim_ttl_s: int = 5,
        keep_topics: bool = False,
        placement: str | None = "deployment",
    ) -> Iterator[FaultRig]:
        """Deploy `config`'s pipeline (bootstrapped beforehand) with faults wired in, on
        topics of its own, deleted when the rig closes unless `keep_topics` (the embedded
        broker holds every record in memory and slows as partitions fill: a rig per
        scenario keeps one scenario's backlog from stalling the next). Models run in
        deployments of their own unless `placement` says otherwise (None: as the config
        says): the suite SIGKILLs a model replica."""
        from raylane.kafka.admin import delete_topics, ensure_topics
        from raylane.serving.runtime import run_pipeline
        from raylane.testing.kafka import isolated_args, isolated_topics, place_models

        s = Settings.load()
        unique = uuid.uuid4().hex[:8]
        meta = json.loads((s.home / "world-fraud.json").read_text())
        world = World(seed=meta["seed"], n_users=meta["users"])
        target = urlsplit(s.redis_url)
        proxy = FaultProxy(target.hostname or "127.0.0.1", target.port or 6379).start()
        webhook = WebhookReceiver()
        saved = os.environ.get(ENV_REDIS)
        tally: Tally | None = None
        topics: list[str] = []
        try:
            args = isolated_args(config, f"faults-{unique}", num_replicas=ingress_replicas)
            place_models(args, placement)
            args["name"] = f"faults_{unique}"
            args["input"]["max_event_age_s"] = 86_400.0
            # small enough that the poison mix's gzip bombs stay cheap to make
            args["input"]["max_decompressed_batch_bytes"] = 4 << 20
            versions = use_own_model(
                args,
                s.mlflow_tracking_uri,
                f"faults_{unique}",
                min_samples=200,
                audit_topic=f"models.promoted.faults-{unique}",
            )
            actions = copy.deepcopy(args["actions"])
            actions["claim_ttl_s"] = claim_ttl_s
            actions["topics"][0]["handlers"].append(
                {"type": "webhook", "name": "notify", "url": webhook.url, "backoff_s": 0.2}
            )
            args["actions"] = actions
            topics = isolated_topics(args)
            ensure_topics(s.kafka_bootstrap, topics, partitions=4)
            # every replica, and this process's promotion gates, reach Redis through the proxy
            os.environ[ENV_REDIS] = _via_proxy(s.redis_url, proxy.port)
            tally = Tally(
                s.kafka_bootstrap,
                args["outputs"]["scored"]["topic"],
                args["input"]["topic"] + ".dlq",
            ).start()
            with run_pipeline(config, overrides=args) as running:
                running.wait_assigned()
                yield cls(config, args, running, proxy, webhook, tally, world, versions)
        finally:
            if saved is None:
                os.environ.pop(ENV_REDIS, None)
            else:
                os.environ[ENV_REDIS] = saved
            if tally is not None:
                tally.close()
            webhook.close()
            proxy.close()
            if topics and not keep_topics:
                try:
                    delete_topics(s.kafka_bootstrap, topics)
                except StackError as e:  # the rig's result stands; say what was left behind
                    log.warning("fault rig: %s", e)

    # -- process handles -------------------------------------------------------------------

    def ingress_pid(self) -> int:
        return _pid(self.running.ingress.stats)

    def model_pid(self, label: str = "champion") -> int:
        return _pid(self.running.model(label).info)

    def actions_pid(self) -> int:
        from ray import serve

        h = serve.get_deployment_handle(
            f"{self.args['name']}-actions", app_name=self.running.app_name
        )
        return _pid(h.stats)


def _pid(method: Any, timeout_s: float = 600) -> int:
    """The pid of a replica that answers `method`, waiting while every replica is restarting
    (killed in a row faster than they start, none may answer for a while)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return int(method.remote().result(timeout_s=30)["pid"])
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def use_own_model(
    args: dict[str, Any], tracking_uri: str, name: str, *, min_samples: int, audit_topic: str
) -> tuple[str, str]:
    """Point pipeline `args` at a copy of the fraud models, so promoting never moves the real
    aliases: fraud@champion and fraud@challenger are registered again as versions 1 and 2 of
    `name`, the replicas poll its aliases every second, and the promotion gates only need
    `min_samples` comparisons (any agreement, delta and latency pass). Returns the versions."""
    from mlflow import MlflowClient

    from raylane.registry import register

    c = MlflowClient(tracking_uri)
    champ = c.get_model_version_by_alias("fraud", "champion")
    chall = c.get_model_version_by_alias("fraud", "challenger")
    v1 = register(str(champ.source), name, alias="champion", tracking_uri=tracking_uri)
    v2 = register(str(chall.source), name, alias="challenger", tracking_uri=tracking_uri)
    args["models"]["primary"].update(uri=f"models:/{name}@champion", reload_poll_s=1)
    args["models"]["shadows"][0].update(uri=f"models:/{name}@challenger")
    args["promotion"].update(
        min_samples=min_samples,
        min_agreement=0.5,
        max_p95_abs_delta=1.0,
        max_latency_p99_ratio=100.0,
        require_no_drift_alert=False,
        audit_topic=audit_topic,
    )
    return str(v1.version), str(v2.version)
