"""The fast execution context (api/execution.py) answers byte for byte what graphql-core's own completion answers.

Two apps over one database, one built with the fast context and one with Strawberry's default: every document
below (the four queries, fragments, aliases, `__typename`, `@include`/`@skip`, variables) must give the same HTTP
status and the same response bytes from both, and a leaf that cannot be serialised must give the same errors,
paths and partial data. Exact values are covered by the oracle property tests; these pin the equivalence, and
check that the fast path really ran (or really did not, when a middleware needs every field).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient
from strawberry.extensions import SchemaExtension

from analytics_gql.api import execution
from analytics_gql.api import types as T
from analytics_gql.api.app import create_app
from analytics_gql.api.schema import build_schema
from analytics_gql.loading import ingest_records
from analytics_gql.rollup import catch_up
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database

H = 3_600_000_000
T0 = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000

META = "meta { watermark sources { source rows } }"  # asOf is "now": it differs between two requests
PERFORMANCE = """query($g: Granularity!, $r: TimeRange!, $tz: String) {
  performance(granularity: $g, range: $r, timeZone: $tz) {
    points { periodStart periodEnd label views blogsCreated growth partial }
    __typename
    """ + META + """ } }"""
DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    (PERFORMANCE, {}),
    (PERFORMANCE, {"g": "WEEK", "r": {"start": "2025-01-01T06:30:00", "end": "2025-03-10"}, "tz": "America/New_York"}),
    ("""query($r: TimeRange!, $yes: Boolean!, $no: Boolean!) {
      series: performance(granularity: DAY, range: $r) {
        points {
          __typename
          start: periodStart
          v: views
          views
          again: views
          ...Point
          ... on PerformancePoint { label partial @skip(if: $yes) growth @include(if: $yes) }
          blogsCreated @include(if: $no)
          periodEnd @skip(if: $no)
        }
        meta { ...Meta }
      } }
      fragment Point on PerformancePoint { views periodEnd growth __typename }
      fragment Meta on QueryMeta { __typename watermark sources { __typename source rows } }""", {}),
    ("""query($r: TimeRange!, $yes: Boolean!, $no: Boolean!) {
      performance(granularity: DAY, range: $r) { points @include(if: $no) { views } meta @skip(if: $yes) { watermark } }
      empty: performance(granularity: MONTH, range: $r) { points { views @skip(if: $yes) label @include(if: $no) } }
    }""", {}),
    ("""query($r: TimeRange, $f: ViewFilter) {
      blogViews(groupBy: COUNTRY, granularity: MONTH, range: $r, filter: $f, first: 1000) {
        totalCount pageInfo { hasNextPage endCursor }
        nodes { key label periodStart periodLabel blogCount views __typename }
        """ + META + """ } }""", {"f": {"or": [{"country": {"in": ["ET"]}}, {"viewerCountry": {"eq": "KE"}}]}}),
    ("""query($r: TimeRange) {
      blogViews(groupBy: BLOG, range: $r, first: 2) {
        totalCount pageInfo { hasNextPage endCursor } nodes { ...Row } }
      next: blogViews(groupBy: BLOG, range: $r, first: 2, after: "YnYxOjI") { nodes { ...Row } } }
      fragment Row on BlogViewsRow { key label periodStart periodLabel blogCount views }""", {}),
    ("""query($r: TimeRange, $d: Dimension!) {
      top(dimension: $d, range: $r, limit: 3) {
        totalViews otherViews nodes { rank key label views blogCount share } """ + META + """ }
      byCountry: top(dimension: COUNTRY, range: $r) { nodes { key share views } } }""", {"d": "AUTHOR"}),
    ("""{ rollupStatus { watermark pendingEvents lastRunAt
        grains { grain rows oldest newest retainedFor __typename } } }""", {}),
    ("{ __typename }", {}),
]
BASE_VARIABLES = {"g": "DAY", "r": {"start": "2025-01-01", "end": "2025-04-01"}, "tz": "UTC", "yes": True,
                  "no": False}


def load(db: Database) -> None:
    """Three blogs, views over a quarter (folded into the rollups) and a live tail above the watermark."""
    def ok(kind: str, records: list[dict[str, Any]]) -> None:
        r = ingest_records(db, kind, records)  # type: ignore[arg-type]
        assert r.rejected == 0, r.errors

    ok("authors", [{"id": "a1", "name": "Abebe", "country": "ET"}, {"id": "a2", "name": "Bo"}])
    created = dt.datetime(2025, 1, 3, tzinfo=dt.UTC).isoformat()
    ok("blogs", [{"id": "b1", "title": "One", "authorId": "a1", "country": "ET", "createdAt": created},
                 {"id": "b2", "title": "Two", "authorId": "a1", "country": "KE", "createdAt": created},
                 {"id": "b3", "title": "Three", "authorId": "a2", "createdAt": created}])

    def views(blog: str, country: str | None, first: int, n: int, step: int) -> list[dict[str, Any]]:
        return [{"blogId": blog, "viewedAt": dt.datetime.fromtimestamp((first + i * step) / 1e6, dt.UTC).isoformat(),
                 **({"viewerCountry": country} if country else {})} for i in range(n)]

    ok("views", views("b1", "US", T0 + 1_234_567, 300, 7 * H + 17_000_000)
       + views("b2", None, T0 + 5 * 24 * H, 200, 11 * H))
    catch_up(db, db.settings, progress=False, quiet=True)
    ok("views", views("b3", "KE", T0 + 40 * 24 * H, 150, 13 * H + 1))  # the tail


@dataclass
class Pair:
    fast: TestClient
    default: TestClient

    def both(self, query: str, variables: dict[str, Any]) -> tuple[Any, Any]:
        body = {"query": query, "variables": {**BASE_VARIABLES, **variables}}
        headers = {"X-Request-Id": "same-request-id"}  # masked errors carry it
        a = self.fast.post("/graphql", json=body, headers=headers)
        b = self.default.post("/graphql", json=body, headers=headers)
        return a, b


@pytest.fixture
def pair(db: Database) -> Iterator[Pair]:
    load(db)
    yield from _pair(db)


def _pair(db: Database, *extensions: type[SchemaExtension]) -> Iterator[Pair]:
    s = Settings(database_url=db.settings.db_url, timezone="UTC")
    fast_schema, default_schema = build_schema(s, extensions=extensions), build_schema(s, fast=False,
                                                                                      extensions=extensions)
    assert fast_schema.execution_context_class is execution.FastExecutionContext
    assert default_schema.execution_context_class is not execution.FastExecutionContext
    with TestClient(create_app(s, db, schema=fast_schema)) as fast, \
            TestClient(create_app(s, db, schema=default_schema)) as default:
        yield Pair(fast, default)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts objects the fast path built (1) and left to graphql-core (0)."""
    seen: list[int] = []
    original = execution.FastExecutionContext._build

    def counting(plan: execution.Plan, typename: str, obj: Any,
                 memo: dict[tuple[str, int], Any] | None = None) -> dict[str, Any] | None:
        out = original(plan, typename, obj, memo)
        seen.append(int(out is not None))
        return out

    monkeypatch.setattr(execution.FastExecutionContext, "_build", staticmethod(counting))
    return seen


