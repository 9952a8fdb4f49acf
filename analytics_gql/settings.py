"""The one reader of the environment: every ANALYTICS_* variable, typed and validated."""

from __future__ import annotations

import hashlib
import math
import re
import zoneinfo
from dataclasses import dataclass, field

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SCOPES = ("read", "ingest", "admin")
GRAINS = ("hour", "day", "week", "month", "year")


@dataclass(frozen=True)
class ApiKey:
    """One API key and the scopes it grants (`admin` implies the others). Its repr never shows the key."""

    key: str = field(repr=False)
    scopes: frozenset[str]

    @property
    def name(self) -> str:
        """What logs and metrics may show of the key: a fingerprint (`key-` and 8 hex digits of its SHA-256)."""
        return "key-" + hashlib.sha256(self.key.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def parse_api_keys(raw: str | None) -> tuple[ApiKey, ...]:
    """Parse `key:scope[,scope];...`; raise ValueError on an unknown scope or a malformed entry."""
    if not raw:
        return ()
    keys = []
    for number, entry in enumerate(raw.split(";"), 1):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, scopes = entry.partition(":")
        if not sep or not key.strip():  # no part of the entry is shown: it may be a key missing its scopes
            raise ValueError(f"API key entry {number} must look like key:scope[,scope]")
        names = {s.strip() for s in scopes.split(",") if s.strip()}
        bad = names - set(SCOPES)
        if bad or not names:
            raise ValueError(f"API key entry {number}: unknown scope(s) {sorted(bad)}; use {', '.join(SCOPES)}")
        if "admin" in names:
            names |= set(SCOPES)
        keys.append(ApiKey(key.strip(), frozenset(names)))
    return tuple(keys)


def parse_retention(raw: str | None) -> dict[str, int]:
    """Parse `raw=400d,hour=1095d` into days per grain; an absent grain is kept forever."""
    out: dict[str, int] = {}
    if not raw:
        return out
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        grain, sep, days = part.partition("=")
        grain = grain.strip()
        if not sep or grain not in ("raw", *GRAINS):
            raise ValueError(f"retention entry {part!r}: use grain=DAYSd with grain in raw, {', '.join(GRAINS)}")
        days = days.strip().removesuffix("d")
        if not days.isdigit() or int(days) < 1:
            raise ValueError(f"retention entry {part!r}: days must be a positive whole number")
        out[grain] = int(days)
    return out


@dataclass(frozen=True)
class RateLimit:
    """A token bucket's refill rate (tokens per second) and capacity (the burst)."""

    per_second: float
    burst: int


_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|min|minute)(?:\s*,\s*burst\s+(\d+))?$", re.IGNORECASE)


def parse_rate_limit(raw: str | None) -> RateLimit | None:
    """Parse `20/s, burst 40` or `600/min` (burst defaults to one second's worth, at least 1); None when unset."""
    if raw is None or not raw.strip():
        return None
    m = _RATE.match(raw.strip())
    if m is None or not 0 < float(m.group(1)) < math.inf or (m.group(3) is not None and int(m.group(3)) < 1):
        raise ValueError(f"rate limit {raw.strip()[:40]!r}: use RATE/s or RATE/min with RATE > 0, optionally "
                         "followed by ', burst N' with N >= 1 (e.g. '20/s, burst 40')")
    rate = float(m.group(1)) / (60 if m.group(2).lower().startswith("m") else 1)
    burst = int(m.group(3)) if m.group(3) is not None else max(1, math.ceil(rate))
    return RateLimit(rate, burst)


class Settings(BaseSettings):
    """Deployment settings, from ANALYTICS_* environment variables (or a .env file)."""

    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", env_file=".env", extra="ignore")

    # Secrets (keys, and the passwords URLs may carry) are SecretStr: '**********' in a repr, a log line or an error;
    # `db_url`, `redis_dsn` and `keys` give their values to the engine, the broker and the key check only.
    database_url: SecretStr = SecretStr("sqlite:///./analytics.db")
    redis_url: SecretStr | None = None
    timezone: str = "UTC"
    rollup_interval: int = Field(default=30, ge=1)
    api_keys: SecretStr | None = None
    # Compressive retention, opt-in: e.g. "raw=400d,hour=1095d" (day and coarser kept forever when absent).
    retention: str | None = None
    # Raw ids folded per pass transaction; unset: a per-database default (rollup.chunk_size).
    rollup_chunk: int | None = Field(default=None, ge=1)
    # Production switches (S4/F18): GraphiQL, the dashboard and introspection can be turned off.
    graphiql: bool = True
    dashboard: bool = True
    introspection: bool = True
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_ingest_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    redis_timeout: float = Field(default=2.0, gt=0)
    statement_timeout_ms: int = Field(default=30_000, ge=0)
    # Per-process cache of the rollup part of answers (storage/query_cache.py): on/off, and its bounds.
    query_cache: bool = True
    query_cache_entries: int = Field(default=1_024, ge=1)
    query_cache_rows: int = Field(default=1_000_000, ge=1)
    # Warm answers first tried on the event loop (api/context.py): faster, but a stalled database stalls the loop.
    quick_reads: bool = False
    # Token bucket per API key (per client address when open) on the data endpoints, e.g. "20/s, burst 40".
    rate_limit: str | None = None
    # Logs of serve, worker and scheduler: auto (JSON lines unless stderr is a terminal), json or text.
    log_format: str = "auto"
    # OpenTelemetry spans for GraphQL operations (Strawberry's extension; needs the `otel` extra). Exporter from the
    # standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...).
    tracing: bool = False

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        # OSError: a name that is a directory of the zone database ('Europe'); TypeError: a name it cannot use.
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError, OSError) as e:
            raise ValueError(f"unknown IANA time zone {v!r}") from e
        return v

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: SecretStr | None) -> SecretStr | None:
        parse_api_keys(v.get_secret_value() if v is not None else None)
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value().strip() else None

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str | None) -> str | None:
        parse_retention(v)
        return v

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, v: str) -> str:
        if v not in ("auto", "json", "text"):
            raise ValueError(f"{v[:20]!r}: use auto, json or text")
        return v

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, v: str | None) -> str | None:
        parse_rate_limit(v)
        return v

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        """The parsed API keys (empty = open, for local use)."""
        return parse_api_keys(self.api_keys.get_secret_value() if self.api_keys is not None else None)

    @property
    def retention_days(self) -> dict[str, int]:
        """Days kept per grain (`raw` included); absent = forever."""
        return parse_retention(self.retention)

    @property
    def rate_limit_rule(self) -> RateLimit | None:
        """The parsed ANALYTICS_RATE_LIMIT; None = no limit."""
        return parse_rate_limit(self.rate_limit)

    @property
    def db_url(self) -> str:
        """ANALYTICS_DATABASE_URL in clear (password included): for the engine, Alembic and child processes only."""
        return self.database_url.get_secret_value()

    @property
    def redis_dsn(self) -> str | None:
        """ANALYTICS_REDIS_URL in clear, or None (in-process jobs): for the broker's client only."""
        return self.redis_url.get_secret_value() if self.redis_url is not None else None
