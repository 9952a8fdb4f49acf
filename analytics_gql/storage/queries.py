"""The read side: runs a plan as one set-based statement (plus one for blogs created); the only read SQL.

Integers that the planner computed (bucket keys, instants, indexes) are written into the statement as literals
after int() (no user text ever is); every user-supplied string (filter ids and codes) is a bound parameter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from analytics_gql.domain import filters as F
from analytics_gql.domain.calendar import Grain, bucket_interval
from analytics_gql.domain.planning import RAW, TAIL, Plan, Run, plan
from analytics_gql.domain.queries import Dimension, SourceUse
from analytics_gql.storage import rollups as rollup_store
from analytics_gql.storage.tables import SHAPE_GRAINS, SHAPE_KEYS, UNKNOWN_COUNTRY, Shape, rollup_tables

# Up to this many events above the watermark, the tail is read through the id index.
SMALL_TAIL = 200_000


@dataclass(frozen=True)
class ReadContext:
    """What the planner needs from the database, read in the query's snapshot."""

    watermark: int
    rollup_zone: ZoneInfo | None
    horizons: dict[str, int]
    as_of: int
    watermark_time: int | None
    max_id: int


def read_context(conn: Connection) -> ReadContext:
    """Watermark, the zone the local rollups were built in, and retention horizons."""
    state = rollup_store.read_state(conn)
    now = time.time_ns() // 1000
    max_id = rollup_store.max_event_id(conn)
    if state is None:
        return ReadContext(0, None, {}, now, None, max_id)
    return ReadContext(state.watermark, ZoneInfo(state.timezone), rollup_store.horizons(conn), now,
                       state.last_run_at, max_id)


def data_start(conn: Connection, ctx: ReadContext) -> int | None:
    """The first instant with data (raw events, or the oldest rollup bucket when raw was compacted)."""
    first = conn.execute(text("SELECT MIN(viewed_at) FROM view_events")).scalar()
    candidates = [int(first)] if first is not None else []
    # Only when raw events were compacted: otherwise raw holds every event, and a year bucket's start would move
    # "the beginning of the data" (and so AUTO's granularity) back to January 1 after a pass.
    if ctx.rollup_zone is not None and ctx.horizons.get(RAW, 0) > 0:
        oldest_year = conn.execute(text("SELECT MIN(bucket) FROM views_year_total")).scalar()
        if oldest_year is not None:
            candidates.append(bucket_interval(Grain.YEAR, int(oldest_year), ctx.rollup_zone)[0])
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


def _members(p: Plan, shape: Shape, dim: Dimension | None, f: F.Filter, params: _Params, *,
             small_tail: bool, max_id: int) -> tuple[list[str], list[str]]:
    """The CTEs of plan runs and the union members (src, pidx, gkey, blog_id, views) over them."""
    ctes: list[str] = []
    members: list[str] = []
    joins_b = _needs_blogs(f, dim)
    joins_a = F.mentions(f, F.Field.AUTHOR)
    for source in p.sources():
        runs = p.runs[source]
        cte = f"plan_{source}"
        ctes.append(_values_cte(cte, runs))
        if source in (RAW, TAIL):
            alias, blog, vc = "e", "e.blog_id", f"COALESCE(e.viewer_country, '{UNKNOWN_COUNTRY}')"
            table, col = "view_events", "e.viewed_at"
            ids = f"e.id {'<=' if source == RAW else '>'} {int(p.watermark)}"
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
        group_by = ", ".join([pidx] + ([gkey] if dim is not None else []) + ([blog] if blog != "NULL" else []))
        # A bare NULL is typed text by PostgreSQL when its member comes first in the UNION, and the raw
        # members' integer blog_id then fails to match it.
        blog_col = "CAST(NULL AS INTEGER)" if blog == "NULL" else blog
        members.append(
            f"SELECT '{source}' AS src, {pidx} AS pidx, {gkey} AS gkey, {blog_col} AS blog_id, {measure} AS views "
            f"FROM {cte} q JOIN {table} {alias} ON {col} >= q.lo AND {col} < q.hi{joins} "
            f"WHERE {ids} AND {where} GROUP BY {group_by}")
    return ctes, members


@dataclass(frozen=True)
class Aggregate:
    """Grouped rows (pidx, key, label, views, blog_count), totals and per-source row counts."""

    rows: list[tuple[int, str, str, int, int]]
    groups: int
    total_views: int
    sources: list[SourceUse]


