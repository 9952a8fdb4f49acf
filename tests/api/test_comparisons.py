"""Issue 14 acceptance 1: `compare` on top and blogViews equals tests/api/oracle.py over the raw events.

Both presets, zones with DST (America/New_York's March and November changes, a wall time in a skipped hour, a
repeated hour), Feb 29, ranges before the first event and before 1970, filters, top with limits and every page of
blogViews, before and after rollup passes and late events, on SQLite and PostgreSQL; errors; and both ranges read
by one statement (one plan).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import oracle as O
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from sqlalchemy import event as sa_event
from starlette.testclient import TestClient
from test_query_properties import FILTERS, ZONES, Api, datasets, draw_range, load, load_views, reset

from analytics_gql.api.app import create_app
from analytics_gql.rollup import catch_up
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database

pytestmark = pytest.mark.citus  # also on a Citus cluster when ANALYTICS_TEST_CITUS_URL is set


KINDS = ["PREVIOUS_PERIOD", "PREVIOUS_YEAR"]
DIMENSIONS = ["BLOG", "AUTHOR", "COUNTRY", "VIEWER_COUNTRY"]
BLOG_VIEWS = """query($g: Dimension!, $r: TimeRange, $f: ViewFilter, $tz: String, $first: Int!, $after: String,
  $c: Comparison) {
  blogViews(groupBy: $g, range: $r, filter: $f, timeZone: $tz, first: $first, after: $after, compare: $c) {
    totalCount pageInfo { hasNextPage endCursor } nodes { key label views blogCount previousViews change }
    comparison { start end totalViews } } }"""
TOP = """query($d: Dimension!, $r: TimeRange, $f: ViewFilter, $tz: String, $l: Int!, $c: Comparison) {
  top(dimension: $d, range: $r, filter: $f, timeZone: $tz, limit: $l, compare: $c) {
    nodes { rank key label views blogCount share previousViews change } totalViews otherViews
    comparison { start end totalViews } } }"""


def _info(c: dict[str, Any] | None) -> tuple[int, int, int] | None:
    if c is None:
        return None
    return O.parse_output_instant(c["start"]), O.parse_output_instant(c["end"]), c["totalViews"]


def all_pages(ask: Callable[[dict[str, Any]], dict[str, Any]], variables: dict[str, Any]) -> tuple[
        list[tuple[Any, ...]], list[dict[str, Any]]]:
    """Every blogViews row (key, label, views, blogCount, previousViews, change), following the cursors."""
    rows: list[tuple[Any, ...]] = []
    pages: list[dict[str, Any]] = []
    variables = dict(variables, after=None)
    for _ in range(200):
        page = ask(variables)["blogViews"]
        pages.append(page)
        rows += [(n["key"], n["label"], n["views"], n["blogCount"], n["previousViews"], n["change"])
                 for n in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            return rows, pages
        variables["after"] = page["pageInfo"]["endCursor"]
    raise AssertionError("more than 200 pages")


def expected_blog_views(data: O.Data, kind: str | None, dim: str, s: int | None, e: int, zone: str,
                        f: dict[str, Any] | None, over: tuple[int, int] | None = None
                        ) -> tuple[list[tuple[Any, ...]], tuple[int, int, int] | None]:
    """The oracle's rows (key, label, views, blogCount, previousViews, change) and comparison (start, end, total);
    `over`: the comparison range to count in (a range ending "now", see comparison_ending_now)."""
    want = O.blog_views(data, group_by=dim, granularity=None, start=s, end=e, zone=zone, f=f)
    if kind is None:
        return [(w.key, w.label, w.views, w.blog_count, None, None) for w in want], None
    if over is None:
        c = O.compared(data, kind=kind, dimension=dim, start=s, end=e, zone=zone, f=f)
    else:
        c = O.compared_over(data, dimension=dim, start=O.resolve_range(data, s, e)[0], end=e, f=f, over=over)
    return ([(w.key, w.label, w.views, w.blog_count, *c.row(w.key, w.views)) for w in want],
            (c.start, c.end, c.total))


def comparison_ending_now(data: O.Data, kind: str, s: int | None, zone: str, before: int, after: int,
                          got: dict[str, Any]) -> tuple[int, int]:
    """The comparison range a server reported for a range ending "now" (read between `before` and `after`),
    checked against the oracle's ranges for both of those ends; the rows are then counted over it."""
    reported = (O.parse_output_instant(got["start"]), O.parse_output_instant(got["end"]))
    low = O.comparison_range(kind, *O.resolve_range(data, s, before), zone)
    high = O.comparison_range(kind, *O.resolve_range(data, s, after), zone)
    assert min(low[0], high[0]) <= reported[0] <= max(low[0], high[0]), (reported, low, high)
    assert min(low[1], high[1]) <= reported[1] <= max(low[1], high[1]), (reported, low, high)
    return reported