def test_same_bytes_as_graphql_core(pair: Pair, built: list[int]) -> None:
    for query, variables in DOCUMENTS:
        a, b = pair.both(query, variables)
        assert (a.status_code, a.content) == (b.status_code, b.content), query
        assert a.status_code == 200 and "errors" not in a.json(), a.text
    assert built and 0 not in built  # the fast path built every object itself; it never had to fall back here
    # A few exact bytes, so that two identically broken paths cannot pass together.
    a, _ = pair.both(DOCUMENTS[2][0], {"r": {"start": "2025-01-05", "end": "2025-01-07"}})
    assert a.content == orjson.dumps({"data": {"series": {
        "points": [
            # b1 every 7 h 17 s from Jan 1 00:00:01; b2 every 11 h from Jan 6 00:00; Jan 4 had 3 views
            {"__typename": "PerformancePoint", "start": "2025-01-05T00:00:00+00:00", "v": 4, "views": 4, "again": 4,
             "periodEnd": "2025-01-06T00:00:00+00:00", "growth": 33.33, "label": "2025-01-05 (0 blogs)"},
            {"__typename": "PerformancePoint", "start": "2025-01-06T00:00:00+00:00", "v": 6, "views": 6,
             "again": 6, "periodEnd": "2025-01-07T00:00:00+00:00", "growth": 50.0, "label": "2025-01-06 (0 blogs)"}],
        "meta": {"__typename": "QueryMeta", "watermark": a.json()["data"]["series"]["meta"]["watermark"],
                 "sources": a.json()["data"]["series"]["meta"]["sources"]}}}})


