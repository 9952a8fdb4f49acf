"""The read SQL of views, written from a plan: the members of a part or live statement, filters, edges.

Integers that the planner computed (bucket keys, instants, indexes) are written into the statement as literals
after int() (no user text ever is); every user-supplied string (filter ids and codes) is a bound parameter.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from analytics_gql.domain import filters as F
from analytics_gql.domain.calendar import Grain
from analytics_gql.domain.planning import RAW, TAIL, Plan, Run
from analytics_gql.domain.queries import Dimension
from analytics_gql.storage.tables import SHAPE_KEYS, UNKNOWN_COUNTRY, Shape, rollup_tables


class Params:
    """Bound parameters for user strings, and the database they are for (`sqlite`: where statements differ)."""

    def __init__(self, *, sqlite: bool = False) -> None:
        self.values: dict[str, Any] = {}
        self.sqlite = sqlite

    @staticmethod
    def of(conn: Connection) -> Params:
        """Parameters for a statement sent on `conn`."""
        return Params(sqlite=conn.dialect.name == "sqlite")

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f":{name}"


def values_cte(name: str, runs: list[Run]) -> str:
    rows = ", ".join(f"({int(r.lo)}, {int(r.hi)}, {int(r.base)}, {int(r.step)})" for r in runs)
    return f"{name}(lo, hi, base, step) AS (VALUES {rows})"


def compile_filter(f: F.Filter, params: Params, vc: str) -> str:
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


def needs_blogs(f: F.Filter, dim: Dimension | None) -> bool:
    return dim in (Dimension.AUTHOR, Dimension.COUNTRY) or any(
        F.mentions(f, fld) for fld in (F.Field.BLOG, F.Field.AUTHOR, F.Field.COUNTRY))


def group_key(dim: Dimension | None, blog: str, vc: str) -> str:
    if dim is None:
        return "'-'"  # a constant, so it is left out of GROUP BY (SQLite reads integers there as positions)
    return {Dimension.BLOG: blog, Dimension.AUTHOR: "b.author_id",
            Dimension.COUNTRY: f"COALESCE(b.country_code, '{UNKNOWN_COUNTRY}')", Dimension.VIEWER_COUNTRY: vc}[dim]


def needs_blog_sets(dim: Dimension | None) -> bool:
    return dim in (Dimension.AUTHOR, Dimension.COUNTRY, Dimension.VIEWER_COUNTRY)


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


def member_sql(p: Plan, sources: list[str], shape: Shape, dim: Dimension | None, f: F.Filter, params: Params,
             *, small_tail: bool, max_id: int) -> tuple[list[str], list[str]]:
    """The CTEs of the runs of `sources` and the union members (src, pidx, gkey, blog_id, views) over them."""
    ctes: list[str] = []
    members: list[str] = []
    joins_b = needs_blogs(f, dim)
    joins_a = F.mentions(f, F.Field.AUTHOR)
    for source in sources:
        runs = p.runs[source]
        cte = f"plan_{source}"
        ctes.append(values_cte(cte, runs))
        if source in (RAW, TAIL):
            alias, blog, vc = "e", "e.blog_id", f"COALESCE(e.viewer_country, '{UNKNOWN_COUNTRY}')"
            table, col = "view_events", "e.viewed_at"
            ids = f"e.id {'<=' if source == RAW else '>'} {int(p.watermark)}"
            if source == RAW:
                # The runs' ranges as literals: with no statistics at all, PostgreSQL planned a join of several runs
                # as a nested loop over a sequential scan; constant ranges make the viewed_at index the path.
                ids += " AND " + raw_ranges(runs, span_index=not params.sqlite)
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
        gkey = group_key(dim, blog, vc)
        measure = "COUNT(*)" if source in (RAW, TAIL) else "SUM(r.views)"
        # Constants (the no-group key, a missing blog column) stay out of GROUP BY: PostgreSQL refuses them.
        # Per blog only where distinct blogs are counted: a series' tail was otherwise one row per blog.
        per_blog = blog if blog != "NULL" and needs_blog_sets(dim) else "NULL"
        group_by = ", ".join([pidx] + ([gkey] if dim is not None else []) + ([per_blog] if per_blog != "NULL" else []))
        # A bare NULL is typed text by PostgreSQL when its member comes first in the UNION, and the raw
        # members' integer blog_id then fails to match it.
        blog_col = "CAST(NULL AS INTEGER)" if per_blog == "NULL" else per_blog
        members.append(
            f"SELECT '{source}' AS src, {pidx} AS pidx, {gkey} AS gkey, {blog_col} AS blog_id, {measure} AS views "
            f"FROM {cte} q JOIN {table} {alias} ON {col} >= q.lo AND {col} < q.hi{joins} "
            f"WHERE {ids} AND {where} GROUP BY {group_by}")
    return ctes, members


RAW_RANGE_TERMS = 16  # up to this many disjoint raw ranges are spelled out; beyond, their overall span


def raw_ranges(runs: list[Run], *, span_index: bool = True) -> str:
    """The raw runs' instants as a literal condition on e.viewed_at: their merged ranges OR'ed (each one an index
    range on both databases), or one span when there are many. One span for ranges far apart (a window's edges and
    its comparison window's a year earlier) made SQLite scan the whole year between them: 30 ms instead of 1."""
    merged: list[list[int]] = []
    for lo, hi in sorted((int(r.lo), int(r.hi)) for r in runs):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    if len(merged) > RAW_RANGE_TERMS:
        lo, hi = merged[0][0], max(hi for _lo, hi in merged)
        if not span_index:
            # SQLite: only a filter (unary plus), never the index range. SQLite took the constant span as the range
            # of every run's index probe and scanned the whole span once per run (a year 730 times for
            # performance(DAY) in a half-hour zone, past the statement timeout; found by bench/traffic.py); the
            # per-run join bounds stay its index ranges. PostgreSQL without statistics needs the span as an index
            # range, or it scans view_events (tests/db/test_statistics.py).
            return f"+e.viewed_at >= {lo} AND +e.viewed_at < {hi}"
        merged = [[lo, hi]]
    terms = [f"e.viewed_at >= {lo} AND e.viewed_at < {hi}" for lo, hi in merged]
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(f"({t})" for t in terms) + ")"



def blogs_created_sql(runs: list[Run], blog_filter: F.Filter) -> tuple[str, Params]:
    """Blogs created per run's output index, among those the blog-level filter holds for."""
    params = Params()
    where = compile_filter(blog_filter, params, vc="NULL")
    joins = " JOIN authors a ON a.id = b.author_id" if F.mentions(blog_filter, F.Field.AUTHOR) else ""
    pidx = "q.base + (b.created_at - q.lo) / q.step"
    sql = (f"WITH {values_cte('w', runs)} SELECT {pidx} AS pidx, COUNT(*) FROM w q JOIN blogs b "
           f"ON b.created_at >= q.lo AND b.created_at < q.hi{joins} WHERE {where} GROUP BY {pidx}")
    return sql, params
