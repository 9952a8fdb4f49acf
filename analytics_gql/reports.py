"""The three questions (blogViews, top, performance) answered in one read snapshot: periods, plan, results."""

from __future__ import annotations

import functools
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from analytics_gql.domain import calendar as cal
from analytics_gql.domain.comparisons import Comparison, ComparisonSpan, comparison_range, queried_window
from analytics_gql.domain.memo import IdentityMemo, SharedList
from analytics_gql.domain.queries import (
    MAX_POINTS,
    BlogViewsPage,
    BlogViewsQuery,
    GroupRow,
    Meta,
    PerformanceQuery,
    PerformanceResult,
    Point,
    RangeSpec,
    TopQuery,
    TopResult,
    blogs_label,
    growth,
)
from analytics_gql.storage import queries as store
from analytics_gql.storage import reader_reads

# blogViews has no point limit in the contract; this bound keeps one request's planning under QUALITY S3's 2 s
# (99,000 hour periods took 1.9 s to plan here, on an empty database) and matches performance's 10,000 points.
MAX_BLOGVIEWS_PERIODS = 10_000
# blogViews rows built from a page of ranked rows, by the page's identity and the periods (domain/memo.py).
_PAGE_ROWS: IdentityMemo[list[GroupRow]] = IdentityMemo(256)


def _resolve(conn: Connection, ctx: store.ReadContext, spec: RangeSpec) -> tuple[int, int]:
    data_start = store.data_start(conn, ctx) if spec.start is None else None
    return spec.resolve(data_start=data_start, now=ctx.as_of)


def _meta(ctx: store.ReadContext, sources: list) -> Meta:  # type: ignore[type-arg]
    return Meta(as_of=ctx.as_of, watermark=ctx.watermark_time, sources=sources)


def _compare_windows(kind: Comparison | None, start: int, end: int, z: ZoneInfo) -> tuple[
        tuple[int, int] | None, list[tuple[int, int]] | None]:
    """The comparison range of [start, end) (None without compare) and the window to read for it, if any."""
    if kind is None:
        return None, None
    span = comparison_range(kind, start, end, z)
    window = queried_window(*span) if start < end else None
    return span, [window] if window is not None else None


def _previous(agg: store.Aggregate, span: tuple[int, int] | None, rows: int) -> tuple[
        list[int] | None, ComparisonSpan | None]:
    """Each row's comparison views and the comparison's span and total (zeros when nothing could be read)."""
    if span is None:
        return None, None
    if agg.previous is None:
        return [0] * rows, ComparisonSpan(span[0], span[1], 0)
    return agg.previous, ComparisonSpan(span[0], span[1], agg.previous_total)


def blog_views(conn: Connection, q: BlogViewsQuery, *, share: bool = True) -> BlogViewsPage:
    """Views and distinct blogs per group (and period), one page, ordered by period, views desc, key; with
    `compare`, each row's views in the comparison range too (read with the range, in the same statements).
    `share=False` (export) keeps the page out of every cache."""
    ctx = store.read_context(conn)
    start, end = _resolve(conn, ctx, q.range)
    periods: list[cal.Period] = []
    if q.granularity is not None and start < end:
        g = cal.resolve_auto(q.granularity, start, end)
        periods = cal.periods(g, start, end, q.range.zone, limit=MAX_BLOGVIEWS_PERIODS)
        windows = [(max(p.start, start), min(p.end, end)) for p in periods]
    else:
        windows = [(start, end)] if start < end else []
    span, compare = _compare_windows(q.compare, start, end, q.range.zone)
    if q.readers:
        return _blog_views_readers(conn, ctx, q, start, end, periods, windows, span, compare)
    agg = store.aggregate(conn, ctx, windows, dim=q.group_by, f=q.filter, limit=q.first + 1, offset=q.offset,
                          compare=compare, share=share)
    previous, comparison = _previous(agg, span, len(agg.rows))
    shared = type(agg.rows) is SharedList  # a page of a cached part: the same list for the same page
    shape = (q.first, tuple((p.start, p.label) for p in periods),
             None if previous is None else tuple(previous[: q.first])) if shared else None
    rows = _PAGE_ROWS.get(agg.rows, shape) if shared else None
    if rows is None:
        if periods:
            rows = [GroupRow(k, label, periods[i].start, periods[i].label, blogs, views)
                    for i, k, label, views, blogs in agg.rows[: q.first]]
        elif previous is not None:
            rows = [GroupRow(k, label, None, None, blogs, views, before)
                    for (_i, k, label, views, blogs), before in zip(agg.rows[: q.first], previous, strict=False)]
        else:
            rows = [GroupRow(k, label, None, None, blogs, views)
                    for _i, k, label, views, blogs in agg.rows[: q.first]]
        if shared:
            rows = _PAGE_ROWS.put(agg.rows, SharedList(rows), shape)
    has_next = len(agg.rows) > q.first
    return BlogViewsPage(total_count=agg.groups, rows=rows, has_next=has_next,
                         end_offset=q.offset + len(rows) if rows else None, meta=_meta(ctx, agg.sources),
                         start=start, end=end, comparison=comparison)