def check_compare(api: Api, rz: str, data: O.Data, draw: Callable[..., Any],
                  anchors: list[int]) -> Callable[[str], None] | None:
    tz = draw(st.sampled_from([None, *ZONES]))
    zone = tz or rz
    got_range = draw_range(draw, zone, None, missing_ok=True, anchors=anchors)
    if got_range is None:
        return None
    r, s, e = got_range
    f = draw(FILTERS)
    dim = draw(st.sampled_from(DIMENSIONS))
    kind = draw(st.sampled_from([*KINDS, *KINDS, None]))
    limit = draw(st.sampled_from([1, 2, 3, 1000]))
    first_choice = draw(st.sampled_from([1, 2, 3, 1000]))

    def run(stage: str) -> None:
        first = max(first_choice, math.ceil(len(O.blog_views(data, group_by=dim, granularity=None, start=s,
                                                             end=e, zone=zone, f=f)) / 6))
        variables = {"g": dim, "r": r, "f": f, "tz": tz, "first": first, "c": kind}
        before = O.us(dt.datetime.now(dt.UTC))
        rows, pages = all_pages(lambda v: api.ask(rz, BLOG_VIEWS, v), variables)
        top = api.ask(rz, TOP, {"d": dim, "r": r, "f": f, "tz": tz, "l": limit, "c": kind})["top"]
        over = None
        if kind is not None and not (r or {}).get("end"):  # the range ends "now": the server's clock says when
            over = comparison_ending_now(data, kind, s, zone, before, O.us(dt.datetime.now(dt.UTC)),
                                         pages[0]["comparison"])
        want, info = expected_blog_views(data, kind, dim, s, e, zone, f, over)
        event(f"compare {kind}: {'previous' if info and info[2] else 'no previous'}, {len(want)} rows")
        assert rows == want, (stage, variables)
        if over is None:  # (else the pages and top each read their own "now")
            assert {_info(p["comparison"]) for p in pages} == {info}, (stage, variables)
            assert _info(top["comparison"]) == info, (stage, variables)
        assert {p["totalCount"] for p in pages} == {len(want)}
        total = sum(w[2] for w in want)
        assert [(n["rank"], n["key"], n["views"], n["share"], n["previousViews"], n["change"])
                for n in top["nodes"]] == [(i + 1, w[0], w[2], w[2] / total, w[4], w[5])
                                           for i, w in enumerate(want[:limit])], (stage, variables)
        assert (top["totalViews"], top["otherViews"]) == (total, total - sum(w[2] for w in want[:limit]))

    run(stage="raw")
    return run


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    """One app per reporting zone for all the examples of a test (building a schema per example is slow)."""
    with Api(db) as shared:
        yield shared


@given(dataset=datasets(), rz=st.sampled_from(ZONES), data=st.data())
def test_comparisons_match_oracle(db: Database, api: Api, dataset: Any, rz: str, data: st.DataObject) -> None:
    """Random data, ranges, zones, filters, dimensions, presets, limits and page sizes: every row's
    previousViews and change, and the comparison range and total, equal the oracle's at every stage."""
    authors, blogs, views, late = dataset
    reset(db)
    load(db, "authors", [{"id": a.id, "name": a.name, **({"country": a.country} if a.country else {})}
                         for a in authors])
    load(db, "blogs", [{"id": b.id, "title": b.title, "authorId": b.author, "createdAt": O.utc(b.created_at)
                        .isoformat(), **({"country": b.country} if b.country else {})} for b in blogs])
    load_views(db, views)
    settings = Settings(database_url=db.settings.db_url, timezone=rz)
    truth = O.Data({a.id: a for a in authors}, {b.id: b for b in blogs}, list(views))
    anchors = [v.viewed_at for v in views + late]
    # A year after the data too, so that PREVIOUS_YEAR often lands on it.
    anchors += [a + 365 * O.DAY for a in anchors]
    asked: list[Callable[[str], None]] = []
    for stage in ("raw", "rolled", "late", "late-rolled"):
        if stage in ("rolled", "late-rolled"):
            catch_up(db, settings, progress=False, quiet=True)
        if stage == "late":
            load_views(db, late)
            truth.views.extend(late)
        for again in asked:  # answered from the cached part of an earlier stage plus the live tail
            again(stage)
        run = check_compare(api, rz, truth, data.draw, anchors)
        if run is not None:
            asked.append(run)


