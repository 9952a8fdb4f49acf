"""SQLAlchemy Core tables: dimensions, raw view events, the five rollup grains and rollup bookkeeping.

Instants are stored as BIGINT microseconds since the epoch (UTC): exact to the microsecond, compared and
bucketed with plain integer arithmetic that SQLite and PostgreSQL evaluate identically.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeEngine

from analytics_gql.domain.calendar import GRAINS, Grain

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias); PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

UNKNOWN_COUNTRY = "--"

countries = Table(
    "countries",
    metadata,
    Column("code", String(2), primary_key=True),
    Column("name", String(200), nullable=False),
)

authors = Table(
    "authors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("external_id", String(255), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("country_code", String(2), ForeignKey("countries.code"), nullable=True),
)

blogs = Table(
    "blogs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("external_id", String(255), nullable=False, unique=True),
    Column("title", Text, nullable=False),
    Column("author_id", Integer, ForeignKey("authors.id"), nullable=False, index=True),
    Column("country_code", String(2), ForeignKey("countries.code"), nullable=True, index=True),
    Column("created_at", BigInteger, nullable=False, index=True),
)

# Raw, append-only. No foreign key on blog_id: ingest validates blogs in bulk, and an FK check per row would
# halve COPY throughput; blogs are never deleted.
view_events = Table(
    "view_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(255), nullable=True, unique=True),
    Column("blog_id", Integer, nullable=False),
    Column("viewer_id", String(255), nullable=True),
    Column("viewer_country", String(2), nullable=True),
    Column("viewed_at", BigInteger, nullable=False, index=True),
)


def _rollup(grain: Grain) -> Table:
    return Table(
        f"views_{grain.value}",
        metadata,
        # hour: UTC hour number; day and week: local day number (week: its Monday); month: year*12+month-1; year.
        Column("bucket", Integer, nullable=False),
        Column("blog_id", Integer, nullable=False),
        Column("viewer_country", String(2), nullable=False),  # UNKNOWN_COUNTRY when the reader had none
        Column("views", BigInteger, nullable=False),
        PrimaryKeyConstraint("bucket", "blog_id", "viewer_country"),
    )


rollups: dict[Grain, Table] = {g: _rollup(g) for g in GRAINS}


def _narrow(grain: Grain, key: str, key_type: TypeEngine[Any]) -> Table:
    return Table(
        f"views_{grain.value}_by_{key.removesuffix('_id').removeprefix('viewer_')}",
        metadata,
        Column("bucket", Integer, nullable=False),
        Column(key, key_type, nullable=False),
        Column("views", BigInteger, nullable=False),
        PrimaryKeyConstraint("bucket", key),
    )


# Narrower shapes of the same grains (QUALITY.md: the full key barely compresses). The planner picks the
# smallest shape that can answer: by blog when no reader-country predicate or grouping is involved; by reader
# country when neither blog attributes nor distinct blog counts are needed (performance series).
rollups_by_blog: dict[Grain, Table] = {g: _narrow(g, "blog_id", Integer()) for g in GRAINS}
rollups_by_country: dict[Grain, Table] = {g: _narrow(g, "viewer_country", String(2)) for g in GRAINS}
# Totals per bucket: an unfiltered series (performance without a filter) reads one row per bucket.
rollups_total: dict[Grain, Table] = {
    g: Table(f"views_{g.value}_total", metadata, Column("bucket", Integer, primary_key=True, autoincrement=False),
             Column("views", BigInteger, nullable=False))
    for g in GRAINS
}

# One row (id = 1): the watermark (last raw id folded in), the zone the local grains were built in, bookkeeping.
rollup_state = Table(
    "rollup_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("watermark", BigInteger, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("last_run_at", BigInteger, nullable=True),
    Column("last_run_events", BigInteger, nullable=False, server_default="0"),
    Column("last_run_ms", Integer, nullable=False, server_default="0"),
    Column("last_compact_at", BigInteger, nullable=True),
    Column("last_audit_at", BigInteger, nullable=True),
)

# Per grain ("raw" included): the first instant still complete after compaction (0 = nothing compacted).
rollup_horizons = Table(
    "rollup_horizons",
    metadata,
    Column("grain", String(8), primary_key=True),
    Column("kept_from", BigInteger, nullable=False),
)

Index("ix_authors_country_code", authors.c.country_code)
