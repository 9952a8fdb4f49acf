"""The read side: runs a plan as one set-based statement (plus one for blogs created); the only read SQL.

Integers that the planner computed (bucket keys, instants, indexes) are written into the statement as literals
after int() (no user text ever is); every user-supplied string (filter ids and codes) is a bound parameter.
"""

from __future__ import annotations

import functools
import heapq
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, text

from analytics_gql.domain import filters as F
from analytics_gql.domain.calendar import GRAINS, HOUR_US, US, Grain, bucket_interval
from analytics_gql.domain.memo import SharedList
from analytics_gql.domain.planning import RAW, TAIL, Plan, Run, plan
from analytics_gql.domain.queries import Dimension, SourceUse
from analytics_gql.storage.query_cache import QueryCache
from analytics_gql.storage.rollups import STATE_ID
from analytics_gql.storage.tables import (
    DIMENSIONS_VERSION,
    ROLLUPS_VERSION,
    SHAPE_GRAINS,
    SHAPE_KEYS,
    UNKNOWN_COUNTRY,
    Shape,
    rollup_tables,
)

# Pages of one cached part kept as list objects (_Part.pages).
_PAGES_PER_PART = 16
# Up to this many events above the watermark, the tail is read through the id index.
SMALL_TAIL = 200_000
# A cached rollup part read at an older watermark is reused while at most this many events lie above that
# watermark (they are read as its tail): a pass then costs the next request a tail read, not a full re-read.
REUSE_TAIL = 20_000


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


def _sql_allowed(conn: Connection) -> None:
    """Refuse further statements in a quick read: the caller runs on the event loop and must not wait on SQL."""
    if conn.get_execution_options().get("quick"):
        raise NeedsThread


def data_start(conn: Connection, ctx: ReadContext) -> int | None:
    """The first instant with data (raw events, or the oldest rollup bucket when raw was compacted)."""
    _sql_allowed(conn)
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


