"""A TCP proxy that injects network faults, for the fault suite (bench/faults.py, e2e tests).

Clients connect to the proxy's port instead of the service's; the proxy relays bytes both
ways until told otherwise:

- :meth:`FaultProxy.down` closes every relayed connection and stops listening, so new
  connections are refused: to a client this is the service being stopped (its port closed);
  :meth:`FaultProxy.up` listens again on the same port, as a restarted service would.
- :meth:`FaultProxy.silence` keeps every connection open and accepts new ones, but
  swallows what clients send and answers nothing: a service that hangs without closing
  its sockets, which only client-side timeouts detect.

This is what Shopify's toxiproxy does with its ``down`` and ``timeout`` toxics; toxiproxy is a
Go server not installable from PyPI, so this is the ~100-line equivalent in asyncio, run in
its own thread so tests and benches can drive it from synchronous code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Literal

__all__ = ["FaultProxy", "relay"]

Mode = Literal["up", "down", "silent"]


class FaultProxy:
    """Relay 127.0.0.1:`port` to `target_host`:`target_port`, with faults on demand."""

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.mode: Mode = "up"
        self.connections = 0  # accepted since start
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control (any thread) -----------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def up(self) -> None:
        """Relay again (after :meth:`down` listen again on the same port)."""
        self._call(self._up())

    def down(self) -> None:
        """Close every connection and the listening socket: connects are refused."""
        self._call(self._down())

    def silence(self) -> None:
        """Accept and keep connections, relay nothing in either direction."""
        self._call(self._set("silent"))

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._down())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    # -- the relay (proxy thread) ----------------------------------------------------------

    async def _set(self, mode: Mode) -> None:
        self.mode = mode

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _up(self) -> None:
        self.mode = "up"
        if self._server is None:
            await self._listen()

    async def _down(self) -> None:
        self.mode = "down"
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()  # a reset, as a killed server's kernel sends
        for t in list(self._pipes):
            t.cancel()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(*self.target)
            self._writers.add(upstream)
            pipes = [
                asyncio.ensure_future(self._pipe(reader, upstream)),
                asyncio.ensure_future(self._pipe(up_reader, writer)),
            ]
            self._pipes.update(pipes)
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for p in pipes:
                p.cancel()
                self._pipes.discard(p)
        except OSError:
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    with contextlib.suppress(Exception):
                        w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while True:
            data = await src.read(65536)
            if not data:
                return
            if self.mode == "silent":
                continue  # swallowed: the other side waits until its own timeout
            dst.write(data)
            await dst.drain()


async def relay(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy `src` to `dst` until `src` ends or either side fails, then close `dst` (one
    direction of a plain TCP relay, e.g. a test listener in front of a broker)."""
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (OSError, ConnectionError):
        pass
    finally:
        dst.close()
