"""Issue 12 acceptance 1: distinct readers through POST /graphql equal an oracle over the raw events.

The oracle (tests/api/oracle.py `readers`) counts distinct viewerId strings among the matching views of a window
and group, nothing more; the data, filters (and/or/not), ranges, zones (half-hour zones, DST days) and
granularities are drawn as in test_query_properties.py. Views come with and without a viewerId, from a pool of
ids that differ only in case or accents (compared as exact strings), so one reader often reads several blogs,
countries and periods. Checked before any pass, after one, after late events (old viewedAt) above the watermark
and after another pass; every question is asked again at each later stage (cached parts plus the live tail).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import oracle as O
import pytest
import test_query_properties as P
from hypothesis import event, given
from hypothesis import strategies as st

from analytics_gql.rollup import catch_up
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database

VIEWERS = ["r1", "R1", "r2", "ré", "re\u0301", "r 3", "x" * 200]

BLOG_VIEWS = """query($g: Dimension!, $gr: Granularity, $r: TimeRange, $f: ViewFilter, $tz: String,
  $c: Comparison) {
  blogViews(groupBy: $g, granularity: $gr, range: $r, filter: $f, timeZone: $tz, first: 1000, compare: $c) {
    totalCount pageInfo { hasNextPage } nodes { key periodStart views readers previousReaders } } }"""
TOP = """query($d: Dimension!, $r: TimeRange, $f: ViewFilter, $tz: String, $l: Int!, $o: TopOrder, $c: Comparison) {
  top(dimension: $d, range: $r, filter: $f, timeZone: $tz, limit: $l, orderBy: $o, compare: $c) {
    nodes { key views readers previousReaders } totalViews totalReaders } }"""
PERFORMANCE = """query($gr: Granularity!, $r: TimeRange!, $f: ViewFilter, $tz: String) {
  performance(granularity: $gr, range: $r, filter: $f, timeZone: $tz) {
    points { periodStart views growth readers readersGrowth } } }"""


@st.composite
def reader_datasets(draw: st.DrawFn) -> tuple[list[O.Author], list[O.Blog], list[O.View], list[O.View]]:
    """test_query_properties' data, each view with a viewerId from VIEWERS or none."""
    authors, blogs, views, late = draw(P.datasets())
    viewer = st.one_of(st.none(), st.sampled_from(VIEWERS), st.sampled_from(VIEWERS[:3]))

    def with_viewers(vs: list[O.View]) -> list[O.View]:
        return [O.View(v.blog, v.viewer_country, v.viewed_at, draw(viewer)) for v in vs]

    return authors, blogs, with_viewers(views), with_viewers(late)


def load_views(db: Database, views: list[O.View]) -> None:
    P.load(db, "views", [{"blogId": v.blog, "viewedAt": O.utc(v.viewed_at).isoformat(),
                          **({"viewerCountry": v.viewer_country} if v.viewer_country else {}),
                          **({"viewerId": v.viewer} if v.viewer is not None else {})} for v in views])


def load_all(db: Database, authors: list[O.Author], blogs: list[O.Blog], views: list[O.View]) -> None:
    P.load(db, "authors", [{"id": a.id, "name": a.name, **({"country": a.country} if a.country else {})}
                           for a in authors])
    P.load(db, "blogs", [{"id": b.id, "title": b.title, "authorId": b.author,
                          "createdAt": O.utc(b.created_at).isoformat(),
                          **({"country": b.country} if b.country else {})} for b in blogs])
    load_views(db, views)


def _compared(data: O.Data, kind: str | None, s: int, e: int, zone: str) -> tuple[int, int] | None:
    return None if kind is None else O.comparison_range(kind, s, e, zone)


def check_blog_views(api: P.Api, rz: str, data: O.Data, draw: Callable[..., Any],
                     anchors: list[int]) -> Callable[[str], None] | None:
    tz = draw(st.sampled_from([None, *P.ZONES]))
    zone = tz or rz
    gran = draw(st.sampled_from([None, None, "DAY", "WEEK", "MONTH", "YEAR"] + (["HOUR"] if zone in P.HOUR_OK else [])))
    got_range = P.draw_range(draw, zone, gran, missing_ok=True, anchors=anchors)
    if got_range is None:
        return None
    r, s, e = got_range
    f = draw(P.FILTERS)
    group_by = draw(st.sampled_from(["BLOG", "AUTHOR", "COUNTRY", "VIEWER_COUNTRY"]))
    kind = draw(st.sampled_from([None, "PREVIOUS_PERIOD", "PREVIOUS_YEAR"])) if gran is None else None
    if gran is not None:
        lo, hi = O.resolve_range(data, s, e)
        if lo < hi and (hi - lo) // O.HOUR > 9_000 and len(O.periods(gran, lo, hi, zone)) > 9_000:
            return None  # past blogViews' 10,000 periods (with room for late events): test_query_errors refuses it

    def run(stage: str) -> None:
        want = O.blog_views(data, group_by=group_by, granularity=gran, start=s, end=e, zone=zone, f=f)
        lo, hi = O.resolve_range(data, s, e)
        span = _compared(data, kind, lo, hi, zone) if lo < hi else None
        expected = []
        for w in want:
            a, b = lo, hi
            if w.period_start is not None:
                p = next(p for p in O.periods(gran or "", lo, hi, zone) if p.start == w.period_start)
                a, b = max(p.start, lo), min(p.end, hi)
            before = None
            if kind is not None:
                before = O.readers(data, f, *span, group_by, w.key) if span and span[0] < span[1] else 0
            expected.append((w.key, w.period_start, w.views, O.readers(data, f, a, b, group_by, w.key), before))
        event(f"blogViews readers {gran}: {'readers' if any(x[3] for x in expected) else 'none'}")
        variables = {"g": group_by, "gr": gran, "r": r, "f": f, "tz": tz, "c": kind}
        page = api.ask(rz, BLOG_VIEWS, variables)["blogViews"]
        assert page["totalCount"] == len(want) and not page["pageInfo"]["hasNextPage"]
        got = [(n["key"], O.parse_output_instant(n["periodStart"]) if n["periodStart"] else None, n["views"],
                n["readers"], n["previousReaders"]) for n in page["nodes"]]
        assert got == expected, (stage, variables)

    run("first")
    return run


