"""Strawberry inputs and outputs, each with to_domain / from_domain; no SQL here."""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import re
from dataclasses import replace
from typing import Any

import strawberry

from analytics_gql.domain import calendar as cal
from analytics_gql.domain import filters as F
from analytics_gql.domain import queries as Q
from analytics_gql.domain.comparisons import Comparison as DomainComparison
from analytics_gql.domain.comparisons import ComparisonSpan
from analytics_gql.domain.memo import IdentityMemo, SharedList
from analytics_gql.errors import BadInput


@strawberry.enum(description="What rows are grouped by: the blog, its author, the blog's country, the reader's.")
class Dimension(enum.Enum):
    BLOG = "BLOG"
    AUTHOR = "AUTHOR"
    COUNTRY = "COUNTRY"
    VIEWER_COUNTRY = "VIEWER_COUNTRY"


@strawberry.enum(description="Period length; AUTO picks one from the range length (<=2 d HOUR, <=7 DAY, "
                             "<=31 WEEK, <=366 MONTH, else YEAR).")
class Granularity(enum.Enum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    YEAR = "YEAR"
    AUTO = "AUTO"


@strawberry.enum(description="The range a result is compared with: PREVIOUS_PERIOD = [start - (end - start), "
                             "start); PREVIOUS_YEAR = both bounds one calendar year back as local wall-clock "
                             "times in the query's timeZone (Feb 29 becomes Feb 28).")
class Comparison(enum.Enum):
    PREVIOUS_PERIOD = "PREVIOUS_PERIOD"
    PREVIOUS_YEAR = "PREVIOUS_YEAR"


@strawberry.enum(description="What top ranks by: VIEWS, or READERS (distinct readers, then views, then key).")
class TopOrder(enum.Enum):
    VIEWS = "VIEWS"
    READERS = "READERS"


def comparison_to_domain(c: Comparison | None) -> DomainComparison | None:
    """The domain comparison (None stays None)."""
    return DomainComparison(c.value) if c is not None else None


@strawberry.input(description="Half-open [start, end). A DateTime without offset, or a plain date (midnight), "
                              "is read in the query's timeZone. Missing start: beginning of the data; end: now.")
class TimeRange:
    start: dt.datetime | None = None
    end: dt.datetime | None = None


@strawberry.input(description="Matches when the id equals `eq` and is one of `in` (keys given are AND-ed).")
class IdFilter:
    eq: strawberry.ID | None = None
    in_: list[strawberry.ID] | None = strawberry.field(name="in", default=None)


@strawberry.input(description="Matches ISO 3166-1 alpha-2 codes; a missing country matches no predicate.")
class CodeFilter:
    eq: str | None = None
    in_: list[str] | None = strawberry.field(name="in", default=None)


@strawberry.input(description="Typed, allow-listed view filter; all keys given in one object are AND-ed. "
                              "`country` is the blog's country, `viewerCountry` the reader's.")
class ViewFilter:
    and_: list[ViewFilter] | None = strawberry.field(name="and", default=None)
    or_: list[ViewFilter] | None = strawberry.field(name="or", default=None)
    not_: ViewFilter | None = strawberry.field(name="not", default=None)
    blog: IdFilter | None = None
    author: IdFilter | None = None
    country: CodeFilter | None = None
    viewer_country: CodeFilter | None = None


def _leaf(field: F.Field, value: IdFilter | CodeFilter | None) -> F.Filter | None:
    if value is None:
        return None
    return F.atom(field, value.eq, list(value.in_) if value.in_ is not None else None)


def filter_to_domain(f: ViewFilter | None, depth: int = 0) -> F.Filter:
    """The domain filter tree of a ViewFilter input (bounded depth and size)."""
    if f is None:
        return F.TRUE
    if depth > 20:
        raise BadInput("the filter is nested too deeply (at most 20 levels)")
    parts: list[F.Filter] = []
    if f.and_ is not None:
        parts.append(F.And(tuple(filter_to_domain(p, depth + 1) for p in f.and_)))
    if f.or_ is not None:
        parts.append(F.Or(tuple(filter_to_domain(p, depth + 1) for p in f.or_)))
    if f.not_ is not None:
        parts.append(F.Not(filter_to_domain(f.not_, depth + 1)))
    for field, leaf in ((F.Field.BLOG, f.blog), (F.Field.AUTHOR, f.author), (F.Field.COUNTRY, f.country),
                        (F.Field.VIEWER_COUNTRY, f.viewer_country)):
        node = _leaf(field, leaf)
        if node is not None:
            parts.append(node)
    out: F.Filter = parts[0] if len(parts) == 1 else F.And(tuple(parts))
    return F.check_size(out) if depth == 0 else out


def range_to_domain(r: TimeRange | None, time_zone: str | None, default_zone: str) -> Q.RangeSpec:
    """A validated RangeSpec (zone, instants, start < end) before any SQL."""
    return Q.range_spec(r.start if r else None, r.end if r else None, time_zone, default_zone)


def granularity_to_domain(g: Granularity) -> cal.Granularity:
    """The domain granularity."""
    return cal.Granularity(g.value)


_CURSOR = re.compile(r"bv2:([0-9]{1,12}):([0-9]{1,17}):([0-9]{1,17}):([0-9a-f]{16})")
_LEGACY_CURSOR = re.compile(r"bv1:([0-9]{1,12})")


def _cursor_tag(query: str, offset: int, start: int, end: int) -> str:
    # Not a secret: it only makes a cursor name its query (and its range), so a mix-up is refused.
    return hashlib.blake2b(f"{query}|{offset}|{start}|{end}".encode(), digest_size=8).hexdigest()


def encode_cursor(offset: int, *, query: str, start: int, end: int) -> str:
    """An opaque cursor for a position in a blogViews result: the offset, the range the result was computed
    over (an open start or end as resolved then) and a tag naming the query (BlogViewsQuery.identity)."""
    tag = _cursor_tag(query, offset, start, end)
    return base64.urlsafe_b64encode(f"bv2:{offset}:{start}:{end}:{tag}".encode()).decode().rstrip("=")


def resume(q: Q.BlogViewsQuery, cursor: str | None) -> Q.BlogViewsQuery:
    """The query continued after `cursor`: its offset, over the range its first page resolved; BadInput when the
    cursor is not one of ours or belongs to another query (first, the page size, may change)."""
    if cursor is None:
        return q
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raw = ""
    legacy = _LEGACY_CURSOR.fullmatch(raw)
    if legacy is not None:  # issued before cursors named their query: an offset only, as it was then
        return replace(q, offset=int(legacy.group(1)))
    m = _CURSOR.fullmatch(raw)
    if m is None:
        raise BadInput("`after` is not a cursor this server issued: use pageInfo.endCursor of the previous page")
    offset, start, end = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not hmac.compare_digest(m.group(4), _cursor_tag(q.identity(), offset, start, end)):
        raise BadInput("`after` is a cursor of another query: pass it with the same groupBy, granularity, range, "
                       "filter and timeZone as the page it came from (only `first` may change)")
    return replace(q.pinned(start, end), offset=offset)


def instant(us: int | None) -> dt.datetime | None:
    """A UTC datetime for an instant (None stays None)."""
    return cal.from_us(us) if us is not None else None


@strawberry.type(description="One source of a query plan (a rollup grain, raw edges or the raw tail).")
class SourceUse:
    source: str = strawberry.field(description="hour, day, week, month, year, raw (edges below the "
                                               "watermark) or tail (events not yet rolled up)")
    rows: int


@strawberry.type(description="When and from what a result was computed: the query plan, visible.")
class QueryMeta:
    as_of: dt.datetime
    watermark: dt.datetime | None
    sources: list[SourceUse]

    @staticmethod
    def from_domain(m: Q.Meta) -> QueryMeta:
        return QueryMeta(as_of=cal.from_us(m.as_of), watermark=instant(m.watermark),
                         sources=[SourceUse(source=s.source, rows=s.rows) for s in m.sources])


@strawberry.type(description="The comparison range [start, end) of a result and its matching views.")
class ComparisonInfo:
    start: dt.datetime
    end: dt.datetime
    total_views: int

    @staticmethod
    def from_domain(c: ComparisonSpan | None) -> ComparisonInfo | None:
        if c is None:
            return None
        return ComparisonInfo(start=cal.from_us(c.start), end=cal.from_us(c.end), total_views=c.total_views)


_PREVIOUS = "matching views of this row's group in the comparison range (0 when none); null without compare"
_CHANGE = ("(views - previousViews) / previousViews * 100, rounded to 2 decimals; null without compare or when "
           "previousViews is 0")
_READERS = ("distinct viewerIds among the matching views (views sent without a viewerId count in views only); "
            "exact, from reader sets in the rollups")
_PREVIOUS_READERS = "distinct viewerIds of this row's group in the comparison range; null without compare"


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class BlogViewsRow:
    key: strawberry.ID
    label: str
    period_start: dt.datetime | None
    period_label: str | None
    blog_count: int
    views: int
    previous_views: int | None = strawberry.field(description=_PREVIOUS)
    change: float | None = strawberry.field(description=_CHANGE)
    readers: int = strawberry.field(description=_READERS)
    previous_readers: int | None = strawberry.field(description=_PREVIOUS_READERS)


# GraphQL rows of a page of report rows, by the identity of that list (domain/memo.py); never mutated.
_PAGE_NODES: IdentityMemo[list[BlogViewsRow]] = IdentityMemo(256)


@strawberry.type
class BlogViewsResult:
    total_count: int
    page_info: PageInfo
    nodes: list[BlogViewsRow]
    meta: QueryMeta
    comparison: ComparisonInfo | None = strawberry.field(description="the comparison range; null without compare")

    @staticmethod
    def from_domain(p: Q.BlogViewsPage, query: str) -> BlogViewsResult:
        """The GraphQL result of a page of the query whose identity is `query` (its cursor names it)."""
        shared = type(p.rows) is SharedList  # rows memoised by reports.py: the same nodes for the same rows
        nodes = _PAGE_NODES.get(p.rows) if shared else None
        if nodes is None:
            starts: dict[int | None, dt.datetime | None] = {}  # a page repeats few periods: one datetime each
            nodes = SharedList() if shared else []
            for r in p.rows:
                if r.period_start in starts:
                    start = starts[r.period_start]
                else:
                    start = starts[r.period_start] = instant(r.period_start)
                nodes.append(BlogViewsRow(key=strawberry.ID(r.key), label=r.label, period_start=start,
                                          period_label=r.period_label, blog_count=r.blog_count, views=r.views,
                                          previous_views=r.previous_views, change=r.change, readers=r.readers,
                                          previous_readers=r.previous_readers))
            if shared:
                _PAGE_NODES.put(p.rows, nodes)
        cursor = (encode_cursor(p.end_offset, query=query, start=p.start, end=p.end)
                  if p.end_offset is not None and p.start is not None and p.end is not None else None)
        return BlogViewsResult(total_count=p.total_count, page_info=PageInfo(has_next_page=p.has_next,
                                                                             end_cursor=cursor),
                               nodes=nodes, meta=QueryMeta.from_domain(p.meta),
                               comparison=ComparisonInfo.from_domain(p.comparison))


@strawberry.type
class TopRow:
    rank: int
    key: strawberry.ID
    label: str
    views: int
    blog_count: int
    share: float
    previous_views: int | None = strawberry.field(description=_PREVIOUS)
    change: float | None = strawberry.field(description=_CHANGE)
    readers: int = strawberry.field(description=_READERS)
    previous_readers: int | None = strawberry.field(description=_PREVIOUS_READERS)


@strawberry.type
class TopResult:
    nodes: list[TopRow]
    total_views: int
    other_views: int
    meta: QueryMeta
    comparison: ComparisonInfo | None = strawberry.field(description="the comparison range; null without compare")
    total_readers: int = strawberry.field(description="distinct viewerIds among all matching views of the range "
                                                      "(not a sum of rows)")

    @staticmethod
    def from_domain(t: Q.TopResult) -> TopResult:
        total = t.total_views
        nodes = [TopRow(rank=i + 1, key=strawberry.ID(r.key), label=r.label, views=r.views, blog_count=r.blog_count,
                        share=(r.views / total) if total else 0.0, previous_views=r.previous_views,
                        change=r.change, readers=r.readers, previous_readers=r.previous_readers)
                 for i, r in enumerate(t.rows)]
        return TopResult(nodes=nodes, total_views=total, other_views=t.other_views, meta=QueryMeta.from_domain(t.meta),
                         comparison=ComparisonInfo.from_domain(t.comparison), total_readers=t.total_readers)


@strawberry.type
class PerformancePoint:
    period_start: dt.datetime
    period_end: dt.datetime
    label: str
    views: int
    blogs_created: int
    growth: float | None
    partial: bool
    readers: int = strawberry.field(description=_READERS)
    readers_growth: float | None = strawberry.field(description="as growth, over the distinct readers of the same "
                                                                "two windows (null when the previous had none)")


@strawberry.type
class PerformanceResult:
    points: list[PerformancePoint]
    meta: QueryMeta

    @staticmethod
    def from_domain(p: Q.PerformanceResult) -> PerformanceResult:
        assert p.meta is not None
        return PerformanceResult(
            points=[PerformancePoint(period_start=cal.from_us(x.start), period_end=cal.from_us(x.end), label=x.label,
                                     views=x.views, blogs_created=x.blogs_created, growth=x.growth,
                                     partial=x.partial, readers=x.readers, readers_growth=x.readers_growth)
                    for x in p.points],
            meta=QueryMeta.from_domain(p.meta))


@strawberry.type
class GrainStatus:
    grain: str
    rows: int
    oldest: dt.datetime | None
    newest: dt.datetime | None
    retained_for: int | None = strawberry.field(description="days kept; null = forever")


@strawberry.type
class RollupStatus:
    watermark: dt.datetime | None
    pending_events: int
    last_run_at: dt.datetime | None
    grains: list[GrainStatus]

    @staticmethod
    def from_domain(s: Any) -> RollupStatus:
        return RollupStatus(watermark=instant(s.watermark), pending_events=s.pending_events,
                            last_run_at=instant(s.last_run_at),
                            grains=[GrainStatus(grain=g.grain, rows=g.rows, oldest=instant(g.oldest),
                                                newest=instant(g.newest), retained_for=g.retained_for)
                                    for g in s.grains])


@strawberry.input
class AuthorInput:
    id: strawberry.ID
    name: str
    country: str | None = None


@strawberry.input
class BlogInput:
    id: strawberry.ID
    title: str
    author_id: strawberry.ID
    country: str | None = None
    created_at: dt.datetime


@strawberry.input
class ViewInput:
    event_id: strawberry.ID | None = None
    blog_id: strawberry.ID
    viewer_id: strawberry.ID | None = None
    viewer_country: str | None = None
    viewed_at: dt.datetime | None = None


@strawberry.type
class IngestError:
    index: int
    message: str


@strawberry.type
class IngestResult:
    accepted: int
    duplicates: int
    rejected: int
    errors: list[IngestError]

    @staticmethod
    def from_domain(r: Any) -> IngestResult:
        return IngestResult(accepted=r.accepted, duplicates=r.duplicates, rejected=r.rejected,
                            errors=[IngestError(index=e.index, message=e.message) for e in r.errors])


@strawberry.type
class RefreshResult:
    enqueued: bool


def author_record(a: AuthorInput) -> dict[str, Any]:
    """The loading record of an AuthorInput."""
    return {"id": str(a.id), "name": a.name, **({"country": a.country} if a.country is not None else {})}


def blog_record(b: BlogInput) -> dict[str, Any]:
    """The loading record of a BlogInput."""
    out: dict[str, Any] = {"id": str(b.id), "title": b.title, "authorId": str(b.author_id), "createdAt": b.created_at}
    if b.country is not None:
        out["country"] = b.country
    return out


def view_record(v: ViewInput) -> dict[str, Any]:
    """The loading record of a ViewInput (absent optional fields left out)."""
    out: dict[str, Any] = {"blogId": str(v.blog_id)}
    for key, value in (("eventId", v.event_id), ("viewerId", v.viewer_id), ("viewerCountry", v.viewer_country),
                       ("viewedAt", v.viewed_at)):
        if value is not None:
            out[key] = str(value) if key in ("eventId", "viewerId") else value
    return out
