"""Kafka TLS and SASL settings, read once from the environment by the client factory.

A replica reads these variables from its own environment (a Kubernetes Secret, the
shell that started local Ray); they never travel in Serve init args, and the password is
a :class:`pydantic.SecretStr`, so no repr or log line shows it. The variables are listed
in :mod:`raylane.kafka.client`.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from aiokafka.abc import AbstractTokenProvider
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from raylane.errors import ConfigError

__all__ = ["ENV_SECURITY", "KafkaSecurity"]

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]

#: Field of :class:`KafkaSecurity` -> the environment variable it is read from.
ENV_SECURITY: dict[str, str] = {
    "security_protocol": "RAYLANE_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "RAYLANE_KAFKA_SASL_MECHANISM",
    "sasl_username": "RAYLANE_KAFKA_SASL_USERNAME",
    "sasl_password": "RAYLANE_KAFKA_SASL_PASSWORD",
    "sasl_password_file": "RAYLANE_KAFKA_SASL_PASSWORD_FILE",
    "oauth_token_file": "RAYLANE_KAFKA_OAUTH_TOKEN_FILE",
    "ssl_cafile": "RAYLANE_KAFKA_SSL_CAFILE",
    "ssl_certfile": "RAYLANE_KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "RAYLANE_KAFKA_SSL_KEYFILE",
    "ssl_check_hostname": "RAYLANE_KAFKA_SSL_CHECK_HOSTNAME",
}

_TLS: frozenset[str] = frozenset({"SSL", "SASL_SSL"})
_SASL: frozenset[str] = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
_SASL_FIELDS = (
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "sasl_password_file",
    "oauth_token_file",
)
_FILES = ("sasl_password_file", "oauth_token_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile")


def _var(field: str) -> str:
    return ENV_SECURITY[field]


class _FileTokenProvider(AbstractTokenProvider):
    """OAUTHBEARER tokens read from a file on every (re)authentication, so a sidecar or a
    projected service-account token can rotate it without restarting the replica."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def token(self) -> str:
        return self.path.read_text().strip()

    def extensions(self) -> dict[str, str]:
        return {}


