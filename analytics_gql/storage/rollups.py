"""Rollup write side (fold raw events into the five grains, compact, repair) and rollup bookkeeping reads.

Every function takes a Connection first and never commits: `analytics_gql.rollup` owns the transactions.
Bucketing is integer arithmetic on BIGINT microseconds, so SQLite and PostgreSQL agree to the bucket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, func, insert, select, text, tuple_, update
from sqlalchemy.exc import DBAPIError

from analytics_gql.domain.calendar import (
    DAY_US,
    GRAINS,
    HOUR_US,
    Grain,
    bucket_interval,
    bucket_key,
    day_offset_segments,
)
from analytics_gql.storage import reader_sets
from analytics_gql.storage.tables import (
    ROLLUPS_VERSION,
    SHAPE_KEYS,
    UNKNOWN_COUNTRY,
    Shape,
    bump_version,
    grain_tables,
    reader_tables,
    rollup_horizons,
    rollup_state,
    rollup_tables,
    view_events,
)

STATE_ID = 1
# Arbitrary but fixed: every process folding into this database serialises on this advisory lock key.
PASS_LOCK_KEY = 0x616E616C79746963  # "analytic"
RAW = "raw"


@dataclass(frozen=True, slots=True)
class State:
    """The rollup_state row: watermark (last raw id folded in), zone of the local grains, bookkeeping."""

    watermark: int
    timezone: str
    last_run_at: int | None
    last_run_events: int
    last_run_ms: int
    last_compact_at: int | None
    last_audit_at: int | None


@dataclass(frozen=True, slots=True)
class GrainStatus:
    """Rows and span of one grain (or of raw events), and its retention in days (None = forever)."""

    grain: str
    rows: int
    oldest: int | None
    newest: int | None
    retained_for: int | None


@dataclass(frozen=True, slots=True)
class RollupStatus:
    """What `rollupStatus` exposes.

    `watermark` is an instant: every event committed before it is folded into the rollups. It is the moment the
    last pass that caught up read its `safe_high` (so None until a pass has caught up once); `last_run_at` is
    when that pass finished. `pending_events` counts raw rows above the id watermark right now.
    """

    watermark: int | None
    watermark_id: int
    pending_events: int
    last_run_at: int | None
    last_run_events: int
    timezone: str | None
    grains: list[GrainStatus]


def now_us() -> int:
    """The current instant in microseconds."""
    return time.time_ns() // 1000


# ---------------------------------------------------------------- state


def read_state(conn: Connection) -> State | None:
    """The rollup_state row, or None before the first pass."""
    row = conn.execute(select(rollup_state).where(rollup_state.c.id == STATE_ID)).mappings().first()
    if row is None:
        return None
    return State(
        watermark=row["watermark"], timezone=row["timezone"], last_run_at=row["last_run_at"],
        last_run_events=row["last_run_events"], last_run_ms=row["last_run_ms"],
        last_compact_at=row["last_compact_at"], last_audit_at=row["last_audit_at"],
    )


def ensure_state(conn: Connection, timezone: str) -> State:
    """The rollup_state row, created lazily (watermark 0, the given zone) when missing."""
    state = read_state(conn)
    if state is not None:
        return state
    conn.execute(insert(rollup_state).values(id=STATE_ID, watermark=0, timezone=timezone,
                                             last_run_events=0, last_run_ms=0))
    state = read_state(conn)
    assert state is not None
    return state


def watermark(conn: Connection) -> int:
    """The last raw id folded into the rollups (0 when nothing is)."""
    value = conn.execute(select(rollup_state.c.watermark).where(rollup_state.c.id == STATE_ID)).scalar()
    return int(value or 0)


def reporting_zone(conn: Connection) -> str | None:
    """The zone the day/week/month/year rollups were built in (None before the first pass)."""
    return conn.execute(select(rollup_state.c.timezone).where(rollup_state.c.id == STATE_ID)).scalar()


def set_timezone(conn: Connection, timezone: str) -> None:
    """Record the zone the local grains are (about to be) built in."""
    conn.execute(update(rollup_state).where(rollup_state.c.id == STATE_ID).values(timezone=timezone))


def advance_watermark(conn: Connection, high: int) -> None:
    """Move the watermark to `high` (in the same transaction as the fold it records)."""
    conn.execute(update(rollup_state).where(rollup_state.c.id == STATE_ID).values(watermark=high))


def record_run(conn: Connection, *, started_at: int, events: int, ms: int) -> None:
    """Record a pass that caught up: it read its safe_high at `started_at` and folded `events` in `ms`."""
    conn.execute(update(rollup_state).where(rollup_state.c.id == STATE_ID)
                 .values(last_run_at=started_at, last_run_events=events, last_run_ms=ms))


def rollups_empty(conn: Connection) -> bool:
    """True when no grain holds a row."""
    return all(conn.execute(select(t.c.bucket).limit(1)).first() is None
               for t in [*rollup_tables.values(), *reader_tables.values()])


def max_event_id(conn: Connection) -> int:
    """The highest raw id visible to this transaction (0 when there is none)."""
    return int(conn.execute(select(func.max(view_events.c.id))).scalar() or 0)


def pending_events(conn: Connection, above: int) -> int:
    """Raw rows with id above `above`."""
    return int(conn.execute(select(func.count()).select_from(view_events).where(view_events.c.id > above)).scalar()
               or 0)


# ---------------------------------------------------------------- PostgreSQL locks


def pg_safe_high(conn: Connection, lock_timeout_ms: int) -> int | None:
    """PostgreSQL: the highest raw id no in-flight writer can still undercut, or None when writers are busy.

    Sequence values commit out of order: a writer may hold id 10 uncommitted while id 11 is visible, and a pass
    that moved the watermark to 11 would skip 10 for good. As Citus' incremental rollups do, take a brief
    EXCLUSIVE lock on the raw table: it conflicts with every writer's ROW EXCLUSIVE, so once granted every id
    already drawn belongs to a finished transaction and max(id) is final; later writers draw larger ids. Readers
    are not blocked. The lock queues new writers while we wait, so `lock_timeout` bounds the stall ingest can see
    (R6); on timeout the caller skips this round. The caller must commit right away to release the lock.
    """
    conn.execute(text(f"SET LOCAL lock_timeout = '{int(lock_timeout_ms)}ms'"))
    try:
        with conn.begin_nested():
            conn.execute(text("LOCK TABLE view_events IN EXCLUSIVE MODE"))
    except DBAPIError as e:
        if getattr(e.orig, "sqlstate", None) == "55P03":  # lock_not_available: writers busy, skip this round
            return None
        raise
    return max_event_id(conn)


def pg_pass_lock(conn: Connection, *, wait: bool) -> bool:
    """PostgreSQL: take the transaction-scoped pass lock (or try to, when `wait` is False)."""
    if wait:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PASS_LOCK_KEY})
        return True
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": PASS_LOCK_KEY}).scalar())


# ---------------------------------------------------------------- folding


# PostgreSQL work_mem for the pass, and for its two raw scans (see fold).
PASS_WORK_MEM = "256MB"
RAW_SCAN_WORK_MEM: str | None = "4MB"


def pg_tune_pass(conn: Connection) -> None:
    """PostgreSQL: settings for this pass transaction only.

    work_mem: the chunk's hash aggregates and key-order sorts stay in memory instead of spilling.
    synchronous_commit off: a crash may lose the last pass, but its upserts and watermark move are lost together
    (one transaction), so the next pass simply redoes it: exactness is unaffected, commit latency is saved.
    """
    conn.execute(text(f"SET LOCAL work_mem = '{PASS_WORK_MEM}'"))
    conn.execute(text("SET LOCAL synchronous_commit = off"))
    # The raw scans cost past jit_above_cost, and compiling their expressions took longer than it saved
    # (a 1M-event day x blog x country delta: 1.9 s with JIT, 1.5 s without).
    conn.execute(text("SET LOCAL jit = off"))



def _offset_case(zone: ZoneInfo, lo_us: int, hi_us: int) -> str:
    """SQL for the offset (us) that maps `viewed_at` to its local day number, valid for viewed_at in [lo_us, hi_us).

    The UTC offset in force, except around a change that moves the clock across midnight, where the day must
    follow the contract's periods [S(D), S(D+1)) rather than the wall-clock date (calendar.day_offset_segments).
    One WHEN per segment, newest first since most events are recent. The values are integers we computed
    (never client input), inlined so the planner sees constants.
    """
    segs = day_offset_segments(zone, lo_us, hi_us)
    if len(segs) == 1:
        return str(int(segs[0][1]))
    whens = " ".join(f"WHEN viewed_at >= {int(t)} THEN {int(off)}" for t, off in reversed(segs[1:]))
    return f"(CASE {whens} ELSE {int(segs[0][1])} END)"


def _civil_select(source: str) -> str:
    """SQL mapping day numbers of `source` (column `day`) to (day, month key, year), by Howard Hinnant's
    civil_from_days in integer arithmetic (day numbers are positive here, so `/` truncation equals floor)."""
    return f"""
        SELECT day, (y + CASE WHEN m <= 2 THEN 1 ELSE 0 END) * 12 + m - 1 AS month,
               y + CASE WHEN m <= 2 THEN 1 ELSE 0 END AS year
        FROM (SELECT day, era * 400 + yoe AS y, CASE WHEN mp < 10 THEN mp + 3 ELSE mp - 9 END AS m
              FROM (SELECT day, era, yoe, (5 * (doe - (365 * yoe + yoe / 4 - yoe / 100)) + 2) / 153 AS mp
                    FROM (SELECT day, era, doe, (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365 AS yoe
                          FROM (SELECT day, (day + 719468) / 146097 AS era,
                                       (day + 719468) - ((day + 719468) / 146097) * 146097 AS doe
                                FROM {source}) c1) c2) c3) c4"""


def _temp(conn: Connection, name: str, select_sql: str, params: dict[str, int] | None = None) -> None:
    """Create temp table `name` from a SELECT; on PostgreSQL it is dropped at commit (or rollback)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {select_sql}"), params or {})
        conn.execute(text(f"ANALYZE {name}"))
    else:
        conn.execute(text(f"DROP TABLE IF EXISTS temp.{name}"))
        conn.execute(text(f"CREATE TEMP TABLE {name} AS {select_sql}"), params or {})


def _drop_temps(conn: Connection, *names: str) -> None:
    """SQLite keeps temp tables for the connection's life: drop ours (PostgreSQL drops them at commit)."""
    if conn.dialect.name == "sqlite":
        for name in names:
            conn.execute(text(f"DROP TABLE IF EXISTS temp.{name}"))


def _pg_merge(conn: Connection) -> bool:
    """PostgreSQL 15+ (MERGE); older servers keep INSERT .. ON CONFLICT."""
    version = conn.dialect.server_version_info or (0,)
    return conn.dialect.name == "postgresql" and version >= (15,)


def _add(conn: Connection, table: Table, keys: tuple[str, ...], select_sql: str) -> None:
    """Add the (bucket, *keys, views) rows of `select_sql` (one row per key) into a rollup table."""
    cols = ("bucket", *keys)
    names = ", ".join(cols)
    if _pg_merge(conn):
        # MERGE joins the delta to the table and then inserts new keys plainly; INSERT .. ON CONFLICT inserts each
        # new key speculatively (an extra index probe and WAL record per row) and locks each existing row before
        # updating it. Measured on the benchmark's month table: 1.5x faster into an empty table, 1.6x when half the
        # keys exist, as fast for late events. Safe without ON CONFLICT because only the pass writes rollup rows
        # and every rollup writer (pass, rebuild, compaction, audit repair) holds the pass lock (pg_pass_lock).
        on = " AND ".join(f"t.{c} = d.{c}" for c in cols)
        conn.execute(text(
            f"MERGE INTO {table.name} t USING ({select_sql} ORDER BY {names}) d ON {on} "
            f"WHEN MATCHED THEN UPDATE SET views = t.views + d.views "
            f"WHEN NOT MATCHED THEN INSERT ({names}, views) VALUES ({', '.join(f'd.{c}' for c in cols)}, d.views)"
        ))
        return
    # `WHERE true` resolves SQLite's parse ambiguity between a SELECT's join clause and ON CONFLICT.
    conn.execute(text(
        f"INSERT INTO {table.name} ({names}, views) SELECT {names}, views FROM ({select_sql}) s WHERE true "
        # Key order: B-tree appends and neighbouring updates instead of random page touches.
        f"ORDER BY {names} ON CONFLICT ({names}) DO UPDATE SET views = {table.name}.views + excluded.views"
    ))


# Where each rollup table's delta comes from: (source, bucket expression, join). Sources are the pass's delta temp
# tables, each read once per table: rollup_hc (UTC hour, local day, reader country) and rollup_dbc (local day, blog,
# reader country) come from raw; rollup_dc (day, country), rollup_db (day, blog), rollup_mbc (month, blog, country)
# and rollup_days (day -> month, year) are derived from them, each from the smallest that holds what it needs.
# 1970-01-01 (day 0) was a Thursday: (day + 3) % 7 is the weekday counted from Monday. Month keys are
# year * 12 + month - 1 and positive, so `/ 12` is the year.
_WEEK = "d.day - (d.day + 3) % 7"
_DAYS = " JOIN rollup_days c ON c.day = d.day"
_SOURCES: dict[tuple[Grain, bool], tuple[str, str, str]] = {
    # (grain, keeps blog) -> source
    (Grain.HOUR, False): ("rollup_hc", "d.hour", ""),
    (Grain.DAY, False): ("rollup_dc", "d.day", ""),
    (Grain.WEEK, False): ("rollup_dc", _WEEK, ""),
    (Grain.MONTH, False): ("rollup_dc", "c.month", _DAYS),
    (Grain.YEAR, False): ("rollup_dc", "c.year", _DAYS),
    (Grain.DAY, True): ("rollup_db", "d.day", ""),
    (Grain.WEEK, True): ("rollup_db", _WEEK, ""),
    (Grain.MONTH, True): ("rollup_mbc", "d.month", ""),
    (Grain.YEAR, True): ("rollup_mbc", "d.month / 12", ""),
}


def raw_deltas(zone: ZoneInfo, lo_us: int, hi_us: int) -> dict[str, str]:
    """The pass's two aggregates of raw events (bound parameters :low and :high select the ids), by temp table name:
    (UTC hour, local day, reader country) and (local day, blog, reader country), for viewed_at in [lo_us, hi_us].
    Public so that bench/rollup.py times exactly what the pass runs."""
    offset = _offset_case(zone, lo_us, hi_us + 1)
    vc = f"COALESCE(viewer_country, '{UNKNOWN_COUNTRY}')"
    return {
        "rollup_hc": f"""
        SELECT viewed_at / {HOUR_US} AS hour, (viewed_at + {offset}) / {DAY_US} AS day, {vc} AS viewer_country,
               count(*) AS views
        FROM view_events WHERE id > :low AND id <= :high GROUP BY 1, 2, 3""",
        "rollup_dbc": f"""
        SELECT (viewed_at + {offset}) / {DAY_US} AS day, blog_id, {vc} AS viewer_country, count(*) AS views
        FROM view_events WHERE id > :low AND id <= :high GROUP BY 1, 2, 3""",
        # Distinct readers per (local day, blog, reader country), with each one's first raw id (arrival order, for
        # the dictionary): storage/reader_sets.py folds them into the reader sets.
        "rollup_readers": f"""
        SELECT (viewed_at + {offset}) / {DAY_US} AS day, blog_id, {vc} AS viewer_country, viewer_id,
               min(id) AS first_id
        FROM view_events WHERE id > :low AND id <= :high AND viewer_id IS NOT NULL GROUP BY 1, 2, 3, 4""",
    }


DELTAS = ("rollup_hc", "rollup_dbc", "rollup_readers", "rollup_dc", "rollup_db", "rollup_days", "rollup_mbc")


def fold_prepare(conn: Connection, zone: ZoneInfo, low: int, high: int) -> int:
    """Compute the deltas of raw events with low < id <= high into this connection's temp tables (DELTAS); return
    how many events that was (0: nothing to add, no temp tables left).

    The raw rows are scanned twice, into two small deltas: (UTC hour, local day, reader country), which feeds
    every blog-less shape, and (local day, blog, reader country), which feeds the blog shapes; coarser deltas are
    derived from those. Reads only raw rows, which never change once committed (compaction deletes only rows at or
    below the watermark, and `low` is one), so on SQLite this runs before the write lock is taken (rollup.refresh).
    """
    span = conn.execute(
        select(func.min(view_events.c.viewed_at), func.max(view_events.c.viewed_at), func.count())
        .where(view_events.c.id > low, view_events.c.id <= high)
    ).one()
    if not span[2]:
        return 0
    lo_us, hi_us, count = int(span[0]), int(span[1]), int(span[2])
    ids = {"low": low, "high": high}
    raw_mem = RAW_SCAN_WORK_MEM if conn.dialect.name == "postgresql" else None
    if raw_mem:
        # The raw aggregates have 0.1-2M groups: one hash table that large misses the CPU caches on every row,
        # while a small work_mem spills in partitions that fit them (1M events, medians of 3 alternating rounds:
        # 4 MB 0.70 / 0.79 s, 256 MB 0.94 / 1.08 s for the hour and the day x blog x country delta).
        conn.execute(text(f"SET LOCAL work_mem = '{raw_mem}'"))
    for name, sql in raw_deltas(zone, lo_us, hi_us).items():
        _temp(conn, name, sql, ids)
    if raw_mem:
        conn.execute(text(f"SET LOCAL work_mem = '{PASS_WORK_MEM}'"))
    _temp(conn, "rollup_dc", "SELECT day, viewer_country, sum(views) AS views FROM rollup_hc GROUP BY 1, 2")
    _temp(conn, "rollup_db", "SELECT day, blog_id, sum(views) AS views FROM rollup_dbc GROUP BY 1, 2")
    _temp(conn, "rollup_days", _civil_select("(SELECT DISTINCT day FROM rollup_dc) d"))
    # Month x blog x country once: the month and year tables of every blog shape read it, not the day delta.
    _temp(conn, "rollup_mbc", "SELECT c.month AS month, d.blog_id, d.viewer_country, sum(d.views) AS views "
                              f"FROM rollup_dbc d{_DAYS} GROUP BY 1, 2, 3")
    return count


def fold_apply(conn: Connection) -> None:
    """Add the deltas fold_prepare left in this connection's temp tables into every rollup table (each table one
    set-based statement), then drop them. The caller holds the pass lock, in the transaction of the watermark move."""
    for (grain, shape), table in rollup_tables.items():
        keys = SHAPE_KEYS[shape]
        if grain is Grain.HOUR and "blog_id" in keys:
            raise AssertionError("the hour grain keeps no blog shape (SHAPE_GRAINS)")
        source, bucket, join = _SOURCES[(grain, "blog_id" in keys)]
        cols = "".join(f", d.{k}" for k in keys)
        if not join and {bucket.removeprefix("d."), *keys} == _DELTA_KEYS[source]:
            # The delta already has one row per key of this table (e.g. day x blog for views_day_by_blog).
            _add(conn, table, keys, f"SELECT {bucket} AS bucket{cols}, d.views AS views FROM {source} d")
            continue
        group = ", ".join(str(i) for i in range(1, len(keys) + 2))
        _add(conn, table, keys, f"SELECT {bucket} AS bucket{cols}, sum(d.views) AS views "
                                f"FROM {source} d{join} GROUP BY {group}")
    reader_sets.fold(conn)
    drop_deltas(conn)


# The key of each delta temp table (fold_prepare): one row per distinct combination.
_DELTA_KEYS = {
    "rollup_hc": {"hour", "day", "viewer_country"},
    "rollup_dbc": {"day", "blog_id", "viewer_country"},
    "rollup_dc": {"day", "viewer_country"},
    "rollup_db": {"day", "blog_id"},
    "rollup_mbc": {"month", "blog_id", "viewer_country"},
}


def drop_deltas(conn: Connection) -> None:
    """Drop the delta temp tables (SQLite keeps temp tables for the connection's life; PostgreSQL drops them at
    commit)."""
    _drop_temps(conn, *DELTAS)


def truncate_rollups(conn: Connection) -> None:
    """Empty the five grains and forget their horizons (a rebuild recomputes them from raw)."""
    for t in [*rollup_tables.values(), *reader_tables.values()]:
        conn.execute(t.delete())
    # Every grain is refilled from raw with its reader sets: readers are answerable again (migration 0006).
    conn.execute(update(rollup_state).where(rollup_state.c.id == STATE_ID).values(readers_from=0))
    conn.execute(rollup_horizons.delete().where(rollup_horizons.c.grain != RAW))
    # Rollup rows changed without the watermark alone saying so: cached rollup parts must not be reused.
    bump_version(conn, ROLLUPS_VERSION)


# ---------------------------------------------------------------- retention


def horizons(conn: Connection) -> dict[str, int]:
    """Grain name ("raw", "hour", ...) -> first instant still complete there (0 = nothing compacted)."""
    out = {RAW: 0, **{g.value: 0 for g in GRAINS}}
    for grain, kept_from in conn.execute(select(rollup_horizons.c.grain, rollup_horizons.c.kept_from)):
        out[grain] = int(kept_from)
    return out


def _set_horizon(conn: Connection, grain: str, kept_from: int) -> None:
    """Record a grain's horizon; it only moves forward (deleted data does not come back)."""
    current = conn.execute(select(rollup_horizons.c.kept_from).where(rollup_horizons.c.grain == grain)).scalar()
    if current is None:
        conn.execute(insert(rollup_horizons).values(grain=grain, kept_from=kept_from))
    elif kept_from > current:
        conn.execute(update(rollup_horizons).where(rollup_horizons.c.grain == grain).values(kept_from=kept_from))


def compact_raw(conn: Connection, cutoff_us: int, wm: int) -> int:
    """Delete raw events folded in (id <= wm) and older than the hour start at or before `cutoff_us`."""
    kept_from = cutoff_us // HOUR_US * HOUR_US
    cond = [view_events.c.id <= wm, view_events.c.viewed_at < kept_from]
    if conn.dialect.name == "sqlite":
        # SQLite gives a new row MAX(id) + 1 (view_events.id is a rowid without AUTOINCREMENT, which would cost
        # the bulk import 25-40%). Deleting the rows with the highest ids (late events arrive last and can be
        # the oldest) would let new events take ids at or below the watermark, never to be folded in. So the
        # row with the highest id stays, whatever its age; past the raw horizon, no plan reads it.
        cond.append(view_events.c.id < select(func.max(view_events.c.id)).scalar_subquery())
    deleted = int(conn.execute(view_events.delete().where(*cond)).rowcount or 0)
    _set_horizon(conn, RAW, kept_from)
    if deleted:
        # Late events folded since a reader cached a rollup part may be among them: that part plus the raw events
        # above its older watermark would miss them (storage/queries.py, ReadContext.state_key).
        bump_version(conn, ROLLUPS_VERSION)
    return deleted


def compact_grain(conn: Connection, grain: Grain, cutoff_us: int, zone: ZoneInfo) -> int:
    """Delete a grain's buckets that end at or before the start of the bucket holding `cutoff_us`."""
    first_kept = bucket_key(grain, cutoff_us, zone)
    deleted = 0
    for table in grain_tables(grain):
        deleted += int(conn.execute(table.delete().where(table.c.bucket < first_kept)).rowcount or 0)
    _set_horizon(conn, grain.value, bucket_interval(grain, first_kept, zone)[0])
    if deleted:
        bump_version(conn, ROLLUPS_VERSION)  # rollup rows gone: cached parts are not reused (see compact_raw)
    return deleted


def record_compaction(conn: Connection, at_us: int) -> None:
    """Remember when compaction last ran."""
    conn.execute(update(rollup_state).where(rollup_state.c.id == STATE_ID).values(last_compact_at=at_us))


# ---------------------------------------------------------------- audit


Key = tuple[int, int | None, str | None]  # (bucket, blog_id, viewer_country); None where the shape has no such key


@dataclass(frozen=True, slots=True)
class Cell:
    """One rollup cell: its table (grain and shape), key, instant interval, and the views it holds (0 if absent)."""

    grain: Grain
    shape: Shape
    bucket: int
    blog_id: int | None
    viewer_country: str | None
    start: int
    end: int
    stored: int


def project(shape: Shape, bucket: int, blog_id: int, viewer_country: str) -> Key:
    """A full key narrowed to what `shape` keeps."""
    keys = SHAPE_KEYS[shape]
    return (bucket, blog_id if "blog_id" in keys else None, viewer_country if "viewer_country" in keys else None)


def _key_cols(table: Table, shape: Shape) -> list[Any]:
    return [table.c.bucket, *(table.c[k] for k in SHAPE_KEYS[shape])]


def _as_key(shape: Shape, row: tuple[Any, ...]) -> Key:
    keys = SHAPE_KEYS[shape]
    values = dict(zip(keys, row[1:], strict=True))
    blog = values.get("blog_id")
    country = values.get("viewer_country")
    return (int(row[0]), None if blog is None else int(blog), None if country is None else str(country))


def sample_stored_cells(conn: Connection, grain: Grain, shape: Shape, n: int) -> list[Key]:
    """Up to `n` random keys stored in one rollup table."""
    t = rollup_tables[(grain, shape)]
    rows = conn.execute(select(*_key_cols(t, shape)).order_by(func.random()).limit(n))
    return [_as_key(shape, tuple(r)) for r in rows]


def sample_raw_events(conn: Connection, ids: list[int]) -> list[tuple[int, int, str]]:
    """(viewed_at, blog_id, viewer_country) of the raw events with the given ids that exist."""
    if not ids:
        return []
    rows = conn.execute(select(view_events.c.viewed_at, view_events.c.blog_id,
                               func.coalesce(view_events.c.viewer_country, UNKNOWN_COUNTRY))
                        .where(view_events.c.id.in_(ids)))
    return [(int(a), int(b), str(c)) for a, b, c in rows]


def stored_views(conn: Connection, grain: Grain, shape: Shape, keys: list[Key]) -> dict[Key, int]:
    """Views stored in one rollup table for the given keys (missing keys are absent from the result)."""
    t = rollup_tables[(grain, shape)]
    cols = _key_cols(t, shape)
    out: dict[Key, int] = {}
    for i in range(0, len(keys), 500):
        batch = [tuple(v for v in k if v is not None) for k in keys[i:i + 500]]
        cond = tuple_(*cols).in_(batch) if len(cols) > 1 else cols[0].in_([b[0] for b in batch])
        for row in conn.execute(select(*cols, t.c.views).where(cond)):
            out[_as_key(shape, tuple(row[:-1]))] = int(row[-1])
    return out


def raw_counts(conn: Connection, cells: list[Cell], wm: int) -> list[int]:
    """Raw views (id <= wm) per cell, recomputed from its instant interval, one statement per shape.

    Cells keyed by blog drive the join from the raw table (SQLite: CROSS JOIN fixes the loop order; PostgreSQL
    hashes the cells), so their cost is one pass over raw whatever their number and length. Cells without a blog
    key are counted through the viewed_at index over their interval, so the caller samples few long ones.
    """
    if not cells:
        return []
    on_commit = " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""
    _drop_temps(conn, "audit_cells")
    conn.execute(text("CREATE TEMP TABLE audit_cells (i INTEGER PRIMARY KEY, shape VARCHAR(16), blog_id INTEGER, "
                      f"viewer_country VARCHAR(2), lo BIGINT, hi BIGINT){on_commit}"))
    prefix = "temp." if conn.dialect.name == "sqlite" else ""
    conn.execute(text(f"CREATE INDEX {prefix}ix_audit_cells ON audit_cells (blog_id, viewer_country)"))
    conn.execute(text("INSERT INTO audit_cells (i, shape, blog_id, viewer_country, lo, hi) "
                      "VALUES (:i, :shape, :blog_id, :viewer_country, :lo, :hi)"),
                 [{"i": i, "shape": c.shape.value, "blog_id": c.blog_id, "viewer_country": c.viewer_country,
                   "lo": c.start, "hi": c.end} for i, c in enumerate(cells)])
    vc = f"COALESCE(e.viewer_country, '{UNKNOWN_COUNTRY}')"
    statements = {
        Shape.FULL: "SELECT c.i AS i, count(*) AS n FROM view_events e CROSS JOIN audit_cells c "
                    f"WHERE c.shape = 'full' AND e.blog_id = c.blog_id AND {vc} = c.viewer_country "
                    "AND e.viewed_at >= c.lo AND e.viewed_at < c.hi AND e.id <= :wm GROUP BY c.i",
        Shape.BY_BLOG: "SELECT c.i AS i, count(*) AS n FROM view_events e CROSS JOIN audit_cells c "
                       "WHERE c.shape = 'by_blog' AND e.blog_id = c.blog_id "
                       "AND e.viewed_at >= c.lo AND e.viewed_at < c.hi AND e.id <= :wm GROUP BY c.i",
        Shape.BY_COUNTRY: "SELECT c.i AS i, (SELECT count(*) FROM view_events e WHERE e.viewed_at >= c.lo "
                          f"AND e.viewed_at < c.hi AND e.id <= :wm AND {vc} = c.viewer_country) AS n "
                          "FROM audit_cells c WHERE c.shape = 'by_country'",
        Shape.TOTAL: "SELECT c.i AS i, (SELECT count(*) FROM view_events e WHERE e.viewed_at >= c.lo "
                     "AND e.viewed_at < c.hi AND e.id <= :wm) AS n FROM audit_cells c WHERE c.shape = 'total'",
    }
    counts: dict[int, int] = {}
    for shape in {c.shape for c in cells}:
        counts.update({int(i): int(n) for i, n in conn.execute(text(statements[shape]), {"wm": wm})})
    _drop_temps(conn, "audit_cells")
    return [counts.get(i, 0) for i in range(len(cells))]


def set_cell(conn: Connection, cell: Cell, views: int) -> None:
    """Overwrite one rollup cell with the recomputed count (deleting it when 0).

    Every shape is an independent sum over raw events, so one cell is repaired on its own.
    """
    t = rollup_tables[(cell.grain, cell.shape)]
    values: dict[str, Any] = {"bucket": cell.bucket}
    if cell.blog_id is not None:
        values["blog_id"] = cell.blog_id
    if cell.viewer_country is not None:
        values["viewer_country"] = cell.viewer_country
    cond = [t.c[k] == v for k, v in values.items()]
    conn.execute(t.delete().where(*cond))
    if views:
        conn.execute(insert(t).values(**values, views=views))
    bump_version(conn, ROLLUPS_VERSION)  # a repaired cell changes answers at an unchanged watermark


def record_audit(conn: Connection, at_us: int) -> None:
    """Remember when the audit last ran."""
    conn.execute(update(rollup_state).where(rollup_state.c.id == STATE_ID).values(last_audit_at=at_us))


# ---------------------------------------------------------------- status


def status(conn: Connection, retention_days: dict[str, int] | None = None) -> RollupStatus:
    """Watermark, pending raw events, last run and per-grain rows/oldest/newest/retention (pure data)."""
    state = read_state(conn)
    zone_name = state.timezone if state else None
    retention = retention_days or {}
    wm = state.watermark if state else 0
    grains: list[GrainStatus] = []
    raw = conn.execute(select(func.count(), func.min(view_events.c.viewed_at),
                              func.max(view_events.c.viewed_at))).one()
    grains.append(GrainStatus(RAW, int(raw[0]), raw[1], raw[2], retention.get(RAW)))
    z = ZoneInfo(zone_name) if zone_name else ZoneInfo("UTC")
    for g in GRAINS:
        # Rows: every table of the grain (what it costs to keep); span: the totals, which every event reaches.
        n = sum(int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
                for (tg, _s), t in rollup_tables.items() if tg is g)  # view counts (reader sets are extra)
        t = rollup_tables[(g, Shape.TOTAL)]
        lo, hi = conn.execute(select(func.min(t.c.bucket), func.max(t.c.bucket))).one()
        oldest = bucket_interval(g, int(lo), z)[0] if lo is not None else None
        newest = bucket_interval(g, int(hi), z)[0] if hi is not None else None
        grains.append(GrainStatus(g.value, int(n), oldest, newest, retention.get(g.value)))
    finished = state.last_run_at + state.last_run_ms * 1000 if state and state.last_run_at is not None else None
    return RollupStatus(
        watermark=state.last_run_at if state else None, watermark_id=wm, pending_events=pending_events(conn, wm),
        last_run_at=finished, last_run_events=state.last_run_events if state else 0, timezone=zone_name,
        grains=grains,
    )
