"""Settings of the service: one frozen dataclass, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast, get_args, get_type_hints

DEFAULT_DATABASE_URL = "sqlite:///var/calculations.db"

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def default_schema_path() -> Path:
    """The schema inside the installed package (the build copies it there), else the source
    tree's top-level schema.sql, the one source of both."""
    here = Path(__file__).resolve().parent
    packaged = here / "schema.sql"
    return packaged if packaged.exists() else here.parent / "schema.sql"


DEFAULT_SCHEMA_PATH = default_schema_path()


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///relative` or `sqlite:////absolute` URL."""
    if not url.startswith(SQLITE_PREFIX) or url == SQLITE_PREFIX:
        raise ValueError(
            "DATABASE_URL must look like sqlite:///relative/path, sqlite:////absolute/path"
            f" or postgresql://user:password@host:port/database, got {url!r}"
        )
    return Path(url.removeprefix(SQLITE_PREFIX))


def is_postgres(url: str) -> bool:
    """Whether the URL names a PostgreSQL server (anything else must be a SQLite file)."""
    return url.startswith(POSTGRES_PREFIXES)


def check_database_url(url: str) -> None:
    if not is_postgres(url):
        sqlite_path(url)


ROLES = ("all", "api", "worker")


@dataclass(frozen=True, slots=True)
class Config:
    # all: the API and the kernels; api: the API and the page, computing nothing; worker:
    # claims and computes, and serves only /health and /metrics.
    role: str = "all"
    database_url: str = DEFAULT_DATABASE_URL
    schema_path: Path = DEFAULT_SCHEMA_PATH
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    kernel_delay: float = 10.0
    max_points: int = 100_000
    poll_interval: float = 2.0
    log_level: str = "INFO"
    log_format: str = "text"
    kernel_timeout: float | None = None
    shutdown_grace: float = 30.0
    max_attempts: int = 3
    lease: float = 15.0  # seconds without a heartbeat after which a worker is taken for gone
    max_queued: int = 10_000
    retention: float = 0.0  # seconds an ended run is kept; 0 keeps every run
    api_token: str | None = None
    # How long a client may take to send a request head or body, or to read on while its
    # answer waits to be written; an idle kept-alive connection is closed after it too.
    client_timeout: float = 15.0
    # The ping-pong pipeline; an empty partner URL means this same server.
    pingpong_a_url: str = ""
    pingpong_b_url: str = ""
    pingpong_reject_rate: float = 4 / 11
    pingpong_seed: int | None = None
    pingpong_max_hops: int = 100
    pingpong_max_in_flight: int = 100  # forwards under way at once, beyond which hops get 429

    def __post_init__(self) -> None:
        check_database_url(self.database_url)
        if self.role not in ROLES:
            raise ValueError(f"ROLE must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.workers < 1:
            raise ValueError(f"WORKERS must be at least 1, got {self.workers}")
        if self.kernel_delay < 0:
            raise ValueError(f"KERNEL_DELAY must not be negative, got {self.kernel_delay}")
        if self.max_points < 1:
            raise ValueError(f"MAX_POINTS must be at least 1, got {self.max_points}")
        if self.kernel_timeout is not None and self.kernel_timeout <= 0:
            raise ValueError(f"KERNEL_TIMEOUT must be positive, got {self.kernel_timeout}")
        if self.shutdown_grace < 0:
            raise ValueError(f"SHUTDOWN_GRACE must not be negative, got {self.shutdown_grace}")
        if self.lease <= 0:
            raise ValueError(f"LEASE must be positive, got {self.lease}")
        if self.max_attempts < 1:
            raise ValueError(f"MAX_ATTEMPTS must be at least 1, got {self.max_attempts}")
        if self.max_queued < 1:
            raise ValueError(f"MAX_QUEUED must be at least 1, got {self.max_queued}")
        if self.retention < 0:
            raise ValueError(f"RETENTION must not be negative, got {self.retention}")
        if self.client_timeout <= 0:
            raise ValueError(f"CLIENT_TIMEOUT must be positive, got {self.client_timeout}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"LOG_FORMAT must be text or json, got {self.log_format!r}")
        if not 0 <= self.pingpong_reject_rate <= 1:
            raise ValueError(
                f"PINGPONG_REJECT_RATE must be between 0 and 1, got {self.pingpong_reject_rate}"
            )
        if self.pingpong_max_hops < 1:
            raise ValueError(f"PINGPONG_MAX_HOPS must be at least 1, got {self.pingpong_max_hops}")
        if self.pingpong_max_in_flight < 1:
            raise ValueError(
                f"PINGPONG_MAX_IN_FLIGHT must be at least 1, got {self.pingpong_max_in_flight}"
            )

    @property
    def computes(self) -> bool:
        return self.role in ("all", "worker")

    @property
    def serves_api(self) -> bool:
        return self.role in ("all", "api")

    @property
    def db_path(self) -> Path:
        return sqlite_path(self.database_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build the config from upper-case environment variables named after the fields."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(field.name.upper())
            if raw is None or raw == "":
                continue
            kind = field_type(field.name)
            try:
                values[field.name] = kind(raw)
            except ValueError:
                raise ValueError(
                    f"{field.name.upper()} must be a {kind.__name__}, got {raw!r}"
                ) from None
        return cls(**values)


def field_type(name: str) -> type:
    """The type a setting's text is converted to: `int` for `int | None`."""
    hint = get_type_hints(Config)[name]
    kinds = [kind for kind in get_args(hint) if kind is not type(None)] or [hint]
    return cast(type, kinds[0])