class KafkaSecurity(BaseModel):
    """How raylane's Kafka clients authenticate and encrypt (TLS, SASL); PLAINTEXT by default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    security_protocol: Protocol = Field(
        default="PLAINTEXT",
        description="Kafka security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    sasl_mechanism: Mechanism | None = Field(
        default=None,
        description="SASL mechanism for the SASL_* protocols: PLAIN, SCRAM-SHA-256, "
        "SCRAM-SHA-512 or OAUTHBEARER.",
    )
    sasl_username: str | None = Field(
        default=None, description="SASL user (PLAIN / SCRAM); an API key on Confluent Cloud."
    )
    sasl_password: SecretStr | None = Field(
        default=None,
        description="SASL password (PLAIN / SCRAM), or read from sasl_password_file; never shown.",
    )
    sasl_password_file: Path | None = Field(
        default=None, description="File whose content (stripped) is the SASL password."
    )
    oauth_token_file: Path | None = Field(
        default=None,
        description="OAUTHBEARER: file holding the bearer token, re-read on every login.",
    )
    ssl_cafile: Path | None = Field(
        default=None,
        description="PEM CA bundle that signs the brokers' certificates (system CAs if unset).",
    )
    ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate, for brokers that require mTLS."
    )
    ssl_keyfile: Path | None = Field(
        default=None, description="PEM private key of ssl_certfile (if not inside it)."
    )
    ssl_check_hostname: bool = Field(
        default=True,
        description="Check that the broker's certificate names the host connected to.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        proto = self.security_protocol
        p = _var("security_protocol")
        if proto in _SASL and self.sasl_mechanism is None:
            raise ValueError(
                f"{p}={proto} needs a SASL mechanism; set {_var('sasl_mechanism')} to PLAIN, "
                "SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
            )
        if proto not in _SASL:
            sasl_set = [_var(f) for f in _SASL_FIELDS if getattr(self, f) is not None]
            if sasl_set:
                raise ValueError(
                    f"{', '.join(sasl_set)} set but {p}={proto} does not use SASL; set {p} to "
                    "SASL_SSL (or SASL_PLAINTEXT), or unset them"
                )
        if proto not in _TLS:
            tls_set = [
                _var(f)
                for f in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
                if getattr(self, f) is not None
            ]
            if tls_set:
                raise ValueError(
                    f"{', '.join(tls_set)} set but {p}={proto} does not use TLS; set {p} to "
                    "SSL or SASL_SSL, or unset them"
                )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError(
                f"{_var('ssl_keyfile')} is set without {_var('ssl_certfile')}; a client key "
                "needs its certificate"
            )
        mech = self.sasl_mechanism
        if mech in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            if not self.sasl_username:
                raise ValueError(
                    f"{_var('sasl_mechanism')}={mech} needs {_var('sasl_username')}; set it"
                )
            if (self.sasl_password is None) == (self.sasl_password_file is None):
                raise ValueError(
                    f"{_var('sasl_mechanism')}={mech} needs exactly one of "
                    f"{_var('sasl_password')} and {_var('sasl_password_file')}"
                )
        if mech == "OAUTHBEARER" and self.oauth_token_file is None:
            raise ValueError(
                f"{_var('sasl_mechanism')}=OAUTHBEARER needs {_var('oauth_token_file')} "
                "(a file holding the bearer token)"
            )
        for f in _FILES:
            path = getattr(self, f)
            if path is not None and not path.is_file():
                raise ValueError(f"{_var(f)}={path} is not a readable file; fix the path")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """The settings from `environ` (default ``os.environ``); a ConfigError names the
        variable and the fix."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for field, var in ENV_SECURITY.items():
            value = env.get(var, "").strip()
            if not value:
                continue
            if field in ("security_protocol", "sasl_mechanism"):
                value = value.upper()
            raw[field] = value
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            problems = []
            for err in e.errors():
                loc = [str(x) for x in err["loc"]]
                field = loc[0] if loc else ""
                msg = str(err["msg"]).removeprefix("Value error, ")
                if field in ENV_SECURITY:
                    shown = "'***'" if field == "sasl_password" else repr(raw.get(field))
                    problems.append(f"{ENV_SECURITY[field]}={shown}: {msg}")
                else:
                    problems.append(msg)
            raise ConfigError(
                "Kafka security settings are invalid: " + "; ".join(problems), stage="config"
            ) from None

    @property
    def tls(self) -> bool:
        return self.security_protocol in _TLS

    def password(self) -> str | None:
        """The SASL password, from the variable or read from its file now."""
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        if self.sasl_password_file is not None:
            return self.sasl_password_file.read_text().strip()
        return None

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context (aiokafka's ``create_ssl_context``): verifies the broker's chain
        with `ssl_cafile` (or the system CAs), presents the client certificate if set."""
        from aiokafka.helpers import create_ssl_context

        try:
            ctx: ssl.SSLContext = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            )
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(
                f"the Kafka TLS files could not be loaded ({type(e).__name__}: {e}); check "
                f"{_var('ssl_cafile')}, {_var('ssl_certfile')} and {_var('ssl_keyfile')}",
                stage="config",
            ) from e
        if self.ssl_cafile is None:
            ctx.load_default_certs()
        ctx.check_hostname = self.ssl_check_hostname
        return ctx

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client (consumer, producer, admin, client)."""
        opts: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.tls:
            opts["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism is not None:
            opts["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                assert self.oauth_token_file is not None  # checked by the validator
                opts["sasl_oauth_token_provider"] = _FileTokenProvider(self.oauth_token_file)
            else:
                opts["sasl_plain_username"] = self.sasl_username
                opts["sasl_plain_password"] = self.password()
        return opts
