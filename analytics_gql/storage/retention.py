"""Rollup write side, retention: compaction of raw events and grains past their horizons, and the horizons."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, insert, select, update

from analytics_gql.domain.calendar import GRAINS, HOUR_US, Grain, bucket_interval, bucket_key
from analytics_gql.domain.planning import RAW
from analytics_gql.storage.tables import (
    ROLLUPS_VERSION,
    STATE_ID,
    bump_version,
    grain_tables,
    rollup_horizons,
    rollup_state,
    view_events,
)


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


