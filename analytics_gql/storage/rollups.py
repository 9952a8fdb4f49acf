"""Rollup state (the watermark row, the pass locks, status) and, re-exported, the write side by concern:
storage/fold.py (folding chunks), storage/retention.py (compaction, horizons), storage/audit.py (cells recomputed).

Every function takes a Connection first and never commits: `analytics_gql.rollup` owns the transactions.
Bucketing is integer arithmetic on BIGINT microseconds, so SQLite and PostgreSQL agree to the bucket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from analytics_gql.domain.calendar import GRAINS, Grain, bucket_interval
from analytics_gql.domain.planning import RAW
from analytics_gql.storage.audit import (
    Cell,
    Key,
    project,
    raw_counts,
    record_audit,
    sample_raw_events,
    sample_stored_cells,
    set_cell,
    stored_views,
)
from analytics_gql.storage.fold import (
    DELTAS,
    PASS_WORK_MEM,
    RAW_SCAN_WORK_MEM,
    drop_deltas,
    fold_apply,
    fold_prepare,
    pg_tune_pass,
    raw_deltas,
    truncate_rollups,
)
from analytics_gql.storage.retention import compact_grain, compact_raw, horizons, record_compaction
from analytics_gql.storage.tables import (
    STATE_ID,
    Shape,
    reader_tables,
    rollup_state,
    rollup_tables,
    view_events,
)

__all__ = [
    "DELTAS", "Grain", "PASS_LOCK_KEY",
    "PASS_WORK_MEM", "RAW", "RAW_SCAN_WORK_MEM", "STATE_ID", "Cell", "GrainStatus", "Key",
    "RollupStatus", "State", "advance_watermark", "compact_grain", "compact_raw", "drop_deltas", "ensure_state",
    "fold_apply", "fold_prepare", "horizons", "max_event_id", "now_us", "pending_events", "pg_pass_lock",
    "pg_safe_high", "pg_tune_pass", "project", "raw_counts", "raw_deltas", "read_state", "record_audit",
    "record_compaction", "record_run", "reporting_zone", "rollups_empty", "sample_raw_events",
    "sample_stored_cells", "set_cell", "set_timezone", "status", "stored_views", "truncate_rollups", "watermark",
]

# Arbitrary but fixed: every process folding into this database serialises on this advisory lock key.
PASS_LOCK_KEY = 0x616E616C79746963  # "analytic"


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
