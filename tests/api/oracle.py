"""An independent, plain-Python answer to blogViews, top and performance over raw events (CONTRACT 3).

Nothing here imports the project's calendar, planning, filter or query code: periods are built from
`datetime(D, tzinfo=ZoneInfo(z))` midnights and wall-clock hours, filters are evaluated on the GraphQL input
dicts themselves, so a shared misunderstanding in the project's code cannot make the comparison pass.
Instants are integer microseconds since the epoch (UTC), as the tests keep them.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pycountry

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = dt.timedelta(microseconds=1)
HOUR = 3_600_000_000
DAY = 24 * HOUR
COUNTRY_NAMES: dict[str, str] = {c.alpha_2: c.name for c in pycountry.countries}
UNKNOWN = "--"


@dataclass(frozen=True)
class Author:
    """An author as loaded."""

    id: str
    name: str
    country: str | None


@dataclass(frozen=True)
class Blog:
    """A blog as loaded (created_at in microseconds)."""

    id: str
    title: str
    author: str
    country: str | None
    created_at: int


@dataclass(frozen=True)
class View:
    """A raw view event (viewed_at in microseconds)."""

    blog: str
    viewer_country: str | None
    viewed_at: int
    viewer: str | None = None  # viewerId (None: sent without one)


@dataclass
class Data:
    """Everything loaded so far."""

    authors: dict[str, Author]
    blogs: dict[str, Blog]
    views: list[View]


# ---------------------------------------------------------------- instants


def us(t: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (t - EPOCH) // ONE_US


def utc(u: int) -> dt.datetime:
    """The aware UTC datetime of an instant."""
    return EPOCH + dt.timedelta(microseconds=u)


def parse_time(text: str, zone: str) -> int:
    """A range endpoint as CONTRACT 3 reads it: a plain date is midnight, no offset = wall time in `zone`."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(zone))  # fold=0, as PEP 495 says and the contract requires
    return us(t)


def parse_output_instant(text: str) -> int:
    """An instant from a DateTime in a response."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert t.tzinfo is not None, f"a DateTime in a response has no offset: {text}"
    return us(t)


def offset(u: int, zone: ZoneInfo) -> int:
    """UTC offset in force at instant u, in microseconds."""
    off = utc(u).astimezone(zone).utcoffset()
    assert off is not None
    return off // ONE_US


# ---------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    """[start, end) with its label."""

    start: int
    end: int
    label: str


def _midnight(d: dt.date, zone: ZoneInfo) -> int:
    """S(D) = datetime(D, tzinfo=zone): the contract's own definition."""
    return us(dt.datetime(d.year, d.month, d.day, tzinfo=zone))


def _unit_starts(gran: str, first: dt.date, last: dt.date) -> list[dt.date]:
    """The dates starting a DAY/WEEK/MONTH/YEAR period from one at or before `first` to one after `last`."""
    out: list[dt.date] = []
    if gran == "DAY":
        d = first - dt.timedelta(days=1)
        while d <= last + dt.timedelta(days=1):
            out.append(d)
            d += dt.timedelta(days=1)
    elif gran == "WEEK":
        d = first - dt.timedelta(days=first.weekday() + 7)
        while d <= last + dt.timedelta(days=7):
            out.append(d)
            d += dt.timedelta(days=7)
    elif gran == "MONTH":
        y, m = first.year, first.month - 1
        if m == 0:
            y, m = y - 1, 12
        while (y, m) <= (last.year + (last.month == 12), last.month % 12 + 1):
            out.append(dt.date(y, m, 1))
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    else:
        for y in range(first.year - 1, last.year + 2):
            out.append(dt.date(y, 1, 1))
    return out


def _label(gran: str, d: dt.date) -> str:
    if gran == "DAY":
        return d.isoformat()
    if gran == "WEEK":
        y, w, _ = d.isocalendar()
        return f"{y}-W{w:02d}"
    if gran == "MONTH":
        return f"{d.year:04d}-{d.month:02d}"
    return f"{d.year:04d}"