# ---------------------------------------------------------------- fixed cases


NY = "America/New_York"


@pytest.fixture
def world(db: Database) -> Iterator[tuple[Database, TestClient, O.Data]]:
    """Two authors, three blogs (one without a country) and views around DST changes and Feb 29, half of them
    rolled up in UTC."""
    reset(db)
    authors = [O.Author("a1", "Abebe", "ET"), O.Author("a2", "Bo", None)]
    blogs = [O.Blog("b1", "One", "a1", "ET", O.us(dt.datetime(2022, 1, 1, tzinfo=O.UTC))),
             O.Blog("b2", "Two", "a2", None, O.us(dt.datetime(2022, 1, 1, tzinfo=O.UTC))),
             O.Blog("b3", "Three", "a2", "US", O.us(dt.datetime(2022, 1, 1, tzinfo=O.UTC)))]
    edges: list[int] = []
    for day in (dt.date(2023, 2, 27), dt.date(2023, 2, 28), dt.date(2023, 3, 1), dt.date(2024, 2, 28),
                dt.date(2024, 2, 29), dt.date(2024, 3, 1), dt.date(2023, 3, 10), dt.date(2024, 3, 9),
                dt.date(2024, 3, 10), dt.date(2025, 3, 9), dt.date(2023, 11, 3), dt.date(2024, 11, 2),
                dt.date(2024, 11, 3), dt.date(2025, 11, 2)):
        # Every half hour from the evening before to the morning after local midnight, and a microsecond
        # either side of each.
        midnight = O.us(dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(NY)))
        edges += [midnight + h * O.HOUR // 2 + k for h in range(-2, 52) for k in (-1, 0, 1)]
    views = [O.View(["b1", "b2", "b3", "b1"][i % 4], [None, "US", "KE"][i % 3], t)
             for i, t in enumerate(edges) if (i * 7) % 5]  # not every instant, so that changes differ
    views += [O.View("b1", "KE", edges[0] + i * 98_765_432_111) for i in range(600)]
    load(db, "authors", [{"id": a.id, "name": a.name, **({"country": a.country} if a.country else {})}
                         for a in authors])
    load(db, "blogs", [{"id": b.id, "title": b.title, "authorId": b.author, "createdAt": O.utc(b.created_at)
                        .isoformat(), **({"country": b.country} if b.country else {})} for b in blogs])
    load_views(db, views[: len(views) // 2])
    catch_up(db, Settings(database_url=db.settings.db_url), progress=False, quiet=True)
    load_views(db, views[len(views) // 2:])
    truth = O.Data({a.id: a for a in authors}, {b.id: b for b in blogs}, views)
    with TestClient(create_app(Settings(database_url=db.settings.db_url), db)) as client:
        yield db, client, truth


def ask(client: TestClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/graphql", json={"query": query, "variables": variables})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]  # type: ignore[no-any-return]


CASES = [
    # Feb 29: the leap day a year back is Feb 28; [Feb 28, Feb 29) of a leap year compares with an empty range.
    ({"start": "2024-02-29", "end": "2024-03-01"}, NY, "PREVIOUS_YEAR"),
    ({"start": "2024-02-28", "end": "2024-02-29"}, NY, "PREVIOUS_YEAR"),
    ({"start": "2024-02-29T12:00:00", "end": "2024-03-01T01:00:00"}, "UTC", "PREVIOUS_YEAR"),
    ({"start": "2024-02-29", "end": "2024-03-02"}, NY, "PREVIOUS_PERIOD"),
    # New York's spring-forward day in 2024 (Mar 10) is a plain day in 2023; 2025-03-09 02:30 is skipped (fold=0).
    ({"start": "2024-03-10T01:30:00", "end": "2024-03-10T04:00:00"}, NY, "PREVIOUS_YEAR"),
    ({"start": "2026-03-09T02:30:00", "end": "2026-03-09T05:00:00"}, NY, "PREVIOUS_YEAR"),
    ({"start": "2025-03-09T02:30:00", "end": "2025-03-09T05:00:00"}, NY, "PREVIOUS_YEAR"),
    ({"start": "2024-03-10", "end": "2024-03-11"}, NY, "PREVIOUS_PERIOD"),
    # Fall back: 2024-11-03 01:30 happens twice; a range inside the repeat compares with an empty range a year
    # back, where the same wall times do not repeat (2023-11-05 is the change).
    ({"start": "2024-11-03T01:45:00-04:00", "end": "2024-11-03T01:15:00-05:00"}, NY, "PREVIOUS_YEAR"),
    ({"start": "2024-11-03", "end": "2024-11-04"}, NY, "PREVIOUS_YEAR"),
    ({"start": "2025-11-02T00:00:00", "end": "2025-11-02T03:00:00"}, NY, "PREVIOUS_YEAR"),
    ({"start": "2024-11-03T01:00:00-04:00", "end": "2024-11-03T01:00:00-05:00"}, NY, "PREVIOUS_PERIOD"),
    # Before the first event (2023-02-27) and before 1970: zero previous views, not an error.
    ({"start": "2023-02-27", "end": "2023-03-02"}, NY, "PREVIOUS_YEAR"),
    ({"start": "2023-02-27", "end": "2023-03-02"}, NY, "PREVIOUS_PERIOD"),
    ({"start": "1970-01-05", "end": "2023-03-01"}, "UTC", "PREVIOUS_PERIOD"),
    ({"start": "1970-01-05", "end": "1970-02-01"}, "UTC", "PREVIOUS_YEAR"),
    ({"end": "2024-03-01"}, NY, "PREVIOUS_PERIOD"),
    (None, NY, "PREVIOUS_YEAR"),
]


@pytest.mark.parametrize(("r", "zone", "kind"), CASES)
def test_fixed_ranges_match_oracle(world: tuple[Database, TestClient, O.Data], r: dict[str, str] | None, zone: str,
                                   kind: str) -> None:
    """DST, Feb 29 and before-the-data ranges, by every dimension, with and without a filter, in pages of 1."""
    _db, client, truth = world
    s = O.parse_time(r["start"], zone) if r and "start" in r else None
    e = O.parse_time(r["end"], zone) if r and "end" in r else None
    for dim in DIMENSIONS:
        for f in (None, {"not": {"viewerCountry": {"eq": "KE"}}}, {"author": {"eq": "a2"}}):
            before = O.us(dt.datetime.now(dt.UTC))
            rows, pages = all_pages(lambda v: ask(client, BLOG_VIEWS, v),
                                    {"g": dim, "r": r, "f": f, "tz": zone, "first": 1, "c": kind})
            after = O.us(dt.datetime.now(dt.UTC))
            over = None if e is not None else comparison_ending_now(truth, kind, s, zone, before, after,
                                                                    pages[0]["comparison"])
            want, info = expected_blog_views(truth, kind, dim, s, e if e is not None else after, zone, f, over)
            assert rows == want, (dim, f)
            assert len(pages) == max(1, len(want))
            if e is None:
                continue
            assert {_info(p["comparison"]) for p in pages} == {info}
            top = ask(client, TOP, {"d": dim, "r": r, "f": f, "tz": zone, "l": 2, "c": kind})["top"]
            assert [(n["key"], n["previousViews"], n["change"]) for n in top["nodes"]] == [
                (w[0], w[4], w[5]) for w in want[:2]]
            assert _info(top["comparison"]) == info


def test_fixed_comparison_ranges() -> None:
    """The comparison ranges themselves, written out (the oracle's arithmetic is checked, not only reused)."""
    z = ZoneInfo(NY)

    def wall(*a: int, fold: int = 0) -> int:
        return O.us(dt.datetime(*a, tzinfo=z, fold=fold))  # type: ignore[misc]

    assert O.comparison_range("PREVIOUS_YEAR", wall(2024, 2, 29), wall(2024, 3, 1), NY) == (
        wall(2023, 2, 28), wall(2023, 3, 1))
    assert O.comparison_range("PREVIOUS_YEAR", wall(2024, 2, 28), wall(2024, 2, 29), NY) == (
        wall(2023, 2, 28), wall(2023, 2, 28))
    # 2025-03-09 02:30 does not exist in New York: fold=0 reads it at the offset before the gap (EST), 07:30 UTC.
    start, _ = O.comparison_range("PREVIOUS_YEAR", wall(2026, 3, 9, 2, 30), wall(2026, 3, 9, 5), NY)
    assert O.utc(start) == dt.datetime(2025, 3, 9, 7, 30, tzinfo=O.UTC)
    # The second 01:30 of 2024-11-03 moves to the only 01:30 of 2023-11-03.
    assert O.comparison_range("PREVIOUS_YEAR", wall(2024, 11, 3, 1, 30, fold=1), wall(2024, 11, 4), NY) == (
        wall(2023, 11, 3, 1, 30), wall(2023, 11, 4))
    assert O.comparison_range("PREVIOUS_PERIOD", wall(2024, 3, 10), wall(2024, 3, 11), NY) == (
        wall(2024, 3, 10) - 23 * O.HOUR, wall(2024, 3, 10))


def test_without_compare_the_fields_are_null(world: tuple[Database, TestClient, O.Data]) -> None:
    _db, client, truth = world
    r = {"start": "2024-02-01", "end": "2024-04-01"}
    page = ask(client, BLOG_VIEWS, {"g": "BLOG", "r": r, "f": None, "tz": NY, "first": 10, "c": None})["blogViews"]
    top = ask(client, TOP, {"d": "BLOG", "r": r, "f": None, "tz": NY, "l": 10, "c": None})["top"]
    assert page["comparison"] is None and top["comparison"] is None
    assert len(page["nodes"]) == len(top["nodes"]) == 3
    assert {(n["previousViews"], n["change"]) for n in page["nodes"] + top["nodes"]} == {(None, None)}


def test_both_ranges_are_read_by_one_statement(world: tuple[Database, TestClient, O.Data]) -> None:
    """With compare, the statements that read views are as many as without: the comparison range is planned
    and read with the range (one plan, one snapshot), not by a second query."""
    db, client, _truth = world
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "view_events" in statement or "views_" in statement:
            seen.append(statement)

    sa_event.listen(db.engine, "before_cursor_execute", record)
    try:
        counts = {}
        for kind in (None, "PREVIOUS_YEAR"):
            for query, variables in ((TOP, {"d": "AUTHOR", "l": 1}), (BLOG_VIEWS, {"g": "AUTHOR", "first": 1})):
                seen.clear()
                assert db.query_cache is not None
                db.query_cache.clear()  # each question reads its rollup part
                ask(client, query, {**variables, "r": {"start": "2024-02-20", "end": "2024-03-20"}, "f": None,
                                    "tz": NY, "c": kind})
                counts[(kind, query)] = len([s for s in seen if "plan_" in s])
    finally:
        sa_event.remove(db.engine, "before_cursor_execute", record)
    assert counts[(None, TOP)] == counts[("PREVIOUS_YEAR", TOP)] == 2  # the rollup part and the live tail
    assert counts[(None, BLOG_VIEWS)] == counts[("PREVIOUS_YEAR", BLOG_VIEWS)] == 2


def test_compare_with_granularity_is_refused(world: tuple[Database, TestClient, O.Data]) -> None:
    _db, client, _truth = world
    for gran in ("DAY", "AUTO"):
        body = client.post("/graphql", json={"query": "query($c: Comparison) { blogViews(groupBy: BLOG, "
                                             f"granularity: {gran}, compare: $c) {{ totalCount }} }}",
                                             "variables": {"c": "PREVIOUS_PERIOD"}}).json()
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
        assert "without granularity" in body["errors"][0]["message"]
    body = client.post("/graphql", json={"query": "{ top(dimension: BLOG, compare: LAST_WEEK) { totalViews } }"}
                       ).json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    assert "LAST_WEEK" in body["errors"][0]["message"]
