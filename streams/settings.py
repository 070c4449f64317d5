"""Frozen worker settings, from `CLAIMS_*` environment variables (or a `.env` file).

Everything needed to point the worker at a real Apache Kafka cluster (bootstrap servers,
TLS, SASL) and at PostgreSQL is here; secrets are `SecretStr` so they never print, and the
ledger URL prints with its password masked (`redact_url`).
"""

from __future__ import annotations

import json
import os
import ssl
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_serializer
from pydantic_settings import BaseSettings, SettingsConfigDict


def redact_url(url: str) -> str:
    """The URL with any password (in the user info or a `password=` query parameter)
    replaced by `***`, for repr, str and dumps of the settings; other URLs unchanged."""
    try:
        parts = urlsplit(url)
        if parts.password is None and "password" not in parts.query.lower():
            return url
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.split(':', 1)[0]}:***@{host}"
        query = urlencode([(k, "***" if k.lower() == "password" else v)
                           for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "***"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAIMS_", env_file=".env", extra="ignore", frozen=True)

    app_id: str = Field("claims-pipeline", description="Faust app id: the consumer group.")
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    partitions: int = Field(4, ge=1, le=1000, description="Partitions of every pipeline topic.")
    replication_factor: int = Field(1, ge=1, le=10)
    session_timeout_s: float = Field(10.0, gt=0, description="Consumer session timeout (10 s: fast rebalances).")
    group_instance_id: str | None = Field(None, description="Static group membership id (pod name).")
    assembly_timeout_s: float = Field(30.0, gt=0, description="An incomplete claim is rejected after this long.")
    batch_size: int = Field(200, ge=1, le=10_000, description="Messages an agent takes at once.")
    batch_within_s: float = Field(0.02, gt=0, description="How long an agent waits to fill a batch (latency against CPU per line).")
    producer_linger_ms: int = Field(5, ge=0, description="Producer batching window; fewer, larger produce requests.")
    fetch_max_wait_ms: int = Field(
        10, ge=1, le=5000, description="How long a fetch waits for data while data flows (Faust's default 1500; the embedded broker holds it that long).")
    fetch_idle_wait_ms: int = Field(
        0, ge=0, le=5000, description="How long a fetch waits once no data came for a second; 0: by broker, 500 on Apache Kafka, "
                                      "100 on the embedded broker (faust_tuning.IdleFetchWait).")
    commit_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often offsets are committed; a crash replays about this much work (Faust: 2.8).")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once", description="exactly_once: Kafka transactions (Apache Kafka only; docs/architecture.md).")

    ledger_url: str = Field("sqlite:///var/claims-ledger.db", description="sqlite:///path or postgresql://...")
    data_dir: Path = Field(Path("var"), description="Per-worker Faust data folders live under here.")

    shadow_rulebook: Path | None = Field(
        None, description="Monitor Mode: a candidate rulebook (TOML) every claim is also decided under, recording nothing.")

    web_bind: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    web_port_file: Path | None = Field(
        None, description="Where the worker writes its web port once bound (for whoever started it with port 0).")
    api_token: SecretStr | None = None
    reviewers_file: Path | None = Field(
        None, description="Manual review: a TOML file of [[reviewer]] (name, token_sha256, queues), read again when it changes.")
    clients_file: Path | None = Field(
        None, description="API clients: a TOML file of [[client]] (name, token_sha256, scopes), read again when it changes or on SIGHUP.")
    access_log_retention_days: int = Field(
        2190, ge=1, description="Access-log entries older than this many days are deleted (six years: HIPAA records).")
    max_body_bytes: int = Field(1_048_576, ge=1024)

    @field_serializer("ledger_url")
    def _ledger_url_without_password(self, url: str) -> str:
        return redact_url(url)

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "ledger_url" else value

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        ctx = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        if self.ssl_certfile:
            ctx.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None)
        return ctx

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Security settings in aiokafka's terms (producers, consumers, admin)."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.ssl_context is not None:
            kwargs["ssl_context"] = self.ssl_context
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return kwargs

    def faust_broker_credentials(self) -> Any:
        """The same settings as faust credentials (None for plaintext)."""
        import faust

        if self.security_protocol == "PLAINTEXT":
            return None
        if self.security_protocol == "SSL":
            return faust.SSLCredentials(self.ssl_context)
        password = self.sasl_password.get_secret_value() if self.sasl_password else ""
        mechanism = self.sasl_mechanism or "PLAIN"
        return faust.SASLCredentials(
            username=self.sasl_username or "", password=password, mechanism=mechanism, ssl_context=self.ssl_context
        )

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]


def write_resume_file(s: Settings, rewind: bool = False) -> Path:
    """The settings of a worker restarting in place (`os.execv`), for the new process image:
    a file only its user can read (it holds the secrets), under `data_dir`, that `read_resume_file`
    reads once and deletes. The new process gets these settings, not the environment's."""
    values = {name: value.get_secret_value() if isinstance(value, SecretStr) else str(value) if isinstance(value, Path)
              else value for name, value in s}
    s.data_dir.mkdir(parents=True, exist_ok=True)
    path = s.data_dir / f"resume-{os.getpid()}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"settings": values, "rewind": rewind}, f)
    return path


def read_resume_file(path: Path) -> tuple[Settings, bool]:
    """The settings and rewind flag `write_resume_file` wrote; the file is deleted."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    path.unlink(missing_ok=True)
    return Settings(**data["settings"]), bool(data["rewind"])
