"""blogViews pages: a cursor continues the very result it came from (both databases, POST /graphql).

A page's rows are ranked by views, so a cursor that only carried an offset would page a *different* ranking when
the range ends "now" and views arrive between two pages (rows lost and repeated), and would silently page any
other query it was passed to. The cursor pins the resolved range and names its query: the union of the pages
equals the oracle's answer as of the first page, and a cursor passed to another query is BAD_USER_INPUT.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import oracle as O
import pytest
from starlette.testclient import TestClient

from analytics_gql.api.app import create_app
from analytics_gql.loading import ingest_records
from analytics_gql.rollup import catch_up
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database

pytestmark = pytest.mark.citus  # also on a Citus cluster when ANALYTICS_TEST_CITUS_URL is set


BLOG_VIEWS = """query($g: Dimension!, $gr: Granularity, $r: TimeRange, $f: ViewFilter, $tz: String, $first: Int!,
  $after: String) {
  blogViews(groupBy: $g, granularity: $gr, range: $r, filter: $f, timeZone: $tz, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } nodes { key label periodStart periodLabel blogCount views }
    meta { asOf } } }"""
T0 = O.us(dt.datetime(2025, 1, 6, 10, tzinfo=O.UTC))
AUTHORS = [O.Author("a1", "Abebe", "ET")]
BLOGS = [O.Blog("b1", "One", "a1", "ET", T0), O.Blog("b2", "Two", "a1", None, T0),
         O.Blog("b3", "Three", "a1", "KE", T0)]
# b1 leads with 5 views, b2 has 3, b3 has 1: one row a page, in that order.
VIEWS = ([O.View("b1", "US", T0 + i * O.HOUR) for i in range(5)]
         + [O.View("b2", None, T0 + i * O.DAY) for i in range(3)] + [O.View("b3", "KE", T0 + 7)])


def ingest(db: Database, kind: str, records: list[dict[str, Any]]) -> None:
    r = ingest_records(db, kind, records)  # type: ignore[arg-type]
    assert r.rejected == 0, r.errors


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:
    ingest(db, "authors", [{"id": a.id, "name": a.name, "country": a.country} for a in AUTHORS])
    ingest(db, "blogs", [{"id": b.id, "title": b.title, "authorId": b.author, "createdAt": O.utc(b.created_at)
                          .isoformat(), **({"country": b.country} if b.country else {})} for b in BLOGS])
    ingest(db, "views", [{"blogId": v.blog, "viewedAt": O.utc(v.viewed_at).isoformat(),
                          **({"viewerCountry": v.viewer_country} if v.viewer_country else {})} for v in VIEWS])
    catch_up(db, Settings(database_url=db.settings.db_url), progress=False, quiet=True)
    with TestClient(create_app(Settings(database_url=db.settings.db_url), db)) as c:
        yield c


def ask(client: TestClient, variables: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/graphql", json={"query": BLOG_VIEWS, "variables": variables})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def page(client: TestClient, variables: dict[str, Any]) -> dict[str, Any]:
    body = ask(client, variables)
    assert not body.get("errors"), body
    return body["data"]["blogViews"]  # type: ignore[no-any-return]


def rows(p: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(n["key"], n["label"], n["views"], n["blogCount"]) for n in p["nodes"]]


def base(**kw: Any) -> dict[str, Any]:
    return {"g": "BLOG", "gr": None, "r": {"start": "2025-01-01"}, "f": None, "tz": "UTC", "first": 1,
            "after": None, **kw}


@pytest.mark.parametrize("open_start", [False, True])
def test_pages_of_a_range_ending_now_neither_lose_nor_repeat_rows(db: Database, client: TestClient,
                                                                   open_start: bool) -> None:
    """Views arriving between two pages (as live traffic does) must not reshuffle the ranking being paged."""
    variables = base(r={} if open_start else {"start": "2025-01-01"})
    first = page(client, variables)
    as_of = O.parse_output_instant(first["meta"]["asOf"])
    truth = O.Data({a.id: a for a in AUTHORS}, {b.id: b for b in BLOGS}, list(VIEWS))
    start = None if open_start else O.parse_time("2025-01-01", "UTC")
    want = O.blog_views(truth, group_by="BLOG", granularity=None, start=start, end=as_of, zone="UTC", f=None)
    assert [(w.key, w.label, w.views, w.blog_count) for w in want] == [
        ("b1", "One", 5, 1), ("b2", "Two", 3, 1), ("b3", "Three", 1, 1)]
    got = rows(first)
    # Meanwhile b3 gets 9 views now (viewedAt defaults to the moment of ingest, after the first page's asOf):
    # ranked afresh, b3 would lead, b1 would show again on page 2 and b3's row would be lost.
    ingest(db, "views", [{"blogId": "b3"} for _ in range(9)])
    cursor = first["pageInfo"]["endCursor"]
    assert first["pageInfo"]["hasNextPage"] is True
    while cursor is not None:
        p = page(client, {**variables, "after": cursor})
        got += rows(p)
        assert p["totalCount"] == len(want)
        assert p["pageInfo"]["hasNextPage"] is (len(got) < len(want))  # no empty last page
        cursor = p["pageInfo"]["endCursor"] if p["pageInfo"]["hasNextPage"] else None
    assert got == [(w.key, w.label, w.views, w.blog_count) for w in want]
    # A new query (no cursor) sees the new views.
    fresh = page(client, {**variables, "first": 10})
    assert rows(fresh)[0] == ("b3", "Three", 10, 1)


def test_a_cursor_from_another_query_is_refused(client: TestClient) -> None:
    """A cursor names its query (grouping, granularity, range as given, zone, filter); the page size may change."""
    cursor = page(client, base())["pageInfo"]["endCursor"]
    assert cursor is not None
    assert rows(page(client, base(after=cursor, first=5))) == [("b2", "Two", 3, 1), ("b3", "Three", 1, 1)]
    for other in [base(g="AUTHOR"), base(gr="MONTH"), base(r={"start": "2025-01-02"}), base(r={}),
                  base(r={"start": "2025-01-01", "end": "2025-02-01"}), base(tz="Asia/Kolkata"),
                  base(f={"blog": {"in": ["b2", "b3"]}}), base(f={"not": {"country": {"eq": "ET"}}})]:
        body = ask(client, {**other, "after": cursor})
        errors = body.get("errors")
        assert errors and errors[0]["extensions"]["code"] == "BAD_USER_INPUT", (other, body)
        assert "cursor" in errors[0]["message"]
    # The same filter written with its values in another order is the same query.
    f1, f2 = {"blog": {"in": ["b1", "b2", "b3"]}}, {"blog": {"in": ["b3", "b2", "b1"]}}
    cursor = page(client, base(f=f1))["pageInfo"]["endCursor"]
    assert rows(page(client, base(f=f2, after=cursor))) == [("b2", "Two", 3, 1)]