class _Params:
    """Bound parameters for user strings."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f":{name}"


def _values_cte(name: str, runs: list[Run]) -> str:
    rows = ", ".join(f"({int(r.lo)}, {int(r.hi)}, {int(r.base)}, {int(r.step)})" for r in runs)
    return f"{name}(lo, hi, base, step) AS (VALUES {rows})"


def compile_filter(f: F.Filter, params: _Params, vc: str) -> str:
    """SQL for a filter over aliases b (blogs), a (authors) and the reader-country expression `vc`."""
    if isinstance(f, F.Const):
        return "1=1" if f.value else "1=0"
    if isinstance(f, F.Atom):
        values = sorted(f.values)
        if f.field in (F.Field.COUNTRY, F.Field.VIEWER_COUNTRY):
            values = [v for v in values if v != UNKNOWN_COUNTRY]  # a missing country matches no predicate
        if not values:
            return "1=0"
        marks = ", ".join(params.add(v) for v in values)
        if f.field is F.Field.BLOG:
            return f"b.external_id IN ({marks})"
        if f.field is F.Field.AUTHOR:
            return f"a.external_id IN ({marks})"
        if f.field is F.Field.COUNTRY:
            return f"(b.country_code IS NOT NULL AND b.country_code IN ({marks}))"
        return f"{vc} IN ({marks})"
    if isinstance(f, F.And | F.Or):
        if not f.parts:
            return "1=1" if isinstance(f, F.And) else "1=0"
        glue = " AND " if isinstance(f, F.And) else " OR "
        return "(" + glue.join(compile_filter(p, params, vc) for p in f.parts) + ")"
    return f"(NOT {compile_filter(f.part, params, vc)})"


def _needs_blogs(f: F.Filter, dim: Dimension | None) -> bool:
    return dim in (Dimension.AUTHOR, Dimension.COUNTRY) or any(
        F.mentions(f, fld) for fld in (F.Field.BLOG, F.Field.AUTHOR, F.Field.COUNTRY))


def _group_key(dim: Dimension | None, blog: str, vc: str) -> str:
    if dim is None:
        return "'-'"  # a constant, so it is left out of GROUP BY (SQLite reads integers there as positions)
    return {Dimension.BLOG: blog, Dimension.AUTHOR: "b.author_id",
            Dimension.COUNTRY: f"COALESCE(b.country_code, '{UNKNOWN_COUNTRY}')", Dimension.VIEWER_COUNTRY: vc}[dim]


def rollup_shape(dim: Dimension | None, f: F.Filter) -> Shape:
    """The smallest rollup shape that answers: totals (an unfiltered series), by reader country (no blog
    attribute or blog count needed), by blog (no reader country involved), else the full (blog, country) key.
    Grains that do not keep it (SHAPE_GRAINS) are not planned; raw events answer for them."""
    blog_level = any(F.mentions(f, fld) for fld in (F.Field.BLOG, F.Field.AUTHOR, F.Field.COUNTRY))
    if dim is None and f == F.TRUE:
        return Shape.TOTAL
    if dim is None and not blog_level:
        return Shape.BY_COUNTRY
    if dim is not Dimension.VIEWER_COUNTRY and not F.mentions(f, F.Field.VIEWER_COUNTRY):
        return Shape.BY_BLOG
    return Shape.FULL


def _members(p: Plan, sources: list[str], shape: Shape, dim: Dimension | None, f: F.Filter, params: _Params,
             *, small_tail: bool, max_id: int) -> tuple[list[str], list[str]]:
    """The CTEs of the runs of `sources` and the union members (src, pidx, gkey, blog_id, views) over them."""
    ctes: list[str] = []
    members: list[str] = []
    joins_b = _needs_blogs(f, dim)
    joins_a = F.mentions(f, F.Field.AUTHOR)
    for source in sources:
        runs = p.runs[source]
        cte = f"plan_{source}"
        ctes.append(_values_cte(cte, runs))
        if source in (RAW, TAIL):
            alias, blog, vc = "e", "e.blog_id", f"COALESCE(e.viewer_country, '{UNKNOWN_COUNTRY}')"
            table, col = "view_events", "e.viewed_at"
            ids = f"e.id {'<=' if source == RAW else '>'} {int(p.watermark)}"
            if source == RAW:
                # The runs' ranges as literals: with no statistics at all, PostgreSQL planned a join of several runs
                # as a nested loop over a sequential scan; constant ranges make the viewed_at index the path.
                ids += " AND " + _raw_ranges(runs)
            if source == TAIL and small_tail:
                # A short tail is found by id (the primary key), not by scanning the range's events by time:
                # the unary plus keeps both databases from using the viewed_at index for this member.
                col = "+e.viewed_at"
                # Both bounds: a closed id range is an index range scan even before the table has statistics.
                ids += f" AND e.id <= {int(max_id)}"
        else:
            keys = SHAPE_KEYS[shape]
            alias, col, ids = "r", "r.bucket", "1=1"
            blog = "r.blog_id" if "blog_id" in keys else "NULL"
            vc = "r.viewer_country" if "viewer_country" in keys else "NULL"
            table = rollup_tables[(Grain(source), shape)].name
        joins = ""
        if joins_b:
            joins += f" JOIN blogs b ON b.id = {blog}"
        if joins_a:
            joins += " JOIN authors a ON a.id = b.author_id"
        where = compile_filter(f, params, vc)
        pidx = f"q.base + ({col} - q.lo) / q.step"
        gkey = _group_key(dim, blog, vc)
        measure = "COUNT(*)" if source in (RAW, TAIL) else "SUM(r.views)"
        # Constants (the no-group key, a missing blog column) stay out of GROUP BY: PostgreSQL refuses them.
        # Per blog only where distinct blogs are counted: a series' tail was otherwise one row per blog.
        per_blog = blog if blog != "NULL" and _needs_blog_sets(dim) else "NULL"
        group_by = ", ".join([pidx] + ([gkey] if dim is not None else []) + ([per_blog] if per_blog != "NULL" else []))
        # A bare NULL is typed text by PostgreSQL when its member comes first in the UNION, and the raw
        # members' integer blog_id then fails to match it.
        blog_col = "CAST(NULL AS INTEGER)" if per_blog == "NULL" else per_blog
        members.append(
            f"SELECT '{source}' AS src, {pidx} AS pidx, {gkey} AS gkey, {blog_col} AS blog_id, {measure} AS views "
            f"FROM {cte} q JOIN {table} {alias} ON {col} >= q.lo AND {col} < q.hi{joins} "
            f"WHERE {ids} AND {where} GROUP BY {group_by}")
    return ctes, members


_RAW_RANGE_TERMS = 16  # up to this many disjoint raw ranges are spelled out; beyond, their overall span


def _raw_ranges(runs: list[Run]) -> str:
    """The raw runs' instants as a literal condition on e.viewed_at: their merged ranges OR'ed (each one an index
    range on both databases), or one span when there are many. One span for ranges far apart (a window's edges and
    its comparison window's a year earlier) made SQLite scan the whole year between them: 30 ms instead of 1."""
    merged: list[list[int]] = []
    for lo, hi in sorted((int(r.lo), int(r.hi)) for r in runs):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    if len(merged) > _RAW_RANGE_TERMS:
        merged = [[merged[0][0], max(hi for _lo, hi in merged)]]
    terms = [f"e.viewed_at >= {lo} AND e.viewed_at < {hi}" for lo, hi in merged]
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(f"({t})" for t in terms) + ")"


@dataclass(frozen=True)
class Aggregate:
    """Grouped rows (pidx, key, label, views, blog_count), totals and per-source row counts."""

    rows: list[tuple[int, str, str, int, int]]
    groups: int
    total_views: int
    sources: list[SourceUse]
    previous: list[int] | None = None  # with `compare`: each row's views in its comparison window
    previous_total: int = 0  # with `compare`: all views in the comparison windows


Row = tuple[int, str, str, int, int]
GroupKey = tuple[int, Any]


@dataclass
class _Part:
    """Views per (pidx, group key), distinct blogs per group (when asked for) and rows per source.

    Stored in the query cache and shared between threads: never mutated after `_fixed_part` returns, except
    `ranked`, which is filled once (idempotently) when a request finds no tail rows to add, and `pages`, the
    pages cut from it (one SharedList per (offset, limit), or per ("compare", windows, offset, limit): callers may
    memoise what they derive from a page on its identity, reports.py does; a page with a tail added is a plain,
    per-request list), and `derived`, values computed once from `ranked` (the comparison split, _compared_part).
    """

    views: dict[GroupKey, int]
    blogs: dict[GroupKey, frozenset[int]] | None
    counts: dict[str, int]
    ranked: list[Row] | None = None
    pages: dict[tuple[Any, ...], list[Row]] = field(default_factory=dict)
    derived: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Rows held, for the cache's bound."""
        return len(self.views) + (sum(len(b) for b in self.blogs.values()) if self.blogs is not None else 0)


def _cache_of(conn: Connection) -> QueryCache | None:
    """The Database's query cache, set on its read connections (None: disabled, or not a read transaction)."""
    cache = conn.get_execution_options().get("query_cache")
    return cache if isinstance(cache, QueryCache) else None


def _needs_blog_sets(dim: Dimension | None) -> bool:
    return dim in (Dimension.AUTHOR, Dimension.COUNTRY, Dimension.VIEWER_COUNTRY)


def _fixed_part(conn: Connection, p: Plan, sources: list[str], shape: Shape, dim: Dimension | None,
                f: F.Filter) -> _Part:
    """The rollup buckets and raw edges (ids <= the plan's watermark) of the plan, grouped, as one statement."""
    params = _Params()
    ctes, members = _members(p, sources, shape, dim, f, params, small_tail=True, max_id=0)
    blog_sets = _needs_blog_sets(dim)
    group_cols = "pidx, gkey, blog_id" if blog_sets else "pidx, gkey"
    sql = ("WITH " + ", ".join(ctes)
           + ", u AS MATERIALIZED (" + " UNION ALL ".join(members) + ") "
           + f"SELECT 0 AS kind, NULL AS src, pidx, gkey, {'blog_id' if blog_sets else 'NULL'}, SUM(views) "
           + f"FROM u GROUP BY {group_cols} "
           + "UNION ALL SELECT 1, src, NULL, NULL, NULL, COUNT(*) FROM u GROUP BY src")
    views: dict[GroupKey, int] = {}
    sets: dict[GroupKey, set[int]] = {}
    counts: dict[str, int] = {}
    for kind, src, pidx, gkey, blog_id, n in conn.execute(text(sql), params.values).fetchall():
        if kind == 0:
            g = (int(pidx), gkey)
            views[g] = views.get(g, 0) + int(n)
            if blog_sets:
                sets.setdefault(g, set()).add(int(blog_id))
        else:
            counts[str(src)] = int(n)
    return _Part(views, {g: frozenset(b) for g, b in sets.items()} if blog_sets else None, counts)


def _read_part(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], shape: Shape,
               dim: Dimension | None, f: F.Filter) -> tuple[Plan, _Part]:
    p = plan_for(windows, ctx, SHAPE_GRAINS[shape])
    fixed_sources = [s for s in p.sources() if s != TAIL]
    return p, _fixed_part(conn, p, fixed_sources, shape, dim, f) if fixed_sources else _Part({}, None, {})


