"""The read side of views: a plan read as a cached part and a live statement, merged, ranked and paged.

The SQL is written by storage/read_sql.py; the read context and plans come from storage/read_context.py.

Integers that the planner computed (bucket keys, instants, indexes) are written into the statement as literals
after int() (no user text ever is); every user-supplied string (filter ids and codes) is a bound parameter.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, bindparam, text

from analytics_gql.domain import filters as F
from analytics_gql.domain.calendar import HOUR_US
from analytics_gql.domain.memo import SharedList
from analytics_gql.domain.planning import RAW, TAIL, Plan, Run
from analytics_gql.domain.queries import Dimension, SourceUse
from analytics_gql.storage.blogs_created import blogs_created
from analytics_gql.storage.parts import (
    PAGES_PER_PART,
    SMALL_TAIL,
    GroupKey,
    Held,
    LiveRow,
    Part,
    Row,
    held_hours,
    planned_part,
)
from analytics_gql.storage.read_context import (
    NeedsThread,
    ReadContext,
    cache_of,
    cut_windows,
    data_start,
    plan_for,
    read_context,
    split_moving,
    sql_allowed,
)
from analytics_gql.storage.read_sql import (
    Params,
    blogs_created_sql,
    compile_filter,
    group_key,
    member_sql,
    needs_blog_sets,
    needs_blogs,
    raw_ranges,
    rollup_shape,
    values_cte,
)
from analytics_gql.storage.tables import (
    SHAPE_GRAINS,
    Shape,
)


@dataclass(frozen=True)
class Aggregate:
    """Grouped rows (pidx, key, label, views, blog_count), totals and per-source row counts."""

    rows: list[tuple[int, str, str, int, int]]
    groups: int
    total_views: int
    sources: list[SourceUse]
    previous: list[int] | None = None  # with `compare`: each row's views in its comparison window
    previous_total: int = 0  # with `compare`: all views in the comparison windows



def _ranked_part(conn: Connection, ctx: ReadContext, dim: Dimension | None, part: Part) -> list[Row]:
    """The part's rows ranked and labelled (when no tail is added to it), computed once per part."""
    ranked = part.ranked
    if ranked is None:
        fixed_blogs = part.blogs or {}

        def constant_count(_g: GroupKey) -> int:
            return 1 if dim is Dimension.BLOG else 0

        ranked = _rank(conn, ctx, dim, part.views,
                       (lambda g: len(fixed_blogs[g])) if needs_blog_sets(dim) else constant_count)
        part.ranked = ranked  # same value whichever thread computes it first
    return ranked



# Every period boundary of every zone in use lies on a quarter hour; a window ending elsewhere ends at "now" (or at a
# previous period's matching instant, for growth) and moves with every request.
def _live_rows(conn: Connection, ctx: ReadContext, p: Plan, moving: list[Run], shape: Shape, dim: Dimension | None,
               f: F.Filter) -> tuple[list[tuple[str, int, Any, int | None, int]], int]:
    """What is read live with every request, as one statement: the events above the watermark in every window (the
    plan's tail runs) and those at or below it in the moving pieces (`moving`, see split_moving).
    (source, pidx, group key, blog_id, views) per (source, window, group, blog), and how many rows are the moving
    pieces'."""
    sources = [RAW] if moving else []
    if ctx.max_id > ctx.watermark:  # else nothing above the watermark in this snapshot
        sources.append(TAIL)
    if not sources:
        return [], 0
    sql_allowed(conn)
    live = Plan(watermark=ctx.watermark, runs={RAW: moving, TAIL: p.runs[TAIL]})
    params = Params.of(conn)
    ctes, members = member_sql(live, sources, shape, dim, f, params,
                             small_tail=ctx.max_id - ctx.watermark <= SMALL_TAIL, max_id=ctx.max_id)
    sql = ("WITH " + ", ".join(ctes) + " SELECT src, pidx, gkey, blog_id, views FROM ("
           + " UNION ALL ".join(members) + ") t")
    # Integers already (window index, ids, COUNT): no per-row conversion on this per-request path.
    rows = cast(list[tuple[str, int, Any, int | None, int]], conn.execute(text(sql), params.values).fetchall())
    if sources == [TAIL]:
        return rows, 0
    return rows, sum(1 for r in rows if r[0] == RAW)  # the moving pieces: under an hour of events each