def _blog_views_readers(conn: Connection, ctx: store.ReadContext, q: BlogViewsQuery, start: int, end: int,
                        periods: list[cal.Period], windows: list[tuple[int, int]], span: tuple[int, int] | None,
                        compare: list[tuple[int, int]] | None) -> BlogViewsPage:
    """blog_views with distinct readers on every row (and in the comparison range): one page, never shared."""
    ra = reader_reads.aggregate(conn, ctx, windows, dim=q.group_by, f=q.filter, limit=q.first + 1,
                                offset=q.offset, compare=compare)
    agg = ra.views
    previous, comparison = _previous(agg, span, len(agg.rows))
    befores: list[int | None] = list(previous) if previous is not None else [None] * len(agg.rows)
    prev_readers: list[int | None] = (list(ra.previous_readers) if ra.previous_readers is not None
                                      else [None] * len(agg.rows))
    rows = [GroupRow(k, label, periods[i].start if periods else None, periods[i].label if periods else None, blogs,
                     views, before, readers, before_readers)
            for (i, k, label, views, blogs), readers, before, before_readers
            in zip(agg.rows, ra.readers, befores, prev_readers, strict=True)][: q.first]
    return BlogViewsPage(total_count=agg.groups, rows=rows, has_next=len(agg.rows) > q.first,
                         end_offset=q.offset + len(rows) if rows else None, meta=_meta(ctx, agg.sources),
                         start=start, end=end, comparison=comparison)


def top(conn: Connection, q: TopQuery) -> TopResult:
    """The top `limit` groups by views (ties by key), with the total over all groups; with `compare`, each
    row's views in the comparison range too (read with the range, in the same statements)."""
    ctx = store.read_context(conn)
    start, end = _resolve(conn, ctx, q.range)
    windows = [(start, end)] if start < end else []
    span, compare = _compare_windows(q.compare, start, end, q.range.zone)
    if q.readers or q.by_readers:
        ra = reader_reads.aggregate(conn, ctx, windows, dim=q.dimension, f=q.filter, limit=q.limit,
                                    compare=compare, by_readers=q.by_readers)
        agg, readers, total_readers = ra.views, ra.readers, ra.total_readers
        prev_readers: list[int | None] = (list(ra.previous_readers) if ra.previous_readers is not None
                                          else [None] * len(agg.rows))
    else:
        agg = store.aggregate(conn, ctx, windows, dim=q.dimension, f=q.filter, limit=q.limit, compare=compare)
        readers, total_readers, prev_readers = [0] * len(agg.rows), 0, [None] * len(agg.rows)
    previous, comparison = _previous(agg, span, len(agg.rows))
    befores: list[int | None] = list(previous) if previous is not None else [None] * len(agg.rows)
    rows = [GroupRow(key=k, label=label, period_start=None, period_label=None, blog_count=blogs, views=views,
                     previous_views=before, readers=r, previous_readers=before_r)
            for (_, k, label, views, blogs), before, r, before_r in zip(agg.rows, befores, readers, prev_readers,
                                                                        strict=True)]
    return TopResult(rows=rows, total_views=agg.total_views, meta=_meta(ctx, agg.sources), comparison=comparison,
                     total_readers=total_readers)


@functools.lru_cache(maxsize=256)
def _series(g: cal.Granularity, start: int, end: int, z: ZoneInfo) -> tuple[
        tuple[cal.Period, ...], tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """Periods, their windows and the previous periods' windows: pure, memoised (a year of days is ~15 ms)."""
    periods = cal.periods(g, start, end, z, limit=MAX_POINTS)
    current = tuple((max(p.start, start), min(p.end, end)) for p in periods)  # shared by callers: immutable
    previous = tuple(cal.previous_window(p, a, b, g, z) for p, (a, b) in zip(periods, current, strict=True))
    return tuple(periods), current, previous


def performance(conn: Connection, q: PerformanceQuery) -> PerformanceResult:
    """A dense series: views, blogs created and same-window growth for every period meeting the range."""
    ctx = store.read_context(conn)
    start, end = _resolve(conn, ctx, q.range)
    if start >= end:
        return PerformanceResult([], _meta(ctx, []))
    g = cal.resolve_auto(q.granularity, start, end)
    periods, current, previous = _series(g, start, end, q.range.zone)
    readers = dict.fromkeys(range(2 * len(periods)), 0)
    if q.readers:
        ra = reader_reads.aggregate(conn, ctx, [*current, *previous], dim=None, f=q.filter)
        agg = ra.views
        readers.update((row[0], r) for row, r in zip(agg.rows, ra.readers, strict=True))
    else:
        agg = store.aggregate(conn, ctx, [*current, *previous], dim=None, f=q.filter)
    views = dict.fromkeys(range(2 * len(periods)), 0)
    for i, _k, _label, v, _blogs in agg.rows:
        views[i] = v
    created = store.blogs_created(conn, list(current), q.filter, ctx)
    n = len(periods)
    points = [
        Point(start=p.start, end=p.end, label=blogs_label(p.label, created.get(i, 0)), views=views[i],
              blogs_created=created.get(i, 0), growth=growth(views[i], views[n + i]),
              partial=(a, b) != (p.start, p.end), readers=readers[i],
              readers_growth=growth(readers[i], readers[n + i]) if q.readers else None)
        for i, (p, (a, b)) in enumerate(zip(periods, current, strict=True))
    ]
    return PerformanceResult(points, _meta(ctx, agg.sources))
