"""The per-process cache of rollup parts: a question's rows at or below a watermark (rollup buckets and raw edges),
read once, reused while passes move the watermark, and brought forward by the events folded since.

A part read at watermark w1 stays the answer at a later watermark w2 under the same state key when the events with
ids in (w1, w2] are added to it: they are exactly what the passes between folded, and they stay in raw until a
compaction (which changes the state key). A request that finds an older part reads it with every event above w1 as
its tail; a background read then adds (w1, w2] to it (one statement over those ids, by the primary key), instead of
reading every bucket and raw edge again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, text

from analytics_gql.domain import filters as F
from analytics_gql.domain.calendar import HOUR_US, US
from analytics_gql.domain.planning import RAW, TAIL, Plan, Run
from analytics_gql.domain.queries import Dimension
from analytics_gql.storage.query_cache import QueryCache
from analytics_gql.storage.read_context import ReadContext, cache_of, plan_for, read_context, sql_allowed
from analytics_gql.storage.read_sql import Params, member_sql, needs_blog_sets
from analytics_gql.storage.tables import SHAPE_GRAINS, Shape

# Pages of one cached part kept as list objects (Part.pages).
PAGES_PER_PART = 16
# Up to this many events above the watermark, the tail is read through the id index.
SMALL_TAIL = 200_000
# A cached rollup part read at an older watermark is reused while at most this many events lie above that
# watermark (they are read as its tail, and added to the part in the background): a pass then costs the next
# request a tail read, not a full re-read. 100,000: three passes at 1,000 views/s every 30 s.
REUSE_TAIL = 100_000

Row = tuple[int, str, str, int, int]
GroupKey = tuple[int, Any]


@dataclass
class Part:
    """Views per (pidx, group key), distinct blogs per group (when asked for) and rows per source.

    Stored in the query cache and shared between threads: never mutated after `fixed_part` returns, except
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


def fixed_part(conn: Connection, p: Plan, sources: list[str], shape: Shape, dim: Dimension | None,
                f: F.Filter) -> Part:
    """The rollup buckets and raw edges (ids <= the plan's watermark) of the plan, grouped, as one statement."""
    params = Params.of(conn)
    ctes, members = member_sql(p, sources, shape, dim, f, params, small_tail=True, max_id=0)
    blog_sets = needs_blog_sets(dim)
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
    return Part(views, {g: frozenset(b) for g, b in sets.items()} if blog_sets else None, counts)


def read_part(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], shape: Shape,
               dim: Dimension | None, f: F.Filter) -> tuple[Plan, Part]:
    p = plan_for(windows, ctx, SHAPE_GRAINS[shape])
    fixed_sources = [s for s in p.sources() if s != TAIL]
    return p, fixed_part(conn, p, fixed_sources, shape, dim, f) if fixed_sources else Part({}, None, {})


Rank = Callable[[Connection, ReadContext, Dimension | None, Part], object]


def planned_part(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], shape: Shape,
                 dim: Dimension | None, f: F.Filter, rank: Rank, *,
                 chunked: bool = True) -> tuple[ReadContext, Plan, Part]:
    """The plan and its part at or below a watermark; the context to read the tail with (same watermark).

    From the query cache when it holds this question under the same state key, read at this watermark or at an
    older one with at most REUSE_TAIL events above it (the returned context then carries that older watermark,
    so the tail covers everything above it, and the events folded since are added to the part in the background
    for the next requests, which `rank` then ranks); otherwise read now and remember it: a series (`chunked`) as
    the parts of its series_chunks, each of which may be in the cache already.
    """
    cache = cache_of(conn)
    key = part_key(windows, shape, dim, f, ctx)
    if cache is not None:
        found = cache.get(key, lambda v: v[0] == ctx.watermark or (
            v[0] < ctx.watermark and ctx.max_id - v[0] <= REUSE_TAIL))
        if found is not None:
            watermark, part = found
            if watermark == ctx.watermark:
                return ctx, plan_for(windows, ctx, SHAPE_GRAINS[shape]), part
            refresh_later(conn, cache, key, windows, shape, dim, f, rank)
            older = replace(ctx, watermark=watermark)
            return older, plan_for(windows, older, SHAPE_GRAINS[shape]), part
    chunks = series_chunks(windows) if cache is not None and chunked else []
    if chunks:
        ctx, part = _from_chunks(conn, ctx, windows, chunks, shape, dim, f, rank)
        assert cache is not None
        cache.put(key, (ctx.watermark, part), part.size)
        return ctx, plan_for(windows, ctx, SHAPE_GRAINS[shape]), part
    sql_allowed(conn)
    p, part = read_part(conn, ctx, windows, shape, dim, f)
    if cache is not None:
        cache.put(key, (ctx.watermark, part), part.size)
    return ctx, p, part


