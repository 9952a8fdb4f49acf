"""Rollup write side, folding: a chunk of raw events as deltas in temp tables, added into every rollup table.

Every function takes a Connection first and never commits: `analytics_gql.rollup` owns the transactions.
Bucketing is integer arithmetic on BIGINT microseconds, so SQLite and PostgreSQL agree to the bucket.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, func, select, text, update

from analytics_gql.domain.calendar import DAY_US, HOUR_US, Grain, day_offset_segments
from analytics_gql.domain.planning import RAW
from analytics_gql.storage import citus, reader_sets
from analytics_gql.storage.tables import (
    ROLLUPS_VERSION,
    SHAPE_KEYS,
    STATE_ID,
    UNKNOWN_COUNTRY,
    bump_version,
    reader_tables,
    rollup_horizons,
    rollup_state,
    rollup_tables,
    view_events,
)

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


def drop_temps(conn: Connection, *names: str) -> None:
    """SQLite keeps temp tables for the connection's life: drop ours (PostgreSQL drops them at commit)."""
    if conn.dialect.name == "sqlite":
        for name in names:
            conn.execute(text(f"DROP TABLE IF EXISTS temp.{name}"))


def _pg_merge(conn: Connection) -> bool:
    """PostgreSQL 15+ (MERGE); older servers and Citus (no MERGE into a distributed table from a temp table)
    keep INSERT .. ON CONFLICT."""
    version = conn.dialect.server_version_info or (0,)
    if conn.dialect.name != "postgresql" or version < (15,):
        return False
    return not citus.on_citus(conn)


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
    # Citus: the blog-keyed rollups are added straight from raw, shard by shard on the workers (fold_apply).
    conn.info["fold_raw"] = (zone, lo_us, hi_us, low, high)
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
    raw = conn.info.pop("fold_raw", None)
    pushdown = raw is not None and citus.on_citus(conn)
    for (grain, shape), table in rollup_tables.items():
        keys = SHAPE_KEYS[shape]
        if grain is Grain.HOUR and "blog_id" in keys:
            raise AssertionError("the hour grain keeps no blog shape (SHAPE_GRAINS)")
        if pushdown and "blog_id" in keys:
            _add_from_raw(conn, table, grain, keys, raw)
            continue
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


# Citus: the bucket of a raw event's local day `day` per grain, in PostgreSQL's (proleptic Gregorian) calendar,
# which is _civil_select's; the month key is year * 12 + month - 1.
_LOCAL_DATE = "(DATE '1970-01-01' + r.day::int)"
_RAW_BUCKETS = {
    Grain.DAY: "r.day",
    Grain.WEEK: "r.day - (r.day + 3) % 7",
    Grain.MONTH: f"(EXTRACT(YEAR FROM {_LOCAL_DATE}) * 12 + EXTRACT(MONTH FROM {_LOCAL_DATE}) - 1)::int",
    Grain.YEAR: f"EXTRACT(YEAR FROM {_LOCAL_DATE})::int",
}


def _add_from_raw(conn: Connection, table: Table, grain: Grain, keys: tuple[str, ...],
                  raw: tuple[ZoneInfo, int, int, int, int]) -> None:
    """Citus: add a blog-keyed table's delta with one co-located INSERT .. SELECT .. ON CONFLICT from raw events,
    which Citus runs on each shard pair on its worker (raw and rollup rows of a blog share a shard), in the pass's
    distributed transaction. The coordinator sends the statement and receives no rows."""
    zone, lo_us, hi_us, low, high = raw
    offset = _offset_case(zone, lo_us, hi_us + 1)
    names = ", ".join(("bucket", *keys))
    sel = ", ".join(f"r.{k}" for k in keys)
    conn.execute(text(
        f"INSERT INTO {table.name} ({names}, views) SELECT {_RAW_BUCKETS[grain]} AS bucket, {sel}, count(*) "
        f"FROM (SELECT (viewed_at + {offset}) / {DAY_US} AS day, blog_id, "
        f"COALESCE(viewer_country, '{UNKNOWN_COUNTRY}') AS viewer_country FROM view_events "
        f"WHERE id > :low AND id <= :high) r GROUP BY 1, {', '.join(str(i + 2) for i in range(len(keys)))} "
        f"ON CONFLICT ({names}) DO UPDATE SET views = {table.name}.views + excluded.views"), {"low": low, "high": high})


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
    conn.info.pop("fold_raw", None)
    drop_temps(conn, *DELTAS)


def truncate_rollups(conn: Connection) -> None:
    """Empty the five grains and forget their horizons (a rebuild recomputes them from raw)."""
    for t in [*rollup_tables.values(), *reader_tables.values()]:
        conn.execute(t.delete())
    # Every grain is refilled from raw with its reader sets: readers are answerable again (migration 0006).
    conn.execute(update(rollup_state).where(rollup_state.c.id == STATE_ID).values(readers_from=0))
    conn.execute(rollup_horizons.delete().where(rollup_horizons.c.grain != RAW))
    # Rollup rows changed without the watermark alone saying so: cached rollup parts must not be reused.
    bump_version(conn, ROLLUPS_VERSION)