def _ranked_part(conn: Connection, ctx: ReadContext, dim: Dimension | None, part: _Part) -> list[Row]:
    """The part's rows ranked and labelled (when no tail is added to it), computed once per part."""
    ranked = part.ranked
    if ranked is None:
        fixed_blogs = part.blogs or {}

        def constant_count(_g: GroupKey) -> int:
            return 1 if dim is Dimension.BLOG else 0

        ranked = _rank(conn, ctx, dim, part.views,
                       (lambda g: len(fixed_blogs[g])) if _needs_blog_sets(dim) else constant_count)
        part.ranked = ranked  # same value whichever thread computes it first
    return ranked


def _planned_part(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], shape: Shape,
                  dim: Dimension | None, f: F.Filter) -> tuple[ReadContext, Plan, _Part]:
    """The plan and its part at or below a watermark; the context to read the tail with (same watermark).

    From the query cache when it holds this question under the same state key, read at this watermark or at an
    older one with at most REUSE_TAIL events above it (the returned context then carries that older watermark,
    so the tail covers everything above it, and the part is re-read at the new watermark in the background for
    the next requests); otherwise read now and remember it.
    """
    cache = _cache_of(conn)
    key = ("part", tuple(windows), shape, dim, f, ctx.state_key)
    if cache is not None:
        found = cache.get(key, lambda v: v[0] == ctx.watermark or (
            v[0] < ctx.watermark and ctx.max_id - v[0] <= REUSE_TAIL))
        if found is not None:
            watermark, part = found
            if watermark == ctx.watermark:
                return ctx, plan_for(windows, ctx, SHAPE_GRAINS[shape]), part
            _refresh_later(conn, cache, key, windows, shape, dim, f)
            older = replace(ctx, watermark=watermark)
            return older, plan_for(windows, older, SHAPE_GRAINS[shape]), part
    _sql_allowed(conn)
    p, part = _read_part(conn, ctx, windows, shape, dim, f)
    if cache is not None:
        cache.put(key, (ctx.watermark, part), part.size)
    return ctx, p, part