def _with_held(conn: Connection, ctx: ReadContext, p: Plan, held: Held, tail: list[LiveRow], moving_rows: int,
               shape: Shape, dim: Dimension | None, f: F.Filter) -> tuple[list[LiveRow], int]:
    """The live rows with the held hours' rows added; where a folded event lies after a held piece in its hour
    (rows of output index < 0: rare, an event dated ahead), that piece is read live instead."""
    bad = {-1 - r[1] for r in tail if r[1] < 0}
    rows = [r for r in tail if r[1] >= 0]
    moving_rows -= len(tail) - len(rows)  # the `after` rows were counted as moving-piece rows
    ok = [r for r in held.rows if r[1] not in bad]
    # An `after` run is (piece end, its hour's end, -1 - window): the piece is the hour's start to the piece end.
    runs = [Run(RAW, r.hi - HOUR_US, r.lo, -1 - r.base, r.lo - (r.hi - HOUR_US)) for r in held.after
            if -1 - r.base in bad]
    if runs:
        params = Params.of(conn)
        ctes, members = member_sql(Plan(watermark=p.watermark, runs={RAW: runs}), [RAW], shape, dim, f, params,
                                   small_tail=True, max_id=ctx.max_id)
        sql = "WITH " + ", ".join(ctes) + " SELECT src, pidx, gkey, blog_id, views FROM (" + members[0] + ") t"
        again = cast(list[LiveRow], conn.execute(text(sql), params.values).fetchall())
        rows += again
        moving_rows += len(again)
    return rows + ok, moving_rows + len(ok)


