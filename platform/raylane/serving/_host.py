"""The base of every Serve deployment that hosts one plain asyncio loop.

The Kafka ingress, the drift monitor and the action runner are each a loop object
(``start`` / ``run`` / ``close`` / ``stats``) that runs for the replica's lifetime. A
dead loop makes the replica unhealthy, so Serve replaces it; an ingress's uncommitted
batch is then re-read by its consumer group (at-least-once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import logging.handlers
import os
from typing import Any

from raylane.config import PipelineConfig
from raylane.serving._loopback import bind_serve_grpc_to_loopback

__all__ = ["LoopHost", "route_logs_to_serve"]

log = logging.getLogger("raylane.serving")

#: level of the Kafka client's (aiokafka's) records in replica logs; WARNING unless set
ENV_KAFKA_LOG_LEVEL = "RAYLANE_KAFKA_LOG_LEVEL"


def route_logs_to_serve() -> None:
    """Send the ``raylane`` loggers' records through the ``ray.serve`` logger's handlers.

    Ray Serve writes only its own logger to the replica's log file
    (``logs/serve/replica_<app>_<deployment>_<id>.log``) and, unless the throughput-optimized
    mode turned it off, to stderr; records of any other logger reach neither. Without this the
    ingress's warnings (a failing dependency, a poison record isolated) are dropped.
    """
    serve_logger = logging.getLogger("ray.serve")
    ours = logging.getLogger("raylane")
    for h in serve_logger.handlers:
        # Serve's throughput-optimized mode buffers its file handler behind a MemoryHandler
        # that flushes every 1,000 records or on ERROR: a warning would sit there (and die
        # with a killed replica). raylane's records are few; they go straight to the file.
        target = h.target if isinstance(h, logging.handlers.MemoryHandler) else h
        if target is not None and target not in ours.handlers:
            ours.addHandler(target)
    if serve_logger.handlers:
        ours.propagate = False  # the root logger's handler would print them a second time
        ours.setLevel(serve_logger.getEffectiveLevel())  # the serve config's log_level
    # the Kafka client's own warnings (commit failures, rebalances that fail, lost
    # coordinators) say why a replica stopped consuming; $RAYLANE_KAFKA_LOG_LEVEL=INFO adds
    # every rebalance step
    kafka = logging.getLogger("aiokafka")
    for h in ours.handlers:
        if h not in kafka.handlers:
            kafka.addHandler(h)
    if ours.handlers:
        kafka.propagate = False
        kafka.setLevel(os.environ.get(ENV_KAFKA_LOG_LEVEL, "WARNING").upper())


class LoopHost:
    """Runs the loop that :meth:`_build` returns, for the replica's lifetime."""

    kind = "loop"
    #: How long a replica being stopped lets its loop flush and commit.
    close_timeout_s = 10.0

    def __init__(self, args: dict[str, Any], env: dict[str, str]) -> None:
        os.environ.update(env)
        bind_serve_grpc_to_loopback()
        route_logs_to_serve()
        self.cfg = PipelineConfig.from_args(args)
        from raylane.monitoring.tracing import configure

        if configure(f"{self.cfg.name}-{self.kind}"):  # OTEL_* in the replica's environment
            log.warning("%s of %s: OpenTelemetry tracing on", self.kind, self.cfg.name)
        self._loop: Any = None
        self._error: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._main())

    async def _build(self) -> Any:
        raise NotImplementedError

    async def _main(self) -> None:
        try:
            from raylane.monitoring.metrics import serve_metrics
            from raylane.settings import Settings

            serve_metrics(Settings.load().home, f"{self.cfg.name}-{self.kind}")
            self._loop = await self._build()
            await self._loop.start()
            await self._loop.run()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self._error = e
            log.exception("%s loop of %s died", self.kind, self.cfg.name)
            raise

    async def check_health(self) -> None:
        """Serve calls this periodically; raising makes Serve restart the replica."""
        if self._task.done():
            raise RuntimeError(f"{self.kind} loop stopped: {self._error!r}")
        check = getattr(self._loop, "check_health", None)
        if check is not None:
            check()  # a loop that owns pending input and commits nothing is not healthy

    async def stats(self) -> dict[str, Any]:
        raw: Any = self._loop.stats if self._loop is not None else {}
        # the ingress keeps a dataclass, the drift monitor and the action runner a dict
        is_record = dataclasses.is_dataclass(raw) and not isinstance(raw, type)
        s = dataclasses.asdict(raw) if is_record else dict(raw)
        s.pop("state", None)
        s["running"] = not self._task.done()
        if self._error is not None:
            s["error"] = f"{type(self._error).__name__}: {self._error}"
        s["pid"] = os.getpid()
        return s

    async def debug(self) -> dict[str, Any]:
        """Where the loop's tasks wait, and its own state (``debug()``, when it has one):
        what an operator reads when a replica is slow or stuck."""
        from raylane.ingest.consumer import _task_stacks

        out: dict[str, Any] = {"pid": os.getpid(), "tasks": _task_stacks()}
        state = getattr(self._loop, "debug", None)
        if state is not None:
            out.update(state())
        return out

    async def __call__(self, request: Any = None) -> dict[str, Any]:
        return await self.stats()

    async def __del__(self) -> None:
        if self._loop is not None:
            try:
                await asyncio.wait_for(self._loop.close(), timeout=self.close_timeout_s)
            except Exception:
                log.exception("%s loop of %s did not close cleanly", self.kind, self.cfg.name)
        self._task.cancel()