def _refresh_later(conn: Connection, cache: QueryCache, key: tuple[Any, ...], windows: list[tuple[int, int]],
                   shape: Shape, dim: Dimension | None, f: F.Filter) -> None:
    """Queue a re-read of a reused part at the watermark of a new snapshot (storage/engine.Database.read_later)."""
    options = conn.get_execution_options()
    later = options.get("read_later")
    if not callable(later) or options.get("quick"):
        return  # a quick read reads the tail next, so it is redone in a thread, which queues this

    def job(c: Connection) -> None:
        ctx = read_context(c)
        if key[-1] != ctx.state_key:
            return  # the state moved on (a rebuild, repair, compaction): the next request reads what it needs
        _p, part = _read_part(c, ctx, windows, shape, dim, f)
        if ctx.max_id <= ctx.watermark:
            _ranked_part(c, ctx, dim, part)  # what the next request needs when no tail is added
        cache.put(key, (ctx.watermark, part), part.size)

    later(key, job)


# Every period boundary of every zone in use lies on a quarter hour; a window ending elsewhere ends at "now" (or at a
# previous period's matching instant, for growth) and moves with every request.
_QUARTER_HOUR_US = 15 * 60 * US


def _split_moving(windows: list[tuple[int, int]], ctx: ReadContext) -> tuple[list[tuple[int, int]],
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
    return _cut_windows(windows, ctx.horizons.get(RAW, 0))


def _cut_windows(windows: list[tuple[int, int]], raw_kept: int = 0) -> tuple[list[tuple[int, int]],
                                                                              list[tuple[int, int, int]]]:
    """_split_moving's cut, for pieces that lie at or after `raw_kept`."""
    stable: list[tuple[int, int]] = []
    moving: list[tuple[int, int, int]] = []
    for i, (a, b) in enumerate(windows):
        lo, hi = a, b
        if a < b and a % _QUARTER_HOUR_US and a >= raw_kept:
            lo = min(b, a - a % HOUR_US + HOUR_US)
            moving.append((i, a, lo))
        if lo < b and b % _QUARTER_HOUR_US:
            cut = max(lo, b - b % HOUR_US)
            if cut >= raw_kept:
                moving.append((i, cut, b))
                hi = cut
        # An empty interior is one key whatever the instants (the cache would otherwise hold one per request).
        stable.append((lo, hi) if lo < hi else (0, 0))
    return stable, moving


def _live_rows(conn: Connection, ctx: ReadContext, p: Plan, moving: list[Run], shape: Shape, dim: Dimension | None,
               f: F.Filter) -> tuple[list[tuple[str, int, Any, int | None, int]], int]:
    """What is read live with every request, as one statement: the events above the watermark in every window (the
    plan's tail runs) and those at or below it in the moving pieces (`moving`, see _split_moving).
    (source, pidx, group key, blog_id, views) per (source, window, group, blog), and how many rows are the moving
    pieces'."""
    sources = [RAW] if moving else []
    if ctx.max_id > ctx.watermark:  # else nothing above the watermark in this snapshot
        sources.append(TAIL)
    if not sources:
        return [], 0
    _sql_allowed(conn)
    live = Plan(watermark=ctx.watermark, runs={RAW: moving, TAIL: p.runs[TAIL]})
    params = _Params()
    ctes, members = _members(live, sources, shape, dim, f, params,
                             small_tail=ctx.max_id - ctx.watermark <= SMALL_TAIL, max_id=ctx.max_id)
    sql = ("WITH " + ", ".join(ctes) + " SELECT src, pidx, gkey, blog_id, views FROM ("
           + " UNION ALL ".join(members) + ") t")
    # Integers already (window index, ids, COUNT): no per-row conversion on this per-request path.
    rows = cast(list[tuple[str, int, Any, int | None, int]], conn.execute(text(sql), params.values).fetchall())
    if sources == [TAIL]:
        return rows, 0
    return rows, sum(1 for r in rows if r[0] == RAW)  # the moving pieces: under an hour of events each


def _names(conn: Connection, ctx: ReadContext, dim: Dimension | None, gkeys: set[Any]) -> dict[Any, tuple[str, str]]:
    """Key and label of each group key: blog/author client id and title/name, country code and name."""
    if dim is None:
        return {g: ("", "") for g in gkeys}
    table = {Dimension.BLOG: "blogs", Dimension.AUTHOR: "authors"}.get(dim, "countries")
    cache = _cache_of(conn)
    labels = cache.labels(ctx.dimensions_version) if cache is not None else None
    known: dict[Any, tuple[str, str]] = {}
    missing = set(gkeys)
    if labels is not None:
        known, missing = labels.known(table, gkeys)
    if missing:
        _sql_allowed(conn)
        found: dict[Any, tuple[str, str]] = {}
        if table == "countries":
            # Every country, once per version: a missing country ("--") has no row and is labelled "Unknown".
            found = {str(c): (str(c), str(n)) for c, n in conn.execute(text("SELECT code, name FROM countries"))}
        else:
            label_col = "title" if table == "blogs" else "name"
            ids = sorted(int(i) for i in missing)
            stmt = text(f"SELECT id, external_id, {label_col} FROM {table} WHERE id IN :ids").bindparams(
                bindparam("ids", expanding=True))
            for i in range(0, len(ids), 500):
                for id_, ext, lab in conn.execute(stmt, {"ids": ids[i:i + 500]}):
                    found[int(id_)] = (str(ext), str(lab))
        known = labels.add(table, found) if labels is not None else {**known, **found}
    if table == "countries":
        return {g: known.get(g, (str(g), "Unknown")) for g in gkeys}
    return {g: known[g] for g in gkeys}


def _rank(conn: Connection, ctx: ReadContext, dim: Dimension | None, views: dict[GroupKey, int],
          blog_count: Any, first: int | None = None) -> list[Row]:
    """Rows ordered by window, views descending, key (byte order: COLLATE "C" = Python's str order).

    With `first`, only the first `first` rows (a partial selection: top 10 of 2,000 groups sorts nothing else).
    """
    names = _names(conn, ctx, dim, {g for _, g in views})
    order = [(pidx, -v, names[g][0], g) for (pidx, g), v in views.items()]
    if first is not None and first * 4 < len(order):
        order = heapq.nsmallest(first, order)
    else:
        order.sort()  # keys are unique per (pidx, key): the group key g never decides
    return [(pidx, names[g][0], names[g][1], -neg, blog_count((pidx, g))) for pidx, neg, _k, g in order]


# Plans are pure functions of their inputs: repeated questions skip the planner (a daily series over a year
# plans 732 windows, ~10 ms of Python). Long series are not memoised (memory), nor are plans that raise.
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


def _with_moving(p: Plan, windows: list[tuple[int, int]], moving: list[Run]) -> Plan:
    """The stable windows' plan plus the moving pieces' raw runs, with the tail over the whole windows: the plan
    that is answered (a new one: plans are memoised)."""
    runs = {s: r for s, r in p.runs.items() if s != TAIL}
    runs[RAW] = [*runs.get(RAW, []), *moving]
    out = Plan(watermark=p.watermark, runs=runs)
    for i, (a, b) in enumerate(windows):
        if a < b:
            # Merged into runs (Plan.add), as the planner does: the tail joins every run with every event above
            # the watermark, and a year of days as 732 runs made 30,000 tail events 22M comparisons.
            out.add(Run(TAIL, a, b, i, b - a))
    return out


def aggregate(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], *, dim: Dimension | None,
              f: F.Filter, limit: int | None = None, offset: int = 0,
              compare: list[tuple[int, int]] | None = None, share: bool = True) -> Aggregate:
    """Views (and distinct blogs) per window and group, ordered by window, views desc, key.

    Two statements at most: the part at or below the watermark (rollup buckets and raw edges, cached per data
    version when the Database has a query cache) and the live tail above it; they are added here, then ranked,
    paged and labelled. meta.sources counts, per source, the rows it gave grouped per (window, group, blog).
    With `compare` (one window per window, the comparison ranges), those windows are planned and read with the
    others, in the same statements; rows, totals and pages are the windows' alone, and `previous` gives each row's
    views in its comparison window (see _compared).
    A page of a cached part is shared (one SharedList, memoised downstream by identity) when the part keeps it;
    `share=False` (an export walking every page) neither keeps nor shares pages, so walking 200 pages leaves no
    trace in the caches.
    """
    f = F.simplify(f)
    shape = rollup_shape(dim, f)
    n = len(windows)
    if compare is not None:
        windows = [*windows, *compare]
    if f == F.FALSE:
        p = plan_for(windows, ctx, SHAPE_GRAINS[shape])
        return Aggregate([], 0, 0, [SourceUse(s, 0) for s in p.sources()], [] if compare is not None else None)
    stable, pieces = _split_moving(windows, ctx)
    ctx, p, part = _planned_part(conn, ctx, stable, shape, dim, f)
    moving = [Run(RAW, lo, hi, i, hi - lo) for i, lo, hi in pieces]
    if moving:
        p = _with_moving(p, windows, moving)
    if not p.sources():
        return Aggregate([], 0, 0, [], [] if compare is not None else None)
    tail, moving_rows = _live_rows(conn, ctx, p, moving, shape, dim, f) if TAIL in p.runs else ([], 0)
    counts = {**part.counts, TAIL: len(tail) - moving_rows}
    if moving_rows:
        counts[RAW] = counts.get(RAW, 0) + moving_rows
    sources = [SourceUse(s, counts.get(s, 0)) for s in p.sources()]
    blog_sets = _needs_blog_sets(dim)

    def constant_count(_g: GroupKey) -> int:
        return 1 if dim is Dimension.BLOG else 0

    if not tail:
        ranked = _ranked_part(conn, ctx, dim, part)
        if compare is not None:
            return _compared_part(part, ranked, n, limit, offset, sources, share)
        views = part.views
        page = part.pages.get((offset, limit)) if share else None
        if page is None:
            page = _kept_page(part, (offset, limit), ranked[offset:] if limit is None
                              else ranked[offset:offset + limit], share)
        return Aggregate(page, len(views), sum(views.values()), sources)

    views = dict(part.views)
    extra: dict[GroupKey, set[int]] = {}
    fixed_blogs = part.blogs or {}
    for _src, pidx, gkey, blog, k in tail:
        g = (pidx, gkey)
        views[g] = views.get(g, 0) + k
        if blog_sets and blog is not None and blog not in fixed_blogs.get(g, ()):
            extra.setdefault(g, set()).add(blog)

    def merged_count(g: GroupKey) -> int:
        return len(fixed_blogs.get(g, ())) + len(extra.get(g, ()))

    count = merged_count if blog_sets else constant_count
    if compare is not None:
        return _compared(conn, ctx, dim, views, n, count, limit, offset, sources)
    ranked = _rank(conn, ctx, dim, views, count, None if limit is None else offset + limit)
    page = ranked[offset:] if limit is None else ranked[offset:offset + limit]
    return Aggregate(page, len(views), sum(views.values()), sources)


