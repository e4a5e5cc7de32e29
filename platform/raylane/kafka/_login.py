"""A refused SASL login, as an error that names the user, the mechanism and the fix.

aiokafka 0.14 hides a refused login two ways. A broker that answers with an error code
(Kafka's ``SaslAuthenticationFailed``, or a mechanism it does not offer) is logged and
reported as "Unable to bootstrap", like a broker that is down. A broker that refuses inside
the last SCRAM message, ``e=invalid-proof`` or ``e=unknown-user`` with error code 0 (Tansu
does), makes aiokafka raise a bare ``KeyError('v')``. The clients :mod:`raylane.kafka.client`
makes turn both into a :class:`~raylane.errors.ConfigError`; for the first, one more
connection asks the first bootstrap server why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from raylane.errors import ConfigError
from raylane.kafka.security import ENV_SECURITY, KafkaSecurity

__all__ = ["login_errors"]

_PROBE_TIMEOUT_MS = 10_000


def _raised_by_scram(exc: BaseException) -> bool:
    """Whether `exc` was raised inside aiokafka's SCRAM exchange (not any KeyError)."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__name__") == "aiokafka.conn" and (
            frame.f_code.co_qualname.startswith("ScramAuthenticator.")
        ):
            return True
        tb = tb.tb_next
    return False


def _refused(security: KafkaSecurity, bootstrap: str, why: str) -> ConfigError:
    who = f"user {security.sasl_username!r} " if security.sasl_username else ""
    fix = (
        ENV_SECURITY["oauth_token_file"]
        if security.sasl_mechanism == "OAUTHBEARER"
        else f"{ENV_SECURITY['sasl_username']}, {ENV_SECURITY['sasl_password']} "
        f"(or {ENV_SECURITY['sasl_password_file']})"
    )
    return ConfigError(
        f"Kafka SASL authentication failed for {who}with mechanism {security.sasl_mechanism} "
        f"at {bootstrap}: {why}; check {fix} and {ENV_SECURITY['sasl_mechanism']}",
        stage="config",
    )


async def _ask_why(security: KafkaSecurity, bootstrap: str) -> ConfigError | None:
    """Log in once to the first bootstrap server: the refusal aiokafka logged, or None."""
    hosts = collect_hosts(bootstrap, randomize=False)
    if not hosts:
        return None
    host, port, _ = hosts[0]
    try:
        conn = await create_conn(
            host, port, request_timeout_ms=_PROBE_TIMEOUT_MS, **security.client_options()
        )
    except UnsupportedSaslMechanismError as e:
        return _refused(security, bootstrap, f"the broker does not offer it ({e})")
    except SaslAuthenticationFailed as e:
        return _refused(security, bootstrap, f"the broker refused the login ({e})")
    except (KeyError, ValueError) as e:
        return (
            _refused(security, bootstrap, "the broker refused the login")
            if _raised_by_scram(e)
            else None
        )
    except Exception:  # any other failure: the original error stands
        return None
    conn.close()
    return None


@asynccontextmanager
async def login_errors(security: KafkaSecurity, bootstrap: str) -> AsyncIterator[None]:
    """Re-raise a SASL login the broker refused, while starting a client, as a ConfigError."""
    try:
        yield
    except (KeyError, ValueError) as e:
        if security.sasl_mechanism is None or not _raised_by_scram(e):
            raise
        raise _refused(security, bootstrap, "the broker refused the login") from e
    except KafkaConnectionError as e:
        if security.sasl_mechanism is None:
            raise
        why = await _ask_why(security, bootstrap)
        if why is None:
            raise
        raise why from e
