"""Immutable query objects (validated before any SQL) and the result rows the API presents."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field, replace
from typing import NamedTuple
from zoneinfo import ZoneInfo

from analytics_gql.domain import calendar as cal
from analytics_gql.domain.comparisons import Comparison, ComparisonSpan
from analytics_gql.domain.filters import TRUE, Filter, canonical
from analytics_gql.errors import BadInput

MAX_POINTS = 10_000
MAX_PAGE = 1_000
MAX_LIMIT = 1_000


class Dimension(enum.StrEnum):
    """What rows are grouped by."""

    BLOG = "BLOG"
    AUTHOR = "AUTHOR"
    COUNTRY = "COUNTRY"
    VIEWER_COUNTRY = "VIEWER_COUNTRY"


def parse_instant(value: str | dt.datetime | dt.date, z: ZoneInfo, what: str) -> int:
    """A DateTime or plain date `YYYY-MM-DD` (midnight) as an instant; without an offset it is read in zone `z`."""
    if isinstance(value, dt.datetime):
        t = value
    elif isinstance(value, dt.date):
        t = dt.datetime(value.year, value.month, value.day)
    else:
        text = value.strip()
        try:
            if len(text) == 10:
                d = dt.date.fromisoformat(text)
                t = dt.datetime(d.year, d.month, d.day)
            else:
                t = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as e:
            raise BadInput(f"{what}: {value!r} is not an ISO 8601 date or date-time") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=z)
    us = cal.to_us(t)
    if not cal.MIN_US <= us <= cal.MAX_US:
        raise BadInput(f"{what}: {value!r} is outside the supported years 1970-2199")
    return us


@dataclass(frozen=True)
class RangeSpec:
    """A validated TimeRange before it meets the data: None = beginning of the data / now."""

    start: int | None
    end: int | None
    zone: ZoneInfo

    def resolve(self, *, data_start: int | None, now: int) -> tuple[int, int]:
        """[start, end) in instants; an empty range when there is no data before `end`."""
        end = self.end if self.end is not None else now
        if self.start is not None:
            start = self.start
        else:
            start = min(data_start if data_start is not None else end, end)
        # An explicit start must be before the end, also when the end is "now" (CONTRACT: start >= end is an
        # error); without a start, an empty data set gives the empty range [end, end).
        if start > end or (self.start is not None and start >= end):
            raise BadInput(f"range.start ({cal.from_us(start).isoformat()}) must be before range.end "
                           f"({cal.from_us(end).isoformat()}); ranges are half-open [start, end)")
        return start, end


def range_spec(start: str | dt.datetime | dt.date | None, end: str | dt.datetime | dt.date | None,
               zone_name: str | None, default_zone: str) -> RangeSpec:
    """Validate a TimeRange and zone before any SQL: known zone, parseable instants, start < end."""
    z = cal.zone(zone_name if zone_name is not None else default_zone)
    s = parse_instant(start, z, "range.start") if start is not None else None
    e = parse_instant(end, z, "range.end") if end is not None else None
    if s is not None and e is not None and s >= e:
        raise BadInput(f"range.start ({cal.from_us(s).isoformat()}) must be before range.end "
                       f"({cal.from_us(e).isoformat()}); ranges are half-open [start, end)")
    return RangeSpec(s, e, z)


def check_between(value: int, low: int, high: int, what: str) -> int:
    """Refuse a limit or page size outside [low, high]."""
    if not low <= value <= high:
        raise BadInput(f"{what} must be between {low} and {high} (got {value})")
    return value


@dataclass(frozen=True)
class BlogViewsQuery:
    """blogViews: views per group (and per period when a granularity is given)."""

    group_by: Dimension
    range: RangeSpec
    granularity: cal.Granularity | None
    filter: Filter = TRUE
    first: int = 100
    offset: int = 0
    compare: Comparison | None = None
    readers: bool = False  # distinct readers selected: read the reader sets too

    def __post_init__(self) -> None:
        if self.compare is not None and self.granularity is not None:
            raise BadInput("compare works on blogViews without granularity (one row per group over the range); "
                           "leave granularity out, or ask performance for a series with growth per period")

    def identity(self) -> str:
        """What a cursor of this query names: everything but the page (first, offset), as the client gave it
        (an open start or end stays open: the cursor pins its resolved value). `compare` is left out: it adds
        fields to the rows, it never changes which rows a page holds."""
        g = self.granularity.value if self.granularity is not None else "-"
        return (f"{self.group_by.value}|{g}|{self.range.start}|{self.range.end}|{self.range.zone.key}|"
                f"{canonical(self.filter)}")

    def pinned(self, start: int, end: int) -> BlogViewsQuery:
        """The query over the range a previous page resolved (its open start/end as they were then)."""
        r = self.range
        return replace(self, range=RangeSpec(r.start if r.start is not None else start,
                                             r.end if r.end is not None else end, r.zone))


@dataclass(frozen=True)
class TopQuery:
    """top: the top `limit` groups by views over the range."""

    dimension: Dimension
    range: RangeSpec
    filter: Filter = TRUE
    limit: int = 10
    compare: Comparison | None = None
    readers: bool = False  # distinct readers selected (or ranked by): read the reader sets too
    by_readers: bool = False  # orderBy READERS: readers desc, then views desc, then key


@dataclass(frozen=True)
class PerformanceQuery:
    """performance: a dense series with blogs created and period-over-period growth."""

    granularity: cal.Granularity
    range: RangeSpec
    filter: Filter = TRUE
    readers: bool = False  # readers or readersGrowth selected: read the reader sets too


@dataclass(frozen=True)
class SourceUse:
    """One source of a plan (a rollup grain, raw edges or the raw tail) and how many rows it gave."""

    source: str
    rows: int


@dataclass(frozen=True)
class Meta:
    """What every result carries: when it was computed and from what."""

    as_of: int
    watermark: int | None
    sources: list[SourceUse]


class GroupRow(NamedTuple):
    """One group (and period) of views (a tuple: a page holds up to 1,000 of them, built per request)."""

    key: str
    label: str
    period_start: int | None
    period_label: str | None
    blog_count: int
    views: int
    previous_views: int | None = None  # views in the comparison range (None without compare)
    readers: int = 0  # distinct viewerIds (0 when readers were not asked for)
    previous_readers: int | None = None  # distinct viewerIds in the comparison range (compare and readers)

    @property
    def change(self) -> float | None:
        """Percent change against previous_views (2 decimals; None without compare or when it is 0)."""
        return growth(self.views, self.previous_views) if self.previous_views is not None else None


@dataclass(frozen=True)
class BlogViewsPage:
    """A page of blogViews rows, with the range it was computed over (the next page's cursor pins it)."""

    total_count: int
    rows: list[GroupRow]
    has_next: bool
    end_offset: int | None
    meta: Meta
    start: int | None = None
    end: int | None = None
    comparison: ComparisonSpan | None = None


@dataclass(frozen=True)
class TopResult:
    """The top groups, with the total and the views not shown."""

    rows: list[GroupRow]
    total_views: int
    meta: Meta
    comparison: ComparisonSpan | None = None
    total_readers: int = 0  # distinct viewerIds among all matching views (not a sum of rows)

    @property
    def other_views(self) -> int:
        """totalViews minus the views of the rows returned."""
        return self.total_views - sum(r.views for r in self.rows)


@dataclass(frozen=True)
class Point:
    """One performance point."""

    start: int
    end: int
    label: str
    views: int
    blogs_created: int
    growth: float | None
    partial: bool
    readers: int = 0
    readers_growth: float | None = None


@dataclass(frozen=True)
class PerformanceResult:
    """The dense series."""

    points: list[Point] = field(default_factory=list)
    meta: Meta | None = None


def growth(current: int, previous: int) -> float | None:
    """Percent change, 2 decimals; None when the previous window had no views."""
    if previous == 0:
        return None
    # `+ 0.0` turns the -0.0 that rounds a tiny decrease (e.g. 99,999 after 100,000) into 0.0: clients print "-0".
    return round((current - previous) / previous * 100, 2) + 0.0


def blogs_label(period_label: str, n: int) -> str:
    """`2025-03 (5 blogs)` / `(1 blog)`."""
    return f"{period_label} ({n} {'blog' if n == 1 else 'blogs'})"
