"""The only reader of config/ and the environment. Returns frozen, validated settings.

Precedence, lowest first: built-in defaults, ``config/qasid.toml``, ``QASID_<SECTION>_<KEY>``
environment variables, then the host conventions ``DATABASE_URL``, ``SENDGRID_API_KEY`` and
``PORT``. A wrong value raises ConfigError naming the key, the value and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.core.errors import ConfigError
from pipeline.core.mail import parse_address
from pipeline.core.urls import parse_allow_list

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str = "sqlite:///var/qasid.db"
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        # Heroku-style hosts hand out postgres://, which SQLAlchemy 2 no longer accepts.
        if value.startswith("postgres://"):
            value = "postgresql+psycopg://" + value[len("postgres://") :]
        elif value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        if not (value.startswith("sqlite:") or value.startswith("postgresql+")):
            raise ValueError("must be a sqlite:/// path or a postgres:// URL")
        return value


class FetchSettings(_Section):
    user_agent: str = "qasid/0.1 (+https://github.com/qasid/qasid; news digest)"
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(20.0, gt=0)  # between two reads
    deadline: float = Field(45.0, gt=0)  # wall clock for a whole fetch, redirects included
    max_bytes: int = Field(5 * 1024 * 1024, ge=1024)  # decoded body cap
    max_redirects: int = Field(5, ge=0, le=20)
    concurrency: int = Field(64, ge=1, le=1000)
    per_host: int = Field(4, ge=1, le=100)
    allow_hosts: tuple[str, ...] = ()  # hosts or CIDR ranges allowed despite the SSRF guard
    parse_workers: int = Field(2, ge=0, le=64)  # 0 parses in-process (tests, tiny installs)
    parse_timeout: float = Field(10.0, gt=0)
    max_entries: int = Field(200, ge=1)  # newest N entries kept per poll
    backoff_base_minutes: float = Field(5.0, gt=0)
    backoff_max_minutes: float = Field(24 * 60.0, gt=0)
    gone_after: int = Field(3, ge=1)  # consecutive 410s before a feed is disabled
    verify_tls: bool = True

    @field_validator("allow_hosts")
    @classmethod
    def _check_allow_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_allow_list(value)  # raises ValueError naming the bad entry
        return value


class FeedsSettings(_Section):
    file: str = "config/feeds.toml"
    default_interval_minutes: int = Field(30, ge=1)


class WorkerSettings(_Section):
    tick_seconds: int = Field(60, ge=1)
    lease_seconds: int = Field(300, ge=10)
    name: str = ""  # defaults to host:pid


class MailSettings(_Section):
    backend: Literal["outbox", "smtp", "sendgrid"] = "outbox"
    outbox_dir: str = "var/outbox"
    from_address: str = "qasid <digest@localhost>"
    reply_to: str = ""
    postal_address: str = ""
    list_id: str = ""  # List-Id header; empty: <qasid.{domain of from_address}>

    @field_validator("from_address", "reply_to")
    @classmethod
    def _one_address(cls, value: str) -> str:
        if value:
            parse_address(value)  # raises ValueError naming the value
        return value


class SendGridSettings(_Section):
    host: str = "https://api.sendgrid.com"
    api_key: str = ""
    timeout: float = Field(30.0, gt=0)  # seconds for one mail/send request
    sandbox_mode: bool = False  # SendGrid validates and answers but delivers nothing
    batch_size: int = Field(1000, ge=1, le=1000)  # personalizations in one request
    # Signed Event Webhook: the verification key SendGrid shows (base64 DER of an ECDSA
    # P-256 public key). Empty: POST /webhooks/sendgrid answers 503 and applies nothing.
    webhook_public_key: str = ""
    webhook_max_age: int = Field(300, ge=10, le=86400)  # seconds a signature stays fresh
    webhook_max_bytes: int = Field(4 * 1024 * 1024, ge=1024)  # larger posts get 413
    webhook_rate_limit: str = "600/minute"  # per client address; SendGrid retries a 429
    # Recorded events (kept to apply each once) and quarantined bodies are deleted after
    # this many days by the worker; both hold addresses in clear. SendGrid retries for up to
    # a day, so fewer than 2 days could apply a retried event twice.
    webhook_retention_days: int = Field(30, ge=2, le=3650)

    @field_validator("webhook_public_key")
    @classmethod
    def _verification_key(cls, value: str) -> str:
        from pipeline.events import parse_public_key  # cryptography only when configured

        if not value.strip():
            return ""
        return parse_public_key(value)  # raises ValueError saying what is wrong

    @field_validator("webhook_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError("must be a rate limit such as 600/minute") from None
        return value

    @field_validator("host")
    @classmethod
    def _http_origin(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.sendgrid.com")
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise ValueError("must be a scheme and host only (the client adds /v3/mail/send)")
        return value.rstrip("/")


class SmtpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    username: str = ""
    password: str = ""
    starttls: bool = False  # upgrade with STARTTLS (port 587); never falls back to plain text
    tls: bool = False  # implicit TLS from the first byte (SMTPS, port 465)
    timeout: float = Field(30.0, gt=0)  # seconds for connecting and for each reply
    ca_file: str = ""  # PEM bundle to trust instead of the system's (a private relay)
    helo_name: str = ""  # EHLO name; empty: the domain of [mail] from_address


class WebSettings(_Section):
    base_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Signs the links in emails. Empty: a random key is made once and kept in var/secret.key
    # (fine for one machine; set it explicitly when several processes or hosts serve links).
    secret_key: str = ""
    old_secret_keys: tuple[str, ...] = ()  # still accepted, for key rotation
    # Rate-limit counters: "memory://" for one process; "redis://127.0.0.1:6379" (or any
    # storage the `limits` package knows) when several web workers must share the limits.
    ratelimit_storage: str = "memory://"
    max_request_bytes: int = Field(1024 * 1024, ge=1024)  # bigger requests get 413
    editor_password: str = ""  # the editor dashboard is closed while this is empty
    proxy_hops: int = Field(0, ge=0, le=5)  # reverse proxies in front (trust X-Forwarded-*)

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http(s) URL, e.g. https://news.example.org")
        return value.rstrip("/")


class DigestSettings(_Section):
    site_name: str = "qasid"
    # the public edition is built each day (and each Monday, weekly) at this local hour
    public_timezone: str = "Asia/Karachi"
    public_hour: int = Field(7, ge=0, le=23)
    top_stories: int = Field(3, ge=0, le=10)
    max_per_section: int = Field(8, ge=1, le=50)
    alerts_per_day: int = Field(5, ge=0, le=100)  # instant alerts per subscriber per day
    alert_themes: tuple[str, ...] = ("sanctions", "nuclear_missile", "counterterrorism")
    send_batch: int = Field(100, ge=1, le=1000)  # deliveries claimed per drain step
    send_lease_seconds: int = Field(600, ge=30)  # a sending row older than this is unknown
    unknown_resend_minutes: int = Field(60, ge=1)  # unresolved unknown rows are resent once
    # the compiled watchlist engine kept between jobs (relative to the project); "" = none
    watchlist_cache: str = "var/cache/watchlist-engine.pickle"
    # processes that build personal digests (this one and forked helpers); 0 = one per core
    build_workers: int = Field(0, ge=0, le=64)
    # processes composing the emails of the send queue (this one and forked helpers; this
    # one alone talks to the mail backend); 0 = one per core
    send_workers: int = Field(0, ge=0, le=64)

    @field_validator("public_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a known time zone (e.g. Asia/Karachi)") from None
        return value


class Settings(_Section):
    database: DatabaseSettings = DatabaseSettings()
    fetch: FetchSettings = FetchSettings()
    feeds: FeedsSettings = FeedsSettings()
    worker: WorkerSettings = WorkerSettings()
    mail: MailSettings = MailSettings()
    sendgrid: SendGridSettings = SendGridSettings()
    smtp: SmtpSettings = SmtpSettings()
    web: WebSettings = WebSettings()
    digest: DigestSettings = DigestSettings()
    root: str = str(PROJECT_ROOT)

    def path(self, relative: str) -> Path:
        """Resolve a configured path against the project root."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else Path(self.root) / candidate