def _patched_points(monkeypatch: pytest.MonkeyPatch, change: Callable[[T.PerformancePoint], None]) -> None:
    original = T.PerformanceResult.from_domain

    def patched(p: Any) -> T.PerformanceResult:
        out = original(p)
        change(out.points[3])
        return out

    monkeypatch.setattr(T.PerformanceResult, "from_domain", staticmethod(patched))


def _internal(*path: str | int) -> dict[str, Any]:
    """What the client sees of our own failure (ErrorPolicy masks it, with the request id)."""
    return {"message": "Internal server error", "path": list(path),
            "extensions": {"code": "INTERNAL", "requestId": "same-request-id"}}


LEAF_ERRORS: list[tuple[str, Any, dict[str, Any]]] = [
    # a nullable leaf that cannot be serialised: null there, the rest of the data kept
    ("growth", "x", _internal("performance", "points", 3, "growth")),
    # non-null leaves: the error propagates to the nearest nullable parent (here: data is null)
    ("views", 2**40, _internal("performance", "points", 3, "views")),  # Int is 32-bit
    ("views", None, _internal("performance", "points", 3, "views")),
    ("label", b"bytes", _internal("performance", "points", 3, "label")),  # not a plain value: never tried fast
]


@pytest.mark.parametrize(("attribute", "value", "error"), LEAF_ERRORS, ids=[f"{a}={v!r}" for a, v, _ in LEAF_ERRORS])
def test_leaf_errors_as_graphql_core(pair: Pair, built: list[int], monkeypatch: pytest.MonkeyPatch,
                                     attribute: str, value: Any, error: dict[str, Any]) -> None:
    _patched_points(monkeypatch, lambda point: setattr(point, attribute, value))
    a, b = pair.both(PERFORMANCE, {})
    assert (a.status_code, a.content) == (b.status_code, b.content)
    body = a.json()
    assert [{k: e[k] for k in ("message", "path", "extensions")} for e in body["errors"]] == [error]
    if attribute == "growth":
        assert body["data"]["performance"]["points"][3]["growth"] is None
        assert body["data"]["performance"]["points"][2:5] == [
            {"periodStart": "2025-01-03T00:00:00+00:00", "periodEnd": "2025-01-04T00:00:00+00:00",
             "label": "2025-01-03 (3 blogs)", "views": 4, "blogsCreated": 3, "growth": 33.33, "partial": False},
            {"periodStart": "2025-01-04T00:00:00+00:00", "periodEnd": "2025-01-05T00:00:00+00:00",
             "label": "2025-01-04 (0 blogs)", "views": 3, "blogsCreated": 0, "growth": None, "partial": False},
            {"periodStart": "2025-01-05T00:00:00+00:00", "periodEnd": "2025-01-06T00:00:00+00:00",
             "label": "2025-01-05 (0 blogs)", "views": 4, "blogsCreated": 0, "growth": 33.33, "partial": False}]
    else:
        assert body["data"] is None
    assert 0 in built  # the fast path met the bad value and handed the object back to graphql-core


