"""Reader sets, read side: distinct readers per (window, group) for a plan, the only read SQL of readers.

The same plan as views (storage/queries.py), over the grains that keep reader sets (`tables.READER_GRAINS`):
- rollup buckets give their cells' sets (unioned here, in Python: Roaring unions are what SQL cannot do);
- raw edges at or below the watermark give their distinct viewer integers (joined to the `viewers` dictionary,
  which holds every viewer folded in);
- the live part (moving pieces cut off at both ends, and the tail above the watermark) is read per request: tail
  viewers the dictionary does not hold yet are kept as strings; they are in no set, so they add to any union.
The part at or below the watermark is cached per process like the views' part (same key, same reuse rule), as
per-group frozen sets; a warm answer unions only the live rows into the groups they touch.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

from pyroaring import BitMap, FrozenBitMap
from sqlalchemy import Connection, text

from analytics_gql.domain import filters as F
from analytics_gql.domain.calendar import Grain
from analytics_gql.domain.planning import RAW, TAIL, Plan, Run
from analytics_gql.domain.queries import Dimension
from analytics_gql.errors import RebuildRequired
from analytics_gql.storage import parts
from analytics_gql.storage import queries as Q
from analytics_gql.storage.reader_sets import decode
from analytics_gql.storage.tables import READER_GRAINS, SHAPE_KEYS, UNKNOWN_COUNTRY, Shape, reader_tables

GroupKey = tuple[int, Any]
_EMPTY = FrozenBitMap()


@dataclass
class ReaderPart:
    """Viewer integers per (window, group) at or below a watermark; `totals` (per window, all groups) filled once."""

    sets: dict[GroupKey, FrozenBitMap]
    totals: dict[int, FrozenBitMap] = field(default_factory=dict)
    counts: dict[GroupKey, int] = field(default_factory=dict)  # len() of each set, computed with the part

    def __post_init__(self) -> None:
        self.counts = {g: len(s) for g, s in self.sets.items()}

    @property
    def size(self) -> int:
        """Rows held, for the cache's bound (a set costs about one row per 64 members)."""
        return len(self.sets) + sum(len(s) for s in self.sets.values()) // 64

    def total(self, pidx: int) -> FrozenBitMap:
        """The union of every group's set in window `pidx` (same value whichever thread computes it first)."""
        found = self.totals.get(pidx)
        if found is None:
            found = FrozenBitMap.union(_EMPTY, *(s for (i, _g), s in self.sets.items() if i == pidx))
            self.totals[pidx] = found
        return found


@dataclass
class Readers:
    """Distinct readers per (window, group): the part's sets, plus the live viewers (integers and new ids)."""

    part: ReaderPart
    live: dict[GroupKey, BitMap] = field(default_factory=dict)
    new: dict[GroupKey, set[str]] = field(default_factory=dict)

    def count(self, g: GroupKey) -> int:
        """Distinct readers of one group in one window."""
        extra = self.live.get(g)
        if extra is None:
            n = self.part.counts.get(g, 0)
        else:
            n = self.part.sets.get(g, _EMPTY).union_cardinality(extra)
        new = self.new.get(g)
        return n if new is None else n + len(new)

    def total(self, pidx: int) -> int:
        """Distinct readers of all groups in window `pidx` together."""
        ints = [s for (i, _g), s in self.live.items() if i == pidx]
        news = set().union(*(s for (i, _g), s in self.new.items() if i == pidx))
        fixed = self.part.total(pidx)
        return (len(fixed) if not ints else len(BitMap.union(fixed, *ints))) + len(news)


def check_available(ctx: Q.ReadContext) -> None:
    """Refuse readers while events folded before reader sets existed are in no set (migration 0006)."""
    if ctx.readers_from > 0:
        raise RebuildRequired(
            "readers are not available yet: events folded before this version have no reader sets; run "
            "`analytics-gql rollup --rebuild` once to recompute every grain with them (view counts are unaffected)")