def check_top(api: P.Api, rz: str, data: O.Data, draw: Callable[..., Any],
              anchors: list[int]) -> Callable[[str], None] | None:
    tz = draw(st.sampled_from([None, *P.ZONES]))
    zone = tz or rz
    got_range = P.draw_range(draw, zone, None, missing_ok=True, anchors=anchors)
    if got_range is None:
        return None
    r, s, e = got_range
    f = draw(P.FILTERS)
    dim = draw(st.sampled_from(["BLOG", "AUTHOR", "COUNTRY", "VIEWER_COUNTRY"]))
    limit = draw(st.sampled_from([1, 2, 3, 1000]))
    order = draw(st.sampled_from([None, "VIEWS", "READERS", "READERS"]))
    kind = draw(st.sampled_from([None, None, "PREVIOUS_PERIOD", "PREVIOUS_YEAR"]))

    def run(stage: str) -> None:
        lo, hi = O.resolve_range(data, s, e)
        if order == "READERS":
            rows = O.top_by_readers(data, dimension=dim, start=s, end=e, f=f, limit=limit)
        else:
            rows = [(w.key, w.views, O.readers(data, f, lo, hi, dim, w.key))
                    for w in O.top(data, dimension=dim, start=s, end=e, f=f, limit=limit).rows]
        span = _compared(data, kind, lo, hi, zone) if lo < hi else None
        expected = [(k, v, n, None if kind is None else (O.readers(data, f, *span, dim, k)
                                                         if span and span[0] < span[1] else 0))
                    for k, v, n in rows]
        total = O.readers(data, f, lo, hi) if lo < hi else 0
        event(f"top readers {order}: {'readers' if total else 'none'}")
        variables = {"d": dim, "r": r, "f": f, "tz": tz, "l": limit, "o": order, "c": kind}
        got = api.ask(rz, TOP, variables)["top"]
        assert got["totalReaders"] == total, (stage, variables)
        assert [(n["key"], n["views"], n["readers"], n["previousReaders"]) for n in got["nodes"]] == expected, (
            stage, variables)

    run("first")
    return run


def check_performance(api: P.Api, rz: str, data: O.Data, draw: Callable[..., Any],
                      anchors: list[int]) -> Callable[[str], None] | None:
    tz = draw(st.sampled_from([None, *P.ZONES]))
    zone = tz or rz
    gran = draw(st.sampled_from(["DAY", "WEEK", "MONTH", "YEAR"] + (["HOUR"] if zone in P.HOUR_OK else [])))
    got_range = P.draw_range(draw, zone, gran, missing_ok=False, anchors=anchors)
    if got_range is None:
        return None
    r, s, e = got_range
    assert s is not None
    f = draw(P.FILTERS)

    def run(stage: str) -> None:
        expected = []
        for p in O.periods(gran, s, e, zone):
            a, b = max(p.start, s), min(p.end, e)
            prev = O.period_before(gran, p, zone)
            pa, pb = prev.start + (a - p.start), min(prev.start + (b - p.start), p.start)
            n = O.readers(data, f, a, b)
            before = O.readers(data, f, pa, pb) if pa < pb else 0
            expected.append((p.start, n, None if before == 0 else round((n - before) / before * 100, 2)))
        event(f"performance readers {gran}: {'growth' if any(x[2] is not None for x in expected) else 'none'}")
        variables = {"gr": gran, "r": r, "f": f, "tz": tz}
        got = api.ask(rz, PERFORMANCE, variables)["performance"]
        assert [(O.parse_output_instant(x["periodStart"]), x["readers"], x["readersGrowth"])
                for x in got["points"]] == expected, (stage, variables)

    run("first")
    return run


@pytest.mark.citus
@given(dataset=reader_datasets(), rz=st.sampled_from(P.ZONES), data=st.data())
def test_readers_match_oracle(db: Database, dataset: Any, rz: str, data: st.DataObject) -> None:
    """Raw only, after a pass, with late events above the watermark, after another pass: readers are exact."""
    authors, blogs, views, late = dataset
    P.reset(db)
    load_all(db, authors, blogs, views)
    settings = Settings(database_url=db.settings.db_url, timezone=rz)
    truth = O.Data({a.id: a for a in authors}, {b.id: b for b in blogs}, list(views))
    anchors = [v.viewed_at for v in views + late] + [b.created_at for b in blogs]
    asked: list[Callable[[str], None]] = []

    def ask_all(stage: str) -> None:
        for again in asked:
            again(f"{stage}, asked again")
        for check in (check_blog_views, check_top, check_performance):
            run = check(api, rz, truth, data.draw, anchors)
            if run is not None:
                asked.append(run)

    with P.Api(db) as api:
        ask_all("raw")
        catch_up(db, settings, progress=False, quiet=True)
        ask_all("rolled")
        load_views(db, late)
        truth.views.extend(late)
        ask_all("late")
        catch_up(db, settings, progress=False, quiet=True)
        ask_all("late-rolled")
