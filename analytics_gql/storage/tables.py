"""SQLAlchemy Core tables: dimensions, raw view events, the five rollup grains, rollup bookkeeping, versions.

Instants are stored as BIGINT microseconds since the epoch (UTC): exact to the microsecond, compared and
bucketed with plain integer arithmetic that SQLite and PostgreSQL evaluate identically.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
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


class Shape(StrEnum):
    """The key a rollup table keeps besides its bucket (DESIGN 2: the full key, and narrower shapes)."""

    FULL = "full"  # (blog, reader country): answers every filter
    BY_BLOG = "by_blog"  # no reader-country predicate or grouping
    BY_COUNTRY = "by_country"  # no blog attribute, no distinct-blog count
    TOTAL = "total"  # an unfiltered series


# The key columns of each shape (and the order of its primary key after `bucket`).
SHAPE_KEYS: dict[Shape, tuple[str, ...]] = {
    Shape.FULL: ("blog_id", "viewer_country"), Shape.BY_BLOG: ("blog_id",), Shape.BY_COUNTRY: ("viewer_country",),
    Shape.TOTAL: (),
}

# Which grains keep which shapes: only shapes that compress are stored (QUALITY.md: hour x blog x country is ~1
# row per raw event, day x blog x country ~1.6, hour x blog ~1.5 on the benchmark data, while a pass pays for every
# row it writes). Questions whose shape a grain lacks read the next grain that has it, and raw events (by the
# viewed_at index) where none fits: e.g. a blog filter over a range that starts mid-day reads that day's raw events.
SHAPE_GRAINS: dict[Shape, tuple[Grain, ...]] = {
    Shape.TOTAL: GRAINS,
    Shape.BY_COUNTRY: GRAINS,
    Shape.BY_BLOG: (Grain.DAY, Grain.WEEK, Grain.MONTH, Grain.YEAR),
    Shape.FULL: (Grain.MONTH, Grain.YEAR),
}

_KEY_TYPES: dict[str, TypeEngine[Any]] = {"blog_id": Integer(), "viewer_country": String(2)}


def _rollup(grain: Grain, shape: Shape) -> Table:
    name = f"views_{grain.value}" + ("" if shape is Shape.FULL else f"_{shape.value}")
    keys = SHAPE_KEYS[shape]
    if not keys:  # totals per bucket
        return Table(name, metadata, Column("bucket", Integer, primary_key=True, autoincrement=False),
                     Column("views", BigInteger, nullable=False))
    return Table(
        name,
        metadata,
        # hour: UTC hour number; day and week: local day number (week: its Monday); month: year*12+month-1; year.
        Column("bucket", Integer, nullable=False),
        # viewer_country is UNKNOWN_COUNTRY when the reader had none.
        *[Column(k, _KEY_TYPES[k], nullable=False) for k in keys],
        Column("views", BigInteger, nullable=False),
        PrimaryKeyConstraint("bucket", *keys),
    )


# Every rollup table, by (grain, shape); a pass writes all of them in one transaction. On PostgreSQL they have
# fillfactor 70 (migration 0004), so that adding late events to existing cells is a HOT update.
rollup_tables: dict[tuple[Grain, Shape], Table] = {
    (g, s): _rollup(g, s) for s in Shape for g in SHAPE_GRAINS[s]
}


# Distinct readers (CONTRACT 3, "Readers"): every viewerId folded in gets a dense integer in arrival order (the
# pass assigns it, under the pass lock, in the transaction that folds its first event; never reassigned), and the
# cells of the grains below keep the set of those integers as a Roaring bitmap (pyroaring's portable format).
viewers = Table(
    "viewers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("viewer_id", String(255), nullable=False, unique=True),
)

# Which grains keep reader sets, per shape: chosen by measuring bytes of sets per raw event (docs/ARCHITECTURE.md,
# "Reader sets"). Sets of small cells cost ~18 bytes of container overhead each, so fine grains of wide shapes
# (hour x blog, day x blog) cost more than the raw event they summarise; their questions read distinct viewers of
# raw events (by the viewed_at index) for the pieces no kept grain covers, as views do.
READER_GRAINS: dict[Shape, tuple[Grain, ...]] = {
    Shape.TOTAL: (Grain.DAY, Grain.WEEK, Grain.MONTH, Grain.YEAR),
    Shape.BY_COUNTRY: (Grain.MONTH, Grain.YEAR),
    Shape.BY_BLOG: (Grain.MONTH, Grain.YEAR),
    Shape.FULL: (Grain.YEAR,),
}


def _reader_table(grain: Grain, shape: Shape) -> Table:
    keys = SHAPE_KEYS[shape]
    return Table(
        f"readers_{grain.value}_{shape.value}",
        metadata,
        Column("bucket", Integer, nullable=False),
        *[Column(k, _KEY_TYPES[k], nullable=False) for k in keys],
        # The cell's viewer integers (viewers.id), pyroaring BitMap.serialize(); never empty.
        Column("readers", LargeBinary, nullable=False),
        PrimaryKeyConstraint("bucket", *keys),
    )


reader_tables: dict[tuple[Grain, Shape], Table] = {
    (g, s): _reader_table(g, s) for s in Shape for g in READER_GRAINS[s]
}


def grain_tables(grain: Grain) -> list[Table]:
    """The tables of one grain (view counts widest shape first, then reader sets)."""
    return [t for (g, _), t in [*rollup_tables.items(), *reader_tables.items()] if g is grain]


STATE_ID = 1  # the id of rollup_state's one row

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
    # Events with ids at or below this were folded before reader sets existed (migration 0006): readers are
    # refused until `rollup --rebuild` recomputes every grain (0 = the sets hold every folded event).
    Column("readers_from", BigInteger, nullable=False, server_default="0"),
)

# Per grain ("raw" included): the first instant still complete after compaction (0 = nothing compacted).
rollup_horizons = Table(
    "rollup_horizons",
    metadata,
    Column("grain", String(8), primary_key=True),
    Column("kept_from", BigInteger, nullable=False),
)

# Version counters the read side's per-process caches key on (storage/query_cache.py): "dimensions" is bumped in
# the same transaction as every upsert of authors or blogs (from any process), "rollups" by a rebuild, an audit
# repair or a compaction that deleted rows (changes to rows at or below the watermark that do not move it). A
# separate table, not rollup_state: a long pass holds that row locked, and an upsert must not wait for it.
data_versions = Table(
    "data_versions",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("version", BigInteger, nullable=False),
)
DIMENSIONS_VERSION = "dimensions"
ROLLUPS_VERSION = "rollups"


def bump_version(conn: Connection, name: str) -> None:
    """Increment a data version in the caller's transaction (an upsert: a missing row starts at 1)."""
    conn.execute(text(
        "INSERT INTO data_versions (name, version) VALUES (:n, 1) "
        "ON CONFLICT (name) DO UPDATE SET version = data_versions.version + 1"), {"n": name})

Index("ix_authors_country_code", authors.c.country_code)