COERCED_LEAVES: list[tuple[str, Any, Any]] = [
    # values a built-in scalar returns unchanged (the fast path skips its serialiser) and values it converts
    ("views", 2**31 - 1, 2**31 - 1), ("views", -(2**31), -(2**31)), ("views", True, 1), ("views", 7.0, 7),
    ("label", "plain", "plain"), ("label", 7, "7"), ("label", True, "true"), ("blogsCreated", False, 0),
]


@pytest.mark.parametrize(("attribute", "value", "shown"), COERCED_LEAVES,
                         ids=[f"{a}={v!r}" for a, v, _ in COERCED_LEAVES])
def test_coerced_leaves_as_graphql_core(pair: Pair, monkeypatch: pytest.MonkeyPatch, attribute: str, value: Any,
                                        shown: Any) -> None:
    _patched_points(monkeypatch, lambda point: setattr(point, attribute, value))
    a, b = pair.both(PERFORMANCE, {})
    assert (a.status_code, a.content) == (b.status_code, b.content)
    assert "errors" not in a.json()
    assert a.json()["data"]["performance"]["points"][3][attribute] == shown


class Shout(SchemaExtension):
    """A middleware that changes nested fields (not root-only): the fast path must not skip it."""

    def resolve(self, _next: Callable[..., Any], root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        result = _next(root, info, *args, **kwargs)
        return result.upper() if isinstance(result, str) and info.path.prev is not None else result


def test_middleware_on_nested_fields_disables_the_fast_path(db: Database, built: list[int]) -> None:
    load(db)
    for pair in _pair(db, Shout):
        a, b = pair.both(PERFORMANCE, {"r": {"start": "2025-01-05", "end": "2025-01-06"}})
        assert (a.status_code, a.content) == (b.status_code, b.content)
        assert a.json()["data"]["performance"]["points"][0]["label"] == "2025-01-05 (0 BLOGS)"
        assert a.json()["data"]["performance"]["points"][0]["periodStart"] == "2025-01-05T00:00:00+00:00"
    assert built == []


SHARED_PAGE = """query($r: TimeRange) {
  blogViews(groupBy: COUNTRY, granularity: MONTH, range: $r, first: 1000) {
    totalCount nodes { key label periodStart periodLabel blogCount views } } }"""


def test_a_repeated_page_reuses_its_output_and_follows_new_data(db: Database, built: list[int]) -> None:
    """With nothing above the watermark, the same page is served from the part's page list: its report rows, nodes
    and output objects are memoised on identity (domain/memo.py). Repeats build nothing and stay byte-identical to
    graphql-core's context; new events (a tail) give new rows, objects and the new answer."""
    load(db)
    catch_up(db, db.settings, progress=False, quiet=True)  # the tail folded in: warm pages come from the part
    clients = _pair(db)
    pair = next(clients)
    try:
        _repeated_page(db, pair, built)
    finally:
        clients.close()


def _repeated_page(db: Database, pair: Pair, built: list[int]) -> None:
    first = pair.both(SHARED_PAGE, {})
    assert first[0].content == first[1].content and b'"errors"' not in first[0].content
    made = len(built)
    assert made > 0
    again = pair.both(SHARED_PAGE, {})
    assert again[0].content == again[1].content == first[0].content
    assert len(built) == made  # the fast schema built no object the second time
    ingest_records(db, "views", [{"blogId": "b2", "viewedAt": "2025-02-10T10:00:00+00:00"}])  # type: ignore[list-item]
    changed = pair.both(SHARED_PAGE, {})
    assert changed[0].content == changed[1].content != first[0].content
    assert len(built) > made
