"""What `analytics-gql status` reports (CONTRACT 6): the rollupStatus data plus what an operator's probe needs.

Read in one snapshot by the caller (`analytics_gql.rollup.operator_status`). Sizes are PostgreSQL's
`pg_total_relation_size` (table, indexes and TOAST); SQLite keeps every table in one file, so its tables have none.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Table, func, select, text

from analytics_gql.storage import rollups as store
from analytics_gql.storage.tables import SHAPE_GRAINS, Shape, rollup_tables, view_events


@dataclass(frozen=True, slots=True)
class TableStatus:
    """One stored table: its grain ("raw" for view_events), shape, rows and bytes (None on SQLite)."""

    name: str
    grain: str
    shape: str | None
    rows: int
    bytes: int | None


@dataclass(frozen=True, slots=True)
class OperatorStatus:
    """rollupStatus, and: the oldest pending event, the last pass's duration, every table, retention horizons.

    `lag_us` is how long the oldest pending event can have waited: 0 when nothing is pending; otherwise the time
    since the watermark instant (every event committed before it is folded, so every pending one arrived later),
    or, before any pass has caught up, the age of the oldest pending event's `viewedAt`.
    """

    rollup: store.RollupStatus
    now: int
    last_run_ms: int | None
    oldest_pending_id: int | None
    oldest_pending_viewed_at: int | None
    tables: tuple[TableStatus, ...]
    horizons: dict[str, int]
    lag_us: int


def _size(conn: Connection, table: Table) -> int | None:
    if conn.dialect.name == "sqlite":
        return None
    return int(conn.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": table.name}).scalar()
               or 0)


def _rows(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def read(conn: Connection, retention_days: dict[str, int] | None, now: int) -> OperatorStatus:
    """Everything `status` prints, from one connection (the caller's snapshot)."""
    rs = store.status(conn, retention_days)
    state = store.read_state(conn)
    oldest = conn.execute(select(view_events.c.id, view_events.c.viewed_at)
                          .where(view_events.c.id > rs.watermark_id)
                          .order_by(view_events.c.id).limit(1)).first()
    tables = [TableStatus(view_events.name, store.RAW, None, _rows(conn, view_events), _size(conn, view_events))]
    for shape in Shape:
        for grain in SHAPE_GRAINS[shape]:
            t = rollup_tables[(grain, shape)]
            tables.append(TableStatus(t.name, grain.value, shape.value, _rows(conn, t), _size(conn, t)))
    tables.sort(key=lambda t: (t.grain != store.RAW, t.name))
    if rs.pending_events == 0:
        lag = 0
    elif rs.watermark is not None:
        lag = max(0, now - rs.watermark)
    else:
        lag = max(0, now - int(oldest.viewed_at)) if oldest is not None else 0
    return OperatorStatus(
        rollup=rs, now=now,
        last_run_ms=state.last_run_ms if state is not None and state.last_run_at is not None else None,
        oldest_pending_id=int(oldest.id) if oldest is not None else None,
        oldest_pending_viewed_at=int(oldest.viewed_at) if oldest is not None else None,
        tables=tuple(tables), horizons=store.horizons(conn), lag_us=lag,
    )
