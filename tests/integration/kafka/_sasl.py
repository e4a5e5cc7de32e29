"""A SASL listener for a Tansu broker: a proxy on 127.0.0.1 that logs clients in
(SCRAM-SHA-256, SCRAM-SHA-512 with the scramp library's server side, and PLAIN) the way a
Kafka broker does, and only then forwards their bytes to the broker.

Tansu 0.6 as shipped cannot log anyone in (its object store keeps no SCRAM credentials and
it has no OAUTHBEARER validator), so the tests put this in front of a plain Tansu, as the TLS
test does with TLS. Before the login it answers SaslHandshake (v1) and SaslAuthenticate
(v0/v1) itself, relays ApiVersions to the broker, and closes the connection on anything else.
A refused login is answered as Kafka answers it: error 58, SaslAuthenticationFailed.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import Counter

from scramp import ScramMechanism

from raylane.testing.proxy import relay

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


async def _read_frame(r: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await r.readexactly(4))
    return await r.readexactly(size)


def _frame(correlation_id: int, body: bytes) -> bytes:
    payload = struct.pack(">i", correlation_id) + body
    return struct.pack(">i", len(payload)) + payload


def _string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


class _Login:
    """One connection's SASL exchange: step(client bytes) -> (error code, reply, done)."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.mechanism = mechanism
        self.users = users
        self.user: str | None = None  # who the client says it is
        self.scram = None
        self.first_done = False
        if mechanism != "PLAIN":
            m = ScramMechanism(mechanism)
            infos = {u: m.make_auth_info(pw) for u, pw in users.items()}

            def auth_info(user: str) -> tuple[bytes, bytes, bytes, int]:
                self.user = user
                return infos[user]  # KeyError: an unknown user, refused below

            self.scram = m.make_server(auth_info)

    def step(self, data: bytes) -> tuple[int, bytes, bool]:
        try:
            if self.scram is None:
                _, user, password = data.decode().split("\0")
                if self.users.get(user) != password:
                    return SASL_AUTHENTICATION_FAILED, b"", True
                self.user = user
                return 0, b"", True
            if not self.first_done:
                self.first_done = True
                self.scram.set_client_first(data.decode())
                return 0, self.scram.get_server_first().encode(), False
            self.scram.set_client_final(data.decode())
            return 0, self.scram.get_server_final().encode(), True
        except Exception:  # an unknown user, a wrong proof, a malformed message
            return SASL_AUTHENTICATION_FAILED, b"", True


class SaslProxy:
    """Logs clients in on 127.0.0.1 (its own event loop in a thread), then forwards to a
    plain port. `logins` counts successful logins by (mechanism, user); `refused` counts
    connections closed before a login."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.upstream = 0
        self.logins: Counter[tuple[str, str]] = Counter()
        self.refused = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    def start(self) -> int:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop
        ).result(10)
        return int(self.server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> bool:
        login: _Login | None = None
        while True:
            frame = await _read_frame(reader)
            api_key, version, correlation_id, client_id_len = struct.unpack(">hhih", frame[:10])
            body = frame[10 + max(client_id_len, 0) :]
            if api_key == API_VERSIONS:
                up_w.write(struct.pack(">i", len(frame)) + frame)
                reply = await _read_frame(up_r)
                writer.write(struct.pack(">i", len(reply)) + reply)
            elif api_key == SASL_HANDSHAKE and version == 1:
                (n,) = struct.unpack(">h", body[:2])
                mechanism = body[2 : 2 + n].decode()
                offered = struct.pack(">i", len(MECHANISMS)) + b"".join(map(_string, MECHANISMS))
                if mechanism not in MECHANISMS:
                    writer.write(
                        _frame(
                            correlation_id, struct.pack(">h", UNSUPPORTED_SASL_MECHANISM) + offered
                        )
                    )
                    await writer.drain()
                    return False
                login = _Login(mechanism, self.users)
                writer.write(_frame(correlation_id, struct.pack(">h", 0) + offered))
            elif api_key == SASL_AUTHENTICATE and version in (0, 1) and login is not None:
                (n,) = struct.unpack(">i", body[:4])
                error, data, done = login.step(body[4 : 4 + n])
                reply = struct.pack(">h", error)
                reply += _string(
                    None
                    if error == 0
                    else "Authentication failed during authentication due to invalid "
                    f"credentials with SASL mechanism {login.mechanism}"
                )
                reply += struct.pack(">i", len(data)) + data
                if version == 1:
                    reply += struct.pack(">q", 0)
                writer.write(_frame(correlation_id, reply))
                await writer.drain()
                if error:
                    return False
                if done:
                    self.logins[(login.mechanism, login.user or "")] += 1
                    return True
            else:
                return False
            await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        try:
            ok = await self._login(reader, writer, up_r, up_w)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, struct.error):
            ok = False
        if not ok:
            self.refused += 1
            writer.close()
            up_w.close()
            return

        await asyncio.gather(relay(reader, up_w), relay(up_r, writer))