def _source_sql(p: Plan, source: str, shape: Shape, dim: Dimension | None, f: F.Filter, params: Q.Params, *,
                small_tail: bool, max_id: int) -> str:
    """One statement: (pidx, gkey, viewer integer, new viewerId, set) rows of one source of the plan."""
    runs = p.runs[source]
    cte = Q.values_cte("q", runs)
    if source in (RAW, TAIL):
        blog, vc, col = "e.blog_id", f"COALESCE(e.viewer_country, '{UNKNOWN_COUNTRY}')", "e.viewed_at"
        ids = f"e.id {'<=' if source == RAW else '>'} {int(p.watermark)}"
        if source == RAW:
            ids += " AND " + Q.raw_ranges(runs, span_index=not params.sqlite)
        elif small_tail:
            col, ids = "+e.viewed_at", ids + f" AND e.id <= {int(max_id)}"  # by id, as storage/queries does
        # Tail viewers may not be in the dictionary yet (the pass assigns them): kept as their viewerId.
        viewer = ("JOIN viewers v ON v.viewer_id = e.viewer_id" if source == RAW
                  else "LEFT JOIN viewers v ON v.viewer_id = e.viewer_id")
        new = "CASE WHEN v.id IS NULL THEN e.viewer_id END" if source == TAIL else "NULL"
        head = f"FROM q JOIN view_events e ON {col} >= q.lo AND {col} < q.hi {viewer}"
        cond = f"{ids} AND e.viewer_id IS NOT NULL"
        cols, tailcols = "v.id", f", {new}, NULL"
    else:
        keys = SHAPE_KEYS[shape]
        blog = "r.blog_id" if "blog_id" in keys else "NULL"
        vc = "r.viewer_country" if "viewer_country" in keys else "NULL"
        col = "r.bucket"
        head = f"FROM q JOIN {reader_tables[(Grain(source), shape)].name} r ON {col} >= q.lo AND {col} < q.hi"
        cond, cols, tailcols = "1=1", "NULL", ", NULL, r.readers"
    joins = f" JOIN blogs b ON b.id = {blog}" if Q.needs_blogs(f, dim) else ""
    if F.mentions(f, F.Field.AUTHOR):
        joins += " JOIN authors a ON a.id = b.author_id"
    pidx = f"q.base + ({col} - q.lo) / q.step"
    gkey = Q.group_key(dim, blog, vc)
    sql = (f"WITH {cte} SELECT {pidx} AS pidx, {gkey} AS gkey, {cols}{tailcols} {head}{joins} "
           f"WHERE {cond} AND {Q.compile_filter(f, params, vc)}")
    if source in (RAW, TAIL):  # distinct per (window, group, viewer)
        group = [pidx] + ([gkey] if dim is not None else []) + ["v.id"] + (["e.viewer_id"] if source == TAIL else [])
        sql += " GROUP BY " + ", ".join(group)
    return sql


def _read(conn: Connection, p: Plan, sources: Collection[str], shape: Shape, dim: Dimension | None, f: F.Filter,
          *, small_tail: bool = True, max_id: int = 0) -> tuple[dict[GroupKey, BitMap], dict[GroupKey, set[str]]]:
    """Viewer integers and new viewerIds per (window, group) of the given sources of a plan."""
    ints: dict[GroupKey, list[int]] = {}
    blobs: dict[GroupKey, list[BitMap]] = {}
    new: dict[GroupKey, set[str]] = {}
    for source in sources:
        if not p.runs.get(source):
            continue
        params = Q.Params.of(conn)
        sql = _source_sql(p, source, shape, dim, f, params, small_tail=small_tail, max_id=max_id)
        for pidx, gkey, vid, vnew, blob in conn.execute(text(sql), params.values):
            g = (int(pidx), gkey)
            if blob is not None:
                blobs.setdefault(g, []).append(decode(blob))
            elif vid is not None:
                ints.setdefault(g, []).append(int(vid))
            elif vnew is not None:
                new.setdefault(g, set()).add(str(vnew))
    out: dict[GroupKey, BitMap] = {}
    for g in ints.keys() | blobs.keys():
        out[g] = BitMap.union(BitMap(ints.get(g, ())), *blobs.get(g, ()))
    return out, new


def _fixed(conn: Connection, ctx: Q.ReadContext, windows: list[tuple[int, int]], shape: Shape,
           dim: Dimension | None, f: F.Filter) -> ReaderPart:
    p = Q.plan_for(windows, ctx, READER_GRAINS[shape])
    sets, _new = _read(conn, p, [s for s in p.sources() if s != TAIL], shape, dim, f)
    return ReaderPart({g: FrozenBitMap(s) for g, s in sets.items()})