def part_key(windows: list[tuple[int, int]], shape: Shape, dim: Dimension | None, f: F.Filter,
             ctx: ReadContext) -> tuple[Any, ...]:
    """The query cache's key of a part (its value: (watermark, Part))."""
    return ("part", tuple(windows), shape, dim, f, ctx.state_key)


def _keep_advanced(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], shape: Shape,
                   dim: Dimension | None, f: F.Filter, old_watermark: int, old: Part) -> Part:
    """`advanced` to the context's watermark, and stored so: the next requests do not advance it again while its
    background refresh waits in the queue."""
    sql_allowed(conn)
    part = advanced(conn, ctx, windows, shape, dim, f, old_watermark, old)
    cache = cache_of(conn)
    if cache is not None:
        key = part_key(windows, shape, dim, f, ctx)
        held = cache.peek(key)
        if held is None or held[0] < ctx.watermark:
            cache.put(key, (ctx.watermark, part), part.size)
    return part


def series_chunks(windows: list[tuple[int, int]]) -> list[list[int]]:
    """Window indexes that partition a list of windows for the cache, when it holds a series: the middle of each
    contiguous run of three or more windows (a series, or its comparison series) on its own, and every other window
    (each run's first and last, shorter runs) together. A series over the last 365 days ending now changes its first
    and last windows every hour (their moving ends are cut at whole hours) and keeps its middle for a day, which
    the cache then holds apart. [] when no run is that long (the windows are read as one part)."""
    middles: list[list[int]] = []
    edges: list[int] = []
    i = 0
    while i < len(windows):
        j = i + 1
        while j < len(windows) and windows[j][0] == windows[j - 1][1] and windows[j][0] < windows[j][1]:
            j += 1
        if j - i >= 3:
            middles.append(list(range(i + 1, j - 1)))
            edges += [i, j - 1]
        else:
            edges += range(i, j)
        i = j
    return [sorted(edges), *middles] if middles else []


def _from_chunks(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], chunks: list[list[int]],
                 shape: Shape, dim: Dimension | None, f: F.Filter, rank: Rank) -> tuple[ReadContext, Part]:
    """A part of `windows` made of the parts of its chunks (each found in the cache or read, as planned_part does),
    all at one watermark: the newest they were found at; those found older are advanced to it first."""
    found: list[tuple[list[int], ReadContext, Part]] = []
    for chunk in chunks:
        c_ctx, _p, part = planned_part(conn, ctx, [windows[i] for i in chunk], shape, dim, f, rank, chunked=False)
        found.append((chunk, c_ctx, part))
    target = max(c.watermark for _chunk, c, _part in found)
    at = replace(ctx, watermark=target)
    views: dict[GroupKey, int] = {}
    blogs: dict[GroupKey, frozenset[int]] | None = {} if needs_blog_sets(dim) else None
    counts: dict[str, int] = {}
    for chunk, c_ctx, part in found:
        if c_ctx.watermark < target:
            part = _keep_advanced(conn, at, [windows[i] for i in chunk], shape, dim, f, c_ctx.watermark, part)
        views.update({(chunk[pidx], g): v for (pidx, g), v in part.views.items()})
        if blogs is not None and part.blogs is not None:
            blogs.update({(chunk[pidx], g): b for (pidx, g), b in part.blogs.items()})
        for src, n in part.counts.items():
            counts[src] = counts.get(src, 0) + n
    return at, Part(views, blogs, counts)


def advanced(conn: Connection, ctx: ReadContext, windows: list[tuple[int, int]], shape: Shape,
             dim: Dimension | None, f: F.Filter, old_watermark: int, old: Part) -> Part:
    """`old` (read at `old_watermark`) at the context's newer watermark: plus the events with ids in
    (old_watermark, ctx.watermark] in the windows, grouped as the part is; one statement over that id range.
    Rows per source (meta.sources) stay those of the read that made `old`."""
    p = plan_for(windows, replace(ctx, watermark=old_watermark), SHAPE_GRAINS[shape])
    if not p.runs.get(TAIL) or ctx.watermark <= old_watermark:
        return old
    params = Params.of(conn)
    delta = Plan(watermark=old_watermark, runs={TAIL: p.runs[TAIL]})
    ctes, members = member_sql(delta, [TAIL], shape, dim, f, params, small_tail=True, max_id=ctx.watermark)
    sql = "WITH " + ", ".join(ctes) + " SELECT pidx, gkey, blog_id, views FROM (" + members[0] + ") t"
    views = dict(old.views)
    added: dict[GroupKey, set[int]] = {}
    for pidx, gkey, blog_id, n in conn.execute(text(sql), params.values).fetchall():
        g = (int(pidx), gkey)
        views[g] = views.get(g, 0) + int(n)
        if old.blogs is not None and blog_id is not None:
            added.setdefault(g, set()).add(int(blog_id))
    blogs = old.blogs
    if blogs is not None and added:
        blogs = {**blogs, **{g: blogs.get(g, frozenset()) | b for g, b in added.items()}}
    return Part(views, blogs, dict(old.counts))


