"""Redis plumbing shared by the feature readers: clients, one-round-trip batches, errors.

:func:`roundtrip` writes a batch of commands packed by hiredis in one write and
reads all their replies: one network round trip, without redis-py's per-command
pipeline bookkeeping (which costs ~10 µs per command in pure Python).

Every Redis failure on the feature path becomes a retriable
:class:`~raylane.errors.DependencyError` naming the (password-masked) URL, so the
ingress breaker pauses partitions instead of scoring on missing features.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from raylane.errors import DependencyError
from raylane.redis_clients import connect, mask_url

__all__ = ["client_url", "connect", "mask_url", "redis_errors", "roundtrip"]


def client_url(client: aioredis.Redis) -> str:
    """A masked ``redis://host:port/db`` description of `client`'s connection pool."""
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return f"unix://{kw['path']}"
    return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


@contextmanager
def redis_errors(what: str, url: str) -> Iterator[None]:
    """Re-raise Redis / socket failures inside the block as DependencyError naming `url`."""
    try:
        yield
    except (RedisError, OSError, TimeoutError) as e:
        raise DependencyError(
            f"{what}: Redis at {mask_url(url)} failed ({type(e).__name__}: {e}); check that it "
            "is up (`raylane dev up`) and that REDIS_URL points at it",
            stage="features",
        ) from e


async def roundtrip(client: aioredis.Redis, payload: Sequence[bytes], n_replies: int) -> list[Any]:
    """Send pre-packed commands in one write, read their `n_replies` replies (raw bytes).

    Every reply is read before an error reply is raised, so the connection goes back
    to the pool clean; a broken connection is dropped. A connection that fails before
    any reply arrives is retried once on a fresh one (the callers' commands are reads
    or idempotent scripts, so a replay is harmless).
    """
    pool = client.connection_pool
    for attempt in (0, 1):
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(payload, check_health=False)
            replies: list[Any] = []
            error: ResponseError | None = None
            for _ in range(n_replies):
                try:
                    replies.append(await conn.read_response(disable_decoding=True))
                except ResponseError as e:
                    error = error or e
                    replies.append(e)
            if error is not None:
                raise error
            return replies
        except (RedisConnectionError, RedisTimeoutError):
            await conn.disconnect()
            if attempt:
                raise
        except ResponseError:
            raise
        except BaseException:
            await conn.disconnect()  # replies may be left unread (e.g. cancelled)
            raise
        finally:
            await pool.release(conn)
    raise AssertionError("unreachable")