def _part(conn: Connection, ctx: Q.ReadContext, stable: list[tuple[int, int]], shape: Shape,
          dim: Dimension | None, f: F.Filter) -> tuple[Q.ReadContext, ReaderPart]:
    """The cached part (reused at an older watermark with at most REUSE_TAIL events above it, as views are), or a
    new one; and the context whose watermark the live part must read above."""
    cache = Q.cache_of(conn)
    key = ("readers", tuple(stable), shape, dim, f, ctx.state_key)
    if cache is not None:
        found = cache.get(key, lambda v: v[0] == ctx.watermark or (
            v[0] < ctx.watermark and ctx.max_id - v[0] <= parts.REUSE_TAIL))
        if found is not None:
            watermark, part = found
            return (ctx if watermark == ctx.watermark else replace(ctx, watermark=watermark)), part
    Q.sql_allowed(conn)
    part = _fixed(conn, ctx, stable, shape, dim, f)
    if cache is not None:
        cache.put(key, (ctx.watermark, part), part.size)
    return ctx, part


def readers(conn: Connection, ctx: Q.ReadContext, windows: list[tuple[int, int]], shape: Shape,
            dim: Dimension | None, f: F.Filter) -> Readers:
    """Distinct readers per (window index, group key) of `windows` (the windows storage/queries.aggregate reads)."""
    check_available(ctx)
    if f == F.FALSE or not windows:
        return Readers(ReaderPart({}))
    stable, pieces = Q.split_moving(windows, ctx)
    ctx, part = _part(conn, ctx, stable, shape, dim, f)
    runs: dict[str, list[Run]] = {RAW: [Run(RAW, lo, hi, i, hi - lo) for i, lo, hi in pieces]}
    if ctx.max_id > ctx.watermark:
        live_tail = Plan(watermark=ctx.watermark)
        for i, (a, b) in enumerate(windows):
            if a < b:
                live_tail.add(Run(TAIL, a, b, i, b - a))
        runs[TAIL] = live_tail.runs.get(TAIL, [])
    if not runs[RAW] and not runs.get(TAIL):
        return Readers(part)
    Q.sql_allowed(conn)
    live, new = _read(conn, Plan(watermark=ctx.watermark, runs=runs), [RAW, TAIL], shape, dim, f,
                      small_tail=ctx.max_id - ctx.watermark <= parts.SMALL_TAIL, max_id=ctx.max_id)
    return Readers(part, live, new)


@dataclass(frozen=True)
class ReaderAggregate:
    """A page of views rows (storage/queries.Aggregate) with each row's distinct readers, those of its comparison
    window (with `compare`), and the distinct readers of all groups of the first window together."""

    views: Q.Aggregate
    readers: list[int]
    previous_readers: list[int] | None
    total_readers: int


def aggregate(conn: Connection, ctx: Q.ReadContext, windows: list[tuple[int, int]], *, dim: Dimension | None,
              f: F.Filter, limit: int | None = None, offset: int = 0,
              compare: list[tuple[int, int]] | None = None, by_readers: bool = False) -> ReaderAggregate:
    """storage/queries.aggregate with readers: the views of every group (storage/queries.merged: the same cached
    part and live rows) and the reader sets of the same windows, by group; ranked by window, then views (or
    readers, with `by_readers`: readers desc, views desc, key), key; paged; only the page is labelled twice."""
    check_available(ctx)
    n = len(windows)
    every = [*windows, *(compare or [])]
    m = Q.merged(conn, ctx, every, dim=dim, f=f)
    f = F.simplify(f)
    rd = readers(conn, ctx, every, Q.rollup_shape(dim, f), dim, f)
    views = m.views
    current = [g for g in views if g[0] < n]
    names = Q._names(conn, ctx, dim, {g for _i, g in current})

    if by_readers:  # sizes of the cached sets, recounted only for the groups live rows touched
        sizes = rd.part.counts
        touched = rd.live.keys() | rd.new.keys()
        keys = [(g[0], -(rd.count(g) if g in touched else sizes.get(g, 0)), -views[g], names[g[1]][0], g)
                for g in current]
    else:
        keys = [(g[0], 0, -views[g], names[g[1]][0], g) for g in current]
    first = None if limit is None else offset + limit
    ranked = (heapq.nsmallest(first, keys) if first is not None and first * 4 < len(keys) else sorted(keys))
    page = [k[-1] for k in ranked[offset:first]]
    rows = [(g[0], names[g[1]][0], names[g[1]][1], views[g], m.blog_count(g)) for g in page]
    previous = prev_readers = None
    previous_total = 0
    if compare is not None:
        previous = [views.get((n + i, gk), 0) for i, gk in page]
        prev_readers = [rd.count((n + i, gk)) for i, gk in page]
        previous_total = sum(v for g, v in views.items() if g[0] >= n)
    agg = Q.Aggregate(rows, len(current), sum(views[g] for g in current), m.sources, previous, previous_total)
    return ReaderAggregate(agg, [rd.count(g) for g in page], prev_readers, rd.total(0) if windows else 0)