@dataclass(frozen=True)
class Merged:
    """Views per (window, group) of every window, cached part and live rows added (a dict not to be changed: it
    may be the cached part's own), distinct blogs per group, and the rows each source gave."""

    views: dict[GroupKey, int]
    blog_count: Callable[[GroupKey], int]
    sources: list[SourceUse]


def merged(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], *, dim: Dimension | None,
           f: F.Filter) -> Merged:
    """What aggregate ranks, unranked: the same statements (cached part, live pieces and tail) and sums."""
    f = F.simplify(f)
    shape = rollup_shape(dim, f)
    if f == F.FALSE:
        p = plan_for(windows, ctx, SHAPE_GRAINS[shape])
        return Merged({}, lambda _g: 0, [SourceUse(s, 0) for s in p.sources()])
    stable, pieces = _split_moving(windows, ctx)
    ctx, p, part = _planned_part(conn, ctx, stable, shape, dim, f)
    moving = [Run(RAW, lo, hi, i, hi - lo) for i, lo, hi in pieces]
    if moving:
        p = _with_moving(p, windows, moving)
    tail, moving_rows = _live_rows(conn, ctx, p, moving, shape, dim, f) if TAIL in p.runs else ([], 0)
    counts = {**part.counts, TAIL: len(tail) - moving_rows}
    if moving_rows:
        counts[RAW] = counts.get(RAW, 0) + moving_rows
    sources = [SourceUse(s, counts.get(s, 0)) for s in p.sources()]
    fixed_blogs = part.blogs or {}
    if not _needs_blog_sets(dim):
        one = 1 if dim is Dimension.BLOG else 0
        views = dict(part.views) if tail else part.views
        for _src, pidx, gkey, _blog, k in tail:
            views[(pidx, gkey)] = views.get((pidx, gkey), 0) + k
        return Merged(views, lambda _g: one, sources)
    views = dict(part.views)
    extra: dict[GroupKey, set[int]] = {}
    for _src, pidx, gkey, blog, k in tail:
        g = (pidx, gkey)
        views[g] = views.get(g, 0) + k
        if blog is not None and blog not in fixed_blogs.get(g, ()):
            extra.setdefault(g, set()).add(blog)
    return Merged(views, lambda g: len(fixed_blogs.get(g, ())) + len(extra.get(g, ())), sources)