def _names(conn: Connection, ctx: ReadContext, dim: Dimension | None, gkeys: set[Any]) -> dict[Any, tuple[str, str]]:
    """Key and label of each group key: blog/author client id and title/name, country code and name."""
    if dim is None:
        return {g: ("", "") for g in gkeys}
    table = {Dimension.BLOG: "blogs", Dimension.AUTHOR: "authors"}.get(dim, "countries")
    cache = cache_of(conn)
    labels = cache.labels(ctx.dimensions_version) if cache is not None else None
    known: dict[Any, tuple[str, str]] = {}
    missing = set(gkeys)
    if labels is not None:
        known, missing = labels.known(table, gkeys)
    if missing:
        sql_allowed(conn)
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
    version when the Database has a query cache) and the live tail above it; they are added here (`merged`), then
    ranked, paged and labelled. meta.sources counts, per source, the rows it gave grouped per (window, group, blog).
    With `compare` (one window per window, the comparison ranges), those windows are planned and read with the
    others, in the same statements; rows, totals and pages are the windows' alone, and `previous` gives each row's
    views in its comparison window (see _compared).
    A page of a cached part is shared (one SharedList, memoised downstream by identity) when the part keeps it;
    `share=False` (an export walking every page) neither keeps nor shares pages, so walking 200 pages leaves no
    trace in the caches.
    """
    n = len(windows)
    m = merged(conn, ctx, [*windows, *(compare or [])], dim=dim, f=f)
    if m.part is None:
        return Aggregate([], 0, 0, m.sources, [] if compare is not None else None)
    if not m.live:  # the cached part alone: its ranking and pages are computed once
        part = m.part
        ranked = _ranked_part(conn, ctx, dim, part)
        if compare is not None:
            return _compared_part(part, ranked, n, limit, offset, m.sources, share)
        page = part.pages.get((offset, limit)) if share else None
        if page is None:
            page = _kept_page(part, (offset, limit), ranked[offset:] if limit is None
                              else ranked[offset:offset + limit], share)
        return Aggregate(page, len(part.views), sum(part.views.values()), m.sources)
    if compare is not None:
        return _compared(conn, ctx, dim, m.views, n, m.blog_count, limit, offset, m.sources)
    ranked = _rank(conn, ctx, dim, m.views, m.blog_count, None if limit is None else offset + limit)
    page = ranked[offset:] if limit is None else ranked[offset:offset + limit]
    return Aggregate(page, len(m.views), sum(m.views.values()), m.sources)


@dataclass(frozen=True)
class Merged:
    """Views per (window, group) of every window, cached part and live rows added (a dict not to be changed: it
    may be the cached part's own), distinct blogs per group, the rows each source gave, and the cached part with
    whether live rows were added to it (part None: nothing to read)."""

    views: dict[GroupKey, int]
    blog_count: Callable[[GroupKey], int]
    sources: list[SourceUse]
    part: Part | None = None
    live: bool = False


def merged(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], *, dim: Dimension | None,
           f: F.Filter) -> Merged:
    """What aggregate ranks, unranked: the cached part (or a new one), the live pieces and tail, summed."""
    f = F.simplify(f)
    shape = rollup_shape(dim, f)
    if f == F.FALSE:
        p = plan_for(windows, ctx, SHAPE_GRAINS[shape])
        return Merged({}, lambda _g: 0, [SourceUse(s, 0) for s in p.sources()])
    stable, pieces = split_moving(windows, ctx)
    snapshot = ctx
    ctx, p, part = planned_part(conn, ctx, stable, shape, dim, f, _ranked_part)
    held = held_hours(conn, ctx, snapshot, pieces, shape, dim, f, _ranked_part)
    if pieces:
        p = _with_moving(p, windows, [Run(RAW, lo, hi, i, hi - lo) for i, lo, hi in pieces])
    if not p.sources():
        return Merged({}, lambda _g: 0, [])
    tail, moving_rows = _live_rows(conn, ctx, p, [*held.live, *held.after], shape, dim, f) if TAIL in p.runs \
        else ([], 0)
    if held.after:
        tail, moving_rows = _with_held(conn, ctx, p, held, tail, moving_rows, shape, dim, f)
    counts = {**part.counts, TAIL: len(tail) - moving_rows}
    if moving_rows:
        counts[RAW] = counts.get(RAW, 0) + moving_rows
    sources = [SourceUse(s, counts.get(s, 0)) for s in p.sources()]
    fixed_blogs = part.blogs or {}
    if not needs_blog_sets(dim):
        one = 1 if dim is Dimension.BLOG else 0
        views = dict(part.views) if tail else part.views
        for _src, pidx, gkey, _blog, k in tail:
            views[(pidx, gkey)] = views.get((pidx, gkey), 0) + k
        return Merged(views, lambda _g: one, sources, part, bool(tail))
    views = dict(part.views) if tail else part.views
    extra: dict[GroupKey, set[int]] = {}
    for _src, pidx, gkey, blog, k in tail:
        g = (pidx, gkey)
        views[g] = views.get(g, 0) + k
        if blog is not None and blog not in fixed_blogs.get(g, ()):
            extra.setdefault(g, set()).add(blog)
    return Merged(views, lambda g: len(fixed_blogs.get(g, ())) + len(extra.get(g, ())), sources, part, bool(tail))


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


def _kept_page(part: Part, key: Any, rows: list[Row], share: bool) -> list[Row]:
    """`rows` as the part's shared page for `key` when it keeps one more (SharedList: never mutated, memoised
    downstream by identity); else a plain list, which nothing memoises (its identity never comes back)."""
    if share and len(part.pages) < PAGES_PER_PART:
        page = SharedList(rows)
        part.pages[key] = page
        return page
    return rows


def _compared_part(part: Part, ranked: list[Row], n: int, limit: int | None, offset: int,
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


__all__ = ["blogs_created", "cache_of", "NeedsThread", "ReadContext", "cut_windows", "data_start", "plan_for",
           "read_context", "split_moving", "sql_allowed", "Params", "blogs_created_sql", "compile_filter", "group_key",
           "member_sql", "needs_blog_sets", "needs_blogs", "raw_ranges", "rollup_shape", "values_cte"]
