"""What the planner needs from the database, read in the query's snapshot, and the plans it gets.

`read_context` reads the watermark, zone, horizons, max id and data versions in one statement; `plan_for` memoises
the planner (domain/planning.py) on them; `split_moving` cuts the moving ends off windows (so that the interior is
the same question for an hour and stays cached) before they are planned.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from analytics_gql.domain.calendar import GRAINS, HOUR_US, US, Grain, bucket_interval
from analytics_gql.domain.planning import RAW, Plan, plan
from analytics_gql.storage.query_cache import QueryCache
from analytics_gql.storage.tables import DIMENSIONS_VERSION, ROLLUPS_VERSION, STATE_ID, Shape, rollup_tables


@dataclass(frozen=True)
class ReadContext:
    """What the planner needs from the database, read in the query's snapshot."""

    watermark: int
    rollup_zone: ZoneInfo | None
    horizons: dict[str, int]
    as_of: int
    watermark_time: int | None
    max_id: int
    dimensions_version: int | None = None
    rollups_version: int | None = None
    readers_from: int = 0  # > 0: events folded before reader sets existed (migration 0006) are in no set

    @property
    def state_key(self) -> tuple[Any, ...]:
        """What the rows at or below a watermark depend on besides it (zone, horizons, data versions).

        Under one state key, the rollup part of a question read at watermark w1 plus the raw events with ids above
        w1 is the answer at any later watermark: a pass only adds the events between the two watermarks, which
        stay in raw until a compaction, and every compaction, rebuild or repair changes the key (rollups version).
        """
        zone = self.rollup_zone.key if self.rollup_zone is not None else None
        return (zone, tuple(sorted(self.horizons.items())), self.dimensions_version, self.rollups_version)


_CONTEXT_SQL = text(
    f"SELECT 's', watermark, timezone, last_run_at FROM rollup_state WHERE id = {int(STATE_ID)} "
    f"UNION ALL SELECT 'r', readers_from, NULL, NULL FROM rollup_state WHERE id = {int(STATE_ID)} "
    "UNION ALL SELECT 'm', MAX(id), NULL, NULL FROM view_events "
    "UNION ALL SELECT 'v' || name, version, NULL, NULL FROM data_versions "
    "UNION ALL SELECT 'h' || grain, kept_from, NULL, NULL FROM rollup_horizons")


def read_context(conn: Connection) -> ReadContext:
    """Watermark, the zone the local rollups were built in, retention horizons, max id and data versions.

    One statement (one round trip per request instead of four).
    """
    now = time.time_ns() // 1000
    state: tuple[int, str, int | None] | None = None
    max_id = 0
    versions: dict[str, int] = {}
    horizons = {RAW: 0, **{g.value: 0 for g in GRAINS}}
    readers_from = 0
    for kind, value, zone, last_run in conn.execute(_CONTEXT_SQL):
        if kind == "r":
            readers_from = int(value)
        elif kind == "s":
            state = (int(value), str(zone), None if last_run is None else int(last_run))
        elif kind == "m":
            max_id = int(value or 0)
        elif kind[0] == "v":
            versions[kind[1:]] = int(value)
        else:
            horizons[kind[1:]] = int(value)
    dims, rolls = versions.get(DIMENSIONS_VERSION), versions.get(ROLLUPS_VERSION)
    if state is None:
        return ReadContext(0, None, {}, now, None, max_id, dims, rolls)
    return ReadContext(state[0], ZoneInfo(state[1]), horizons, now, state[2], max_id, dims, rolls, readers_from)


class NeedsThread(Exception):  # noqa: N818 - a signal, not an error
    """A quick read (Database.read(quick=True)) needed a statement beyond its read context: redo it in a thread."""


def sql_allowed(conn: Connection) -> None:
    """Refuse further statements in a quick read: the caller runs on the event loop and must not wait on SQL."""
    if conn.get_execution_options().get("quick"):
        raise NeedsThread