_HOST_VARIABLES = {
    "DATABASE_URL": ("database", "url"),
    "SENDGRID_API_KEY": ("sendgrid", "api_key"),
    "PORT": ("web", "port"),
}


def _coerce_env(section_model: type[BaseModel], key: str, raw: str) -> Any:
    """Environment values are strings; lists are comma-separated."""
    field_info = section_model.model_fields.get(key)
    if field_info is not None and "tuple" in str(field_info.annotation):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    root: str | Path | None = None,
) -> Settings:
    """Read config/qasid.toml (or ``config_file``) and the environment into Settings."""
    environ = os.environ if environ is None else environ
    root_path = Path(root) if root else PROJECT_ROOT
    path = Path(config_file or environ.get("QASID_CONFIG") or root_path / "config" / "qasid.toml")
    data: dict[str, dict[str, Any]] = {}
    sources: dict[tuple[str, str], str] = {}
    if path.exists():
        try:
            with path.open("rb") as handle:
                loaded = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError("config", f"not valid TOML: {error}", str(path)) from error
        for section, values in loaded.items():
            if section not in Settings.model_fields or section == "root":
                raise ConfigError(section, "unknown section", str(path))
            if not isinstance(values, dict):
                raise ConfigError(section, "must be a table", str(path))
            data[section] = dict(values)
            for key in values:
                sources[(section, key)] = str(path)
    elif config_file:
        raise ConfigError("config", "file not found", str(path))

    sections = {name: f.annotation for name, f in Settings.model_fields.items() if name != "root"}
    for variable, raw in environ.items():
        if not variable.startswith("QASID_") or variable == "QASID_CONFIG":
            continue
        rest = variable[len("QASID_") :].lower()
        section, _, key = rest.partition("_")
        if section not in sections or not key:
            continue
        model = sections[section]
        assert isinstance(model, type) and issubclass(model, BaseModel)
        if key not in model.model_fields:
            raise ConfigError(f"{section}.{key}", "unknown setting", f"environment {variable}")
        data.setdefault(section, {})[key] = _coerce_env(model, key, raw)
        sources[(section, key)] = f"environment {variable}"
    for variable, (section, key) in _HOST_VARIABLES.items():
        if environ.get(variable):
            data.setdefault(section, {})[key] = environ[variable]
            sources[(section, key)] = f"environment {variable}"

    try:
        return Settings.model_validate({**data, "root": str(root_path)})
    except ValidationError as error:
        first = error.errors()[0]
        location = tuple(str(part) for part in first["loc"])
        section = location[0] if location else "config"
        key = location[1] if len(location) > 1 else ""
        value = data.get(section, {}).get(key) if key else None
        source = sources.get((section, key), str(path))
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown setting"
        raise ConfigError(f"{section}.{key}" if key else section, message, source, value) from error