def refresh_later(conn: Connection, cache: QueryCache, key: tuple[Any, ...], windows: list[tuple[int, int]],
                  shape: Shape, dim: Dimension | None, f: F.Filter, rank: Rank) -> None:
    """Queue bringing a reused part to the watermark of a new snapshot (storage/engine.Database.read_later): the
    events folded since added to it (`advanced`) when at most SMALL_TAIL of them, else the part read again."""
    options = conn.get_execution_options()
    later = options.get("read_later")
    if not callable(later) or options.get("quick"):
        return  # a quick read reads the tail next, so it is redone in a thread, which queues this

    def job(c: Connection) -> None:
        ctx = read_context(c)
        if key[-1] != ctx.state_key:
            return  # the state moved on (a rebuild, repair, compaction): the next request reads what it needs
        held = cache.peek(key)
        if held is not None and held[0] >= ctx.watermark:
            return  # a request read it at this watermark meanwhile
        if held is not None and ctx.watermark - held[0] <= SMALL_TAIL:
            part = advanced(c, ctx, windows, shape, dim, f, held[0], held[1])
        else:
            _p, part = read_part(c, ctx, windows, shape, dim, f)
        if ctx.max_id <= ctx.watermark:
            rank(c, ctx, dim, part)  # what the next request needs when no tail is added
        cache.put(key, (ctx.watermark, part), part.size)

    later(key, job)


# A moving piece ending at most this long before the read context's clock ends "now": nothing folded lies after it
# in its hour, as a rule (events arrive in the present), so the hour's part stands for it.
CURRENT_US = 60 * US
LiveRow = tuple[str, int, Any, int | None, int]


@dataclass(frozen=True)
class Held:
    """Moving pieces answered from their hour's cached part: its rows (as live rows of source raw), the runs that
    must find no folded event for that to hold (the rest of each hour after the piece, as output index -1 - i),
    and the pieces read live as before."""

    rows: list[LiveRow]
    after: list[Run]
    live: list[Run]


def held_hours(conn: Connection, ctx: ReadContext, snapshot: ReadContext, pieces: list[tuple[int, int, int]],
               shape: Shape, dim: Dimension | None, f: F.Filter, rank: Rank) -> Held:
    """The moving pieces (window index, lo, hi) that start on a UTC hour and end now, from the cached part of their
    whole hour at the context's watermark (advanced to it when found older; not used when found newer). Under
    ingest the current hour holds every event folded since it began: read as a part, it is read once per pass and
    then advanced, instead of once per request. Exact when no event at or below the watermark lies in the hour
    after the piece's end (the caller checks `after` in its live statement, and reads the pieces live if one does).
    `ctx` carries the watermark the rest of the question is read at (older than the snapshot's when its part was
    reused); an hour's part is looked up, or read, at the snapshot's own (`snapshot`): rollup buckets hold the
    events up to that one, so a part read at an older watermark would count the events between twice.
    """
    rows: list[LiveRow] = []
    after: list[Run] = []
    live: list[Run] = []
    for i, lo, hi in pieces:
        end = lo + HOUR_US
        if lo % HOUR_US or hi >= end or hi < ctx.as_of - CURRENT_US:
            live.append(Run(RAW, lo, hi, i, hi - lo))
            continue
        h_ctx, _p, part = planned_part(conn, snapshot, [(lo, end)], shape, dim, f, rank, chunked=False)
        if h_ctx.watermark > ctx.watermark:
            live.append(Run(RAW, lo, hi, i, hi - lo))
            continue
        if h_ctx.watermark < ctx.watermark:
            part = _keep_advanced(conn, ctx, [(lo, end)], shape, dim, f, h_ctx.watermark, part)
        for (_pidx, gkey), views in part.views.items():
            rows.append((RAW, i, gkey, None, views))
            for blog in (part.blogs or {}).get((_pidx, gkey), ()):
                rows.append((RAW, i, gkey, blog, 0))
        after.append(Run(RAW, hi, end, -1 - i, HOUR_US))
    return Held(rows, after, live)