def _compared(conn: Connection, ctx: ReadContext, dim: Dimension | None, views: dict[GroupKey, int], n: int,
              count: Any, limit: int | None, offset: int, sources: list[SourceUse]) -> Aggregate:
    """A page ranked over windows [0, n) alone, with each row's views in comparison window n + its window."""
    current = {g: v for g, v in views.items() if g[0] < n}
    before = {g: v for g, v in views.items() if g[0] >= n}
    ranked = _rank(conn, ctx, dim, current, count, None if limit is None else offset + limit)
    page = ranked[offset:] if limit is None else ranked[offset:offset + limit]
    names = _names(conn, ctx, dim, {g for _, g in before})
    by_key = {(pidx - n, names[g][0]): v for (pidx, g), v in before.items()}
    return Aggregate(page, len(current), sum(current.values()), sources,
                     [by_key.get((r[0], r[1]), 0) for r in page], sum(before.values()))


def _kept_page(part: _Part, key: Any, rows: list[Row], share: bool) -> list[Row]:
    """`rows` as the part's shared page for `key` when it keeps one more (SharedList: never mutated, memoised
    downstream by identity); else a plain list, which nothing memoises (its identity never comes back)."""
    if share and len(part.pages) < _PAGES_PER_PART:
        page = SharedList(rows)
        part.pages[key] = page
        return page
    return rows