def data_start(conn: Connection, ctx: ReadContext) -> int | None:
    """The first instant with data (raw events, or the oldest rollup bucket when raw was compacted)."""
    sql_allowed(conn)
    first = conn.execute(text("SELECT MIN(viewed_at) FROM view_events")).scalar()
    candidates = [int(first)] if first is not None else []
    # Only when raw events were compacted: otherwise raw holds every event, and a bucket's start would move "the
    # beginning of the data" (and so AUTO's granularity) back to the start of that bucket after a pass.
    if ctx.rollup_zone is not None and ctx.horizons.get(RAW, 0) > 0:
        # The finest grain never compacted holds every folded event: its oldest bucket starts at or before the first
        # one, and closest to it (the year bucket would pad a series with empty periods back to January 1). When
        # every grain was compacted, the coarsest grain's oldest bucket is still the earliest data there is.
        kept = [g for g in GRAINS if ctx.horizons.get(g.value, 0) == 0] or [GRAINS[-1]]
        grain = kept[0]
        table = rollup_tables[(grain, Shape.TOTAL)].name
        oldest = conn.execute(text(f"SELECT MIN(bucket) FROM {table}")).scalar()
        if oldest is not None:
            candidates.append(bucket_interval(grain, int(oldest), ctx.rollup_zone)[0])
    return min(candidates) if candidates else None


_MEMO_WINDOWS = 10_000


@functools.lru_cache(maxsize=256)
def _memo_plan(windows: tuple[tuple[int, int], ...], zone: ZoneInfo | None, watermark: int,
               horizons: tuple[tuple[str, int], ...], grains: frozenset[Grain]) -> Plan:
    return plan(windows, rollup_zone=zone, watermark=watermark, horizons=dict(horizons), grains=grains)


def plan_for(windows: list[tuple[int, int]], ctx: ReadContext | None,
             grains: Collection[Grain] = GRAINS) -> Plan:
    """The plan of `windows` over `grains` in the read context (None: raw tail only), memoised; do not change it."""
    zone, watermark, horizons = (ctx.rollup_zone, ctx.watermark, ctx.horizons) if ctx else (None, 0, {})
    if len(windows) > _MEMO_WINDOWS:
        return plan(windows, rollup_zone=zone, watermark=watermark, horizons=horizons, grains=grains)
    return _memo_plan(tuple(windows), zone, watermark, tuple(sorted(horizons.items())), frozenset(grains))


QUARTER_HOUR_US = 15 * 60 * US


def split_moving(windows: list[tuple[int, int]], ctx: ReadContext) -> tuple[list[tuple[int, int]],
                                                                             list[tuple[int, int, int]]]:
    """Windows with their moving ends cut off, and the cut-off pieces as (window index, lo, hi).

    A range computed per request ("the last 365 days" at millisecond precision, or ending now) gives a new window
    list with every request, so its rollup part would never be reused from the cache (and each one would push a
    warm entry out). A window starting or ending off the quarter hours is cut at the UTC hour after its start and
    before its end: the whole-hour interior is the same for an hour and is cached as usual, and the pieces outside
    it (under an hour of raw events each, found by the viewed_at index) are read live with the tail. Not where
    raw events of a piece were compacted: that end keeps its place in the plan (and its retention error).
    """
    if ctx.rollup_zone is None or ctx.watermark <= 0:
        return windows, []  # no rollups: the tail reads every window anyway
    return cut_windows(windows, ctx.horizons.get(RAW, 0))


def cut_windows(windows: list[tuple[int, int]], raw_kept: int = 0) -> tuple[list[tuple[int, int]],
                                                                              list[tuple[int, int, int]]]:
    """split_moving's cut, for pieces that lie at or after `raw_kept`."""
    stable: list[tuple[int, int]] = []
    moving: list[tuple[int, int, int]] = []
    for i, (a, b) in enumerate(windows):
        lo, hi = a, b
        if a < b and a % QUARTER_HOUR_US and a >= raw_kept:
            lo = min(b, a - a % HOUR_US + HOUR_US)
            moving.append((i, a, lo))
        if lo < b and b % QUARTER_HOUR_US:
            cut = max(lo, b - b % HOUR_US)
            if cut >= raw_kept:
                moving.append((i, cut, b))
                hi = cut
        # An empty interior is one key whatever the instants (the cache would otherwise hold one per request).
        stable.append((lo, hi) if lo < hi else (0, 0))
    return stable, moving


def cache_of(conn: Connection) -> QueryCache | None:
    """The Database's query cache, set on its read connections (None: disabled, or not a read transaction)."""
    cache = conn.get_execution_options().get("query_cache")
    return cache if isinstance(cache, QueryCache) else None