def _hour_boundaries(lo: int, hi: int, zone: ZoneInfo) -> list[int]:
    """Instants in [lo, hi] where a local wall-clock hour starts or the offset changes (15-minute probes:
    every offset and every transition of the zones tested is on a quarter hour)."""
    q = 15 * 60 * 1_000_000
    out = []
    t = lo // q * q
    while t <= hi:
        loc = utc(t).astimezone(zone)
        if (loc.minute, loc.second, loc.microsecond) == (0, 0, 0) or offset(t, zone) != offset(t - 1, zone):
            out.append(t)
        t += q
    return out


def periods(gran: str, start: int, end: int, zone_name: str) -> list[Period]:
    """Every period of `gran` meeting [start, end), in order."""
    zone = ZoneInfo(zone_name)
    if gran == "HOUR":
        bounds = _hour_boundaries(start - 2 * HOUR, end + 2 * HOUR, zone)
        out = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            if a < end and b > start:
                out.append(Period(a, b, utc(a).astimezone(zone).strftime("%Y-%m-%dT%H:00")))
        return out
    first = utc(start).astimezone(zone).date()
    last = utc(end).astimezone(zone).date()
    dates = _unit_starts(gran, first, last)
    starts = [_midnight(d, zone) for d in dates]
    out = []
    for i in range(len(dates) - 1):
        a, b = starts[i], starts[i + 1]
        if a < end and b > start:
            out.append(Period(a, b, _label(gran, dates[i])))
    assert out and out[0].start <= start and out[-1].end >= end
    return out


def period_before(gran: str, p: Period, zone_name: str) -> Period:
    """The period that ends where `p` starts."""
    for q in periods(gran, p.start - 1, p.start, zone_name):
        if q.end == p.start:
            return q
    raise AssertionError("no previous period")


def auto(start: int, end: int) -> str:
    """CONTRACT 3's AUTO rule on the range length in fractional days."""
    d = (end - start) / DAY
    for limit, g in ((2, "HOUR"), (7, "DAY"), (31, "WEEK"), (366, "MONTH")):
        if d <= limit:
            return g
    return "YEAR"


# ---------------------------------------------------------------- filters


def _id_pred(spec: dict[str, Any], value: str | None) -> bool:
    """IdFilter/CodeFilter: eq and in AND-ed; a missing value matches no predicate."""
    ok = True
    if spec.get("eq") is not None:
        ok = ok and value is not None and value == spec["eq"]
    if spec.get("in") is not None:
        ok = ok and value is not None and value in spec["in"]
    return ok


def holds(f: dict[str, Any] | None, blog: Blog, viewer_country: str | None) -> bool:
    """Whether a ViewFilter input (as sent) holds for a view of `blog` by a reader from `viewer_country`."""
    if f is None:
        return True
    ok = True
    if f.get("and") is not None:
        ok = ok and all(holds(p, blog, viewer_country) for p in f["and"])
    if f.get("or") is not None:
        ok = ok and any(holds(p, blog, viewer_country) for p in f["or"])
    if f.get("not") is not None:
        ok = ok and not holds(f["not"], blog, viewer_country)
    if f.get("blog") is not None:
        ok = ok and _id_pred(f["blog"], blog.id)
    if f.get("author") is not None:
        ok = ok and _id_pred(f["author"], blog.author)
    if f.get("country") is not None:
        ok = ok and _id_pred(f["country"], blog.country)
    if f.get("viewerCountry") is not None:
        ok = ok and _id_pred(f["viewerCountry"], viewer_country)
    return ok


_READER_COUNTRIES: list[str | None] = [*sorted(COUNTRY_NAMES), None]


def holds_for_some_reader(f: dict[str, Any] | None, blog: Blog) -> bool:
    """blogsCreated's test: the filter holds for the blog with some reader country (every ISO code, or none)."""
    return any(holds(f, blog, c) for c in _READER_COUNTRIES)


# ---------------------------------------------------------------- answers