def _compared_part(part: _Part, ranked: list[Row], n: int, limit: int | None, offset: int,
                   sources: list[SourceUse], share: bool = True) -> Aggregate:
    """_compared for a cached part without a tail: the split of its ranked rows is computed once per part.

    Rows are ranked by window first, so the rows of windows [0, n) are a prefix of `ranked`."""
    split = part.derived.get(("compare", n))
    if split is None:
        k = sum(1 for pidx, _g in part.views if pidx < n)
        by_key = {(r[0] - n, r[1]): r[3] for r in ranked[k:]}
        split = (k, sum(r[3] for r in ranked[:k]), by_key, sum(by_key.values()))
        part.derived[("compare", n)] = split  # same value whichever thread computes it first
    k, total, by_key, total_before = split
    key = ("compare", n, offset, limit)
    page = part.pages.get(key) if share else None
    if page is None:
        page = _kept_page(part, key, ranked[offset:k] if limit is None else ranked[offset:min(k, offset + limit)],
                          share)
    return Aggregate(page, k, total, sources, [by_key.get((r[0], r[1]), 0) for r in page], total_before)


def blogs_created(conn: Connection, windows: list[tuple[int, int]], f: F.Filter,
                  ctx: ReadContext | None = None) -> dict[int, int]:
    """Blogs created in each window that can have matching views (the filter holds for some reader country).

    Depends only on the dimension tables: with a context, cached per dimensions version.
    """
    blog_filter = F.blog_level(f)
    if blog_filter == F.FALSE:
        return {}
    # Windows ending at "now" are cut as for views (_split_moving): the part before the cut is cached, the rest
    # (blogs created in under an hour) is counted live.
    stable, moving = _cut_windows(windows)
    runs = plan_for(stable, None).runs.get(TAIL, [])
    out: dict[int, int] = {}
    if runs:
        sql, params = _blogs_created_sql(runs, blog_filter)
        cache = _cache_of(conn) if ctx is not None and ctx.dimensions_version is not None else None
        key = (sql, tuple(sorted(params.values.items())), "dimensions", ctx.dimensions_version if ctx else None)
        found = cache.get(key) if cache is not None else None
        if found is not None:
            out = found
        else:
            _sql_allowed(conn)
            out = {int(i): int(n) for i, n in conn.execute(text(sql), params.values)}
            if cache is not None:
                cache.put(key, out, len(out))
    if moving:
        live = Plan(watermark=0)
        for i, lo, hi in moving:
            live.add(Run(TAIL, lo, hi, i, hi - lo))
        sql, params = _blogs_created_sql(live.runs[TAIL], blog_filter)
        _sql_allowed(conn)
        out = dict(out)  # the cached dict is shared: never changed
        for i, n in conn.execute(text(sql), params.values):
            out[int(i)] = out.get(int(i), 0) + int(n)
    return out


def _blogs_created_sql(runs: list[Run], blog_filter: F.Filter) -> tuple[str, _Params]:
    """Blogs created per run's output index, among those the blog-level filter holds for."""
    params = _Params()
    where = compile_filter(blog_filter, params, vc="NULL")
    joins = " JOIN authors a ON a.id = b.author_id" if F.mentions(blog_filter, F.Field.AUTHOR) else ""
    pidx = "q.base + (b.created_at - q.lo) / q.step"
    sql = (f"WITH {_values_cte('w', runs)} SELECT {pidx} AS pidx, COUNT(*) FROM w q JOIN blogs b "
           f"ON b.created_at >= q.lo AND b.created_at < q.hi{joins} WHERE {where} GROUP BY {pidx}")
    return sql, params
