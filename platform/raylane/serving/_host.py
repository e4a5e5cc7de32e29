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
import os
from typing import Any

from raylane.config import PipelineConfig
from raylane.serving._loopback import bind_serve_grpc_to_loopback

__all__ = ["LoopHost"]

log = logging.getLogger("raylane.serving")


class LoopHost:
    """Runs the loop that :meth:`_build` returns, for the replica's lifetime."""

    kind = "loop"
    #: How long a replica being stopped lets its loop flush and commit.
    close_timeout_s = 10.0

    def __init__(self, args: dict[str, Any], env: dict[str, str]) -> None:
        os.environ.update(env)
        bind_serve_grpc_to_loopback()
        self.cfg = PipelineConfig.from_args(args)
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
        s["pid"] = os.getpid()
        return s

    async def __call__(self, request: Any = None) -> dict[str, Any]:
        return await self.stats()

    async def __del__(self) -> None:
        if self._loop is not None:
            try:
                await asyncio.wait_for(self._loop.close(), timeout=self.close_timeout_s)
            except Exception:
                log.exception("%s loop of %s did not close cleanly", self.kind, self.cfg.name)
        self._task.cancel()