def _key_label(dim: Dimension | None, dialect: str) -> tuple[str, str, str, str]:
    """Join, key and label expressions over the grouped CTE g, and the ORDER BY key expression."""
    coll = ' COLLATE "C"' if dialect == "postgresql" else ""
    if dim is Dimension.BLOG:
        return "JOIN blogs d ON d.id = g.gkey", "d.external_id", "d.title", f"d.external_id{coll}"
    if dim is Dimension.AUTHOR:
        return "JOIN authors d ON d.id = g.gkey", "d.external_id", "d.name", f"d.external_id{coll}"
    if dim in (Dimension.COUNTRY, Dimension.VIEWER_COUNTRY):
        return ("LEFT JOIN countries d ON d.code = g.gkey", "g.gkey", "COALESCE(d.name, 'Unknown')",
                f"g.gkey{coll}")
    return "", "''", "''", "g.pidx"


def aggregate(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], *, dim: Dimension | None,
              f: F.Filter, limit: int | None = None, offset: int = 0) -> Aggregate:
    """Views (and distinct blogs) per window and group, ordered by window, views desc, key; one statement."""
    f = F.simplify(f)
    shape = rollup_shape(dim, f)
    p = plan(windows, rollup_zone=ctx.rollup_zone, watermark=ctx.watermark, horizons=ctx.horizons,
             grains=SHAPE_GRAINS[shape])
    if not p.sources() or f == F.FALSE:
        return Aggregate([], 0, 0, [SourceUse(s, 0) for s in p.sources()])
    params = _Params()
    ctes, members = _members(p, shape, dim, f, params, small_tail=ctx.max_id - ctx.watermark <= SMALL_TAIL,
                             max_id=ctx.max_id)
    join, key, label, order_key = _key_label(dim, conn.dialect.name)
    page = ""
    if limit is not None:
        page = f" LIMIT {int(limit)} OFFSET {int(offset)}"
    if dim is None:  # a series: no distinct blogs asked for
        grouped = ", g AS (SELECT pidx, gkey, SUM(views) AS views, 0 AS blog_count FROM u GROUP BY pidx, gkey) "
    elif dim is Dimension.BLOG:  # one blog per group
        grouped = ", g AS (SELECT pidx, gkey, SUM(views) AS views, 1 AS blog_count FROM u GROUP BY pidx, gkey) "
    else:
        # Distinct blogs by two hash aggregations: COUNT(DISTINCT) would sort every row on PostgreSQL.
        grouped = (", g1 AS (SELECT pidx, gkey, blog_id, SUM(views) AS views FROM u GROUP BY pidx, gkey, blog_id)"
                   ", g AS (SELECT pidx, gkey, SUM(views) AS views, COUNT(*) AS blog_count FROM g1 "
                   "GROUP BY pidx, gkey) ")
    sql = (
        "WITH " + ", ".join(ctes)
        + ", u AS MATERIALIZED (" + " UNION ALL ".join(members) + ")"
        + grouped
        + "SELECT kind, pidx, k, label, views, blog_count FROM ("
        + f"SELECT 0 AS kind, g.pidx AS pidx, {key} AS k, {label} AS label, g.views AS views, "
          f"g.blog_count AS blog_count FROM g {join} ORDER BY g.pidx, g.views DESC, {order_key}{page}) rows_ "
        + "UNION ALL SELECT 1, NULL, NULL, NULL, COALESCE(SUM(views), 0), COUNT(*) FROM g "
        + "UNION ALL SELECT 2, NULL, src, NULL, COUNT(*), NULL FROM u GROUP BY src"
    )
    rows: list[tuple[int, str, str, int, int]] = []
    groups = total = 0
    counts: dict[str, int] = {}
    for kind, pidx, k, lab, views, blog_count in conn.execute(text(sql), params.values):
        if kind == 0:
            rows.append((int(pidx), str(k), str(lab), int(views), int(blog_count)))
        elif kind == 1:
            total, groups = int(views), int(blog_count)
        else:
            counts[str(k)] = int(views)
    return Aggregate(rows, groups, total, [SourceUse(s, counts.get(s, 0)) for s in p.sources()])


def blogs_created(conn: Connection, windows: list[tuple[int, int]], f: F.Filter) -> dict[int, int]:
    """Blogs created in each window that can have matching views (the filter holds for some reader country)."""
    blog_filter = F.blog_level(f)
    p = plan(windows, rollup_zone=None, watermark=0, horizons={})
    runs = p.runs.get(TAIL, [])
    if not runs or blog_filter == F.FALSE:
        return {}
    params = _Params()
    where = compile_filter(blog_filter, params, vc="NULL")
    joins = " JOIN authors a ON a.id = b.author_id" if F.mentions(blog_filter, F.Field.AUTHOR) else ""
    pidx = "q.base + (b.created_at - q.lo) / q.step"
    sql = (f"WITH {_values_cte('w', runs)} SELECT {pidx} AS pidx, COUNT(*) FROM w q JOIN blogs b "
           f"ON b.created_at >= q.lo AND b.created_at < q.hi{joins} WHERE {where} GROUP BY {pidx}")
    return {int(i): int(n) for i, n in conn.execute(text(sql), params.values)}