def _key_label(data: Data, dim: str, v: View) -> tuple[str, str]:
    blog = data.blogs[v.blog]
    if dim == "BLOG":
        return blog.id, blog.title
    if dim == "AUTHOR":
        return blog.author, data.authors[blog.author].name
    code = blog.country if dim == "COUNTRY" else v.viewer_country
    return (code, COUNTRY_NAMES[code]) if code is not None else (UNKNOWN, "Unknown")


def matching(data: Data, f: dict[str, Any] | None) -> list[View]:
    """The views the filter keeps."""
    return [v for v in data.views if holds(f, data.blogs[v.blog], v.viewer_country)]


def _count(views: Iterable[View], a: int, b: int) -> int:
    return sum(1 for v in views if a <= v.viewed_at < b)


def resolve_range(data: Data, start: int | None, end: int) -> tuple[int, int]:
    """Missing start = the first instant with data (any view, filtered or not); empty when it is past `end`."""
    if start is None:
        start = min((v.viewed_at for v in data.views), default=end)
        start = min(start, end)
    return start, end


@dataclass(frozen=True)
class Row:
    """One blogViews / top row."""

    period_start: int | None
    period_label: str | None
    key: str
    label: str
    views: int
    blog_count: int


def _group(data: Data, views: Iterable[View], dim: str) -> dict[str, tuple[str, int, set[str]]]:
    acc: dict[str, tuple[str, int, set[str]]] = {}
    for v in views:
        k, label = _key_label(data, dim, v)
        _, n, blogs = acc.get(k, (label, 0, set()))
        blogs.add(v.blog)
        acc[k] = (label, n + 1, blogs)
    return acc


def blog_views(data: Data, *, group_by: str, granularity: str | None, start: int | None, end: int,
               zone: str, f: dict[str, Any] | None) -> list[Row]:
    """Every blogViews row, in the contract's order."""
    start, end = resolve_range(data, start, end)
    if start >= end:
        return []
    views = [v for v in matching(data, f) if start <= v.viewed_at < end]
    rows: list[Row] = []
    if granularity is None:
        for k, (label, n, blogs) in _group(data, views, group_by).items():
            rows.append(Row(None, None, k, label, n, len(blogs)))
        rows.sort(key=lambda r: (-r.views, r.key))
        return rows
    g = auto(start, end) if granularity == "AUTO" else granularity
    by_period: dict[int, list[View]] = defaultdict(list)
    ps = periods(g, start, end, zone)
    starts = [p.start for p in ps]
    for v in views:
        i = bisect.bisect_right(starts, v.viewed_at) - 1
        assert ps[i].start <= v.viewed_at < ps[i].end
        by_period[i].append(v)
    for i in sorted(by_period):
        part = [Row(ps[i].start, ps[i].label, k, label, n, len(blogs))
                for k, (label, n, blogs) in _group(data, by_period[i], group_by).items()]
        part.sort(key=lambda r: (-r.views, r.key))
        rows.extend(part)
    return rows


@dataclass(frozen=True)
class TopAnswer:
    """top's answer."""

    rows: list[Row]
    total: int
    other: int


def top(data: Data, *, dimension: str, start: int | None, end: int, f: dict[str, Any] | None,
        limit: int) -> TopAnswer:
    """The top `limit` groups by views (key ascending on ties), with the total and the views not shown."""
    rows = blog_views(data, group_by=dimension, granularity=None, start=start, end=end, zone="UTC", f=f)
    total = sum(r.views for r in rows)
    shown = rows[:limit]
    return TopAnswer(shown, total, total - sum(r.views for r in shown))


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


def performance(data: Data, *, granularity: str, start: int, end: int, zone: str,
                f: dict[str, Any] | None) -> list[Point]:
    """The dense series, with same-window growth against the previous period."""
    g = auto(start, end) if granularity == "AUTO" else granularity
    views = matching(data, f)
    candidates = [b for b in data.blogs.values() if holds_for_some_reader(f, b)]
    out = []
    for p in periods(g, start, end, zone):
        a, b = max(p.start, start), min(p.end, end)
        n = _count(views, a, b)
        prev = period_before(g, p, zone)
        pa, pb = prev.start + (a - p.start), min(prev.start + (b - p.start), p.start)
        before = _count(views, pa, pb) if pa < pb else 0
        growth = None if before == 0 else round((n - before) / before * 100, 2)
        created = sum(1 for blog in candidates if a <= blog.created_at < b)
        label = f"{p.label} ({created} {'blog' if created == 1 else 'blogs'})"
        out.append(Point(p.start, p.end, label, n, created, growth, (a, b) != (p.start, p.end)))
    return out


# ---------------------------------------------------------------- comparisons


def _wall_year_back(u: int, zone_name: str) -> int:
    """One calendar year back as a wall-clock time written out and read again the contract's way (a DateTime
    without an offset, in `zone_name`); Feb 29 is written as Feb 28."""
    wall = utc(u).astimezone(ZoneInfo(zone_name)).strftime("%Y-%m-%dT%H:%M:%S.%f")
    year, rest = int(wall[:4]), wall[4:]
    if rest.startswith("-02-29"):
        rest = "-02-28" + rest[6:]
    return parse_time(f"{year - 1:04d}{rest}", zone_name)


def comparison_range(kind: str, start: int, end: int, zone_name: str) -> tuple[int, int]:
    """CONTRACT 3's comparison range; a year back, bounds that meet or cross give the empty [start', start')."""
    if kind == "PREVIOUS_PERIOD":
        return start - (end - start), start
    s, e = _wall_year_back(start, zone_name), _wall_year_back(end, zone_name)
    return s, max(s, e)


@dataclass(frozen=True)
class Compared:
    """What `compare` adds: per row key its previous views and change, and the comparison range's total."""

    start: int
    end: int
    total: int
    previous: dict[str, int]

    def row(self, key: str, views: int) -> tuple[int, float | None]:
        """(previousViews, change) of a row."""
        before = self.previous.get(key, 0)
        return before, None if before == 0 else round((views - before) / before * 100, 2)


def compared(data: Data, *, kind: str, dimension: str, start: int | None, end: int, zone: str,
             f: dict[str, Any] | None) -> Compared:
    """The comparison of the range [start, end) (resolved as blogViews resolves it) by `dimension`."""
    start, end = resolve_range(data, start, end)
    return compared_over(data, dimension=dimension, start=start, end=end, f=f,
                         over=comparison_range(kind, start, end, zone))


def compared_over(data: Data, *, dimension: str, start: int, end: int, f: dict[str, Any] | None,
                  over: tuple[int, int]) -> Compared:
    """The comparison of [start, end) with the range `over` (for a range ending "now": the server's clock)."""
    ps, pe = over
    views = [v for v in matching(data, f) if ps <= v.viewed_at < pe]
    previous: dict[str, int] = defaultdict(int)
    for v in views:
        previous[_key_label(data, dimension, v)[0]] += 1
    return Compared(ps, pe, len(views), dict(previous))


# ---------------------------------------------------------------- readers


def readers(data: Data, f: dict[str, Any] | None, a: int, b: int, dim: str | None = None,
            key: str | None = None) -> int:
    """Distinct viewerIds (exact strings) among the matching views in [a, b), of one group when `dim` is given."""
    return len({v.viewer for v in matching(data, f) if a <= v.viewed_at < b and v.viewer is not None
                and (dim is None or _key_label(data, dim, v)[0] == key)})


def top_by_readers(data: Data, *, dimension: str, start: int | None, end: int, f: dict[str, Any] | None,
                   limit: int) -> list[tuple[str, int, int]]:
    """(key, views, readers) of the top `limit` groups by readers desc, views desc, key ascending."""
    s, e = resolve_range(data, start, end)
    rows = blog_views(data, group_by=dimension, granularity=None, start=start, end=end, zone="UTC", f=f)
    ranked = sorted(((r.key, r.views, readers(data, f, s, e, dimension, r.key)) for r in rows),
                    key=lambda t: (-t[2], -t[1], t[0]))
    return ranked[:limit]
