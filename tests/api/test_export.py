"""POST /export and `analytics-gql export` (CONTRACT 3, "Export"), on both databases.

The CSV is parsed back and compared with the GraphQL answer (every page of a 2,500-row blogViews, walked with
pageInfo) and with the plain-Python oracle over the raw events; columns come in selection order under their
response keys; errors are JSON with the usual codes before any CSV; a 200,000-row export streams with memory
bounded by a page, not by the file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import oracle as O
import orjson
import pytest
from starlette.testclient import TestClient

from analytics_gql.api.app import create_app
from analytics_gql.loading import ingest_records
from analytics_gql.rollup import catch_up
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database

pytestmark = pytest.mark.citus  # also on a Citus cluster when ANALYTICS_TEST_CITUS_URL is set


T0 = O.us(dt.datetime(2025, 3, 1, tzinfo=O.UTC))
N_BLOGS, N_DAYS = 50, 50  # every blog has views on every day: 2,500 (day, blog) rows
COUNTRIES = ["US", "ET", "KE", None]


def _views_of(b: int, d: int) -> int:
    return (b * 7 + d * 3) % 5 + 1


def dataset() -> O.Data:
    authors = {"a1": O.Author("a1", "Abebe", "ET"), "a2": O.Author("a2", "Chloé, \"the\" editor", None)}
    blogs = {f"b{b:02d}": O.Blog(f"b{b:02d}", f"Blog {b}, vol. \"{b % 3}\"" if b % 10 == 0 else f"Blog {b}",
                                 "a1" if b % 2 else "a2", "KE" if b % 3 else None, T0 - O.DAY)
             for b in range(N_BLOGS)}
    views = [O.View(f"b{b:02d}", COUNTRIES[(b + d + i) % 4], T0 + d * O.DAY + (b * 61 + i * 3_607) * 1_000_000)
             for b in range(N_BLOGS) for d in range(N_DAYS) for i in range(_views_of(b, d))]
    return O.Data(authors, blogs, views)


def load(db: Database, data: O.Data) -> None:
    def ok(kind: str, records: list[dict[str, Any]]) -> None:
        r = ingest_records(db, kind, records)  # type: ignore[arg-type]
        assert r.rejected == 0, r.errors

    ok("authors", [{"id": a.id, "name": a.name, **({"country": a.country} if a.country else {})}
                   for a in data.authors.values()])
    ok("blogs", [{"id": b.id, "title": b.title, "authorId": b.author, "createdAt": O.utc(b.created_at).isoformat(),
                  **({"country": b.country} if b.country else {})} for b in data.blogs.values()])
    ok("views", [{"blogId": v.blog, "viewedAt": O.utc(v.viewed_at).isoformat(),
                  **({"viewerCountry": v.viewer_country} if v.viewer_country else {})} for v in data.views])
    catch_up(db, Settings(database_url=db.settings.db_url), progress=False, quiet=True)


@pytest.fixture
def data() -> O.Data:
    return dataset()


@pytest.fixture
def client(db: Database, data: O.Data) -> Iterator[TestClient]:
    load(db, data)
    with TestClient(create_app(Settings(database_url=db.settings.db_url), db)) as c:
        yield c


RANGE = {"start": O.utc(T0).isoformat(), "end": O.utc(T0 + N_DAYS * O.DAY).isoformat()}
BLOG_VIEWS = """query Days($r: TimeRange!, $first: Int, $after: String) {
  blogViews(groupBy: BLOG, granularity: DAY, range: $r, timeZone: "UTC", first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    nodes { periodStart day: periodLabel key label views blogCount } } }"""


def parse_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header, *lines = list(reader)
    return header, [dict(zip(header, line, strict=True)) for line in lines]


def as_text(value: Any) -> str:
    """How a JSON value reads back from the CSV."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def graphql_pages(client: TestClient, query: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of blogViews, walking pageInfo with pages of 1,000 (the API's largest)."""
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        r = client.post("/graphql", json={"query": query, "variables": {**variables, "first": 1000,
                                                                          "after": after}})
        body = r.json()
        assert r.status_code == 200 and not body.get("errors"), body
        page = body["data"]["blogViews"]
        nodes += page["nodes"]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


def test_blog_views_exports_every_page_equal_to_the_graphql_pages_and_the_oracle(
        client: TestClient, data: O.Data) -> None:
    r = client.post("/export", json={"query": BLOG_VIEWS, "variables": {"r": RANGE, "first": 7}})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="blogViews.csv"'
    assert r.text.endswith("\r\n") and "\r\n" in r.text  # RFC 4180 line ends
    header, rows = parse_csv(r.text)
    assert header == ["periodStart", "day", "key", "label", "views", "blogCount"]  # selection order, aliases
    assert len(rows) == N_BLOGS * N_DAYS == 2_500  # every page, whatever `first` said

    nodes = graphql_pages(client, BLOG_VIEWS, {"r": RANGE})
    assert rows == [{k: as_text(n[src]) for k, src in
                     [("periodStart", "periodStart"), ("day", "day"), ("key", "key"), ("label", "label"),
                      ("views", "views"), ("blogCount", "blogCount")]} for n in nodes]

    expected = O.blog_views(data, group_by="BLOG", granularity="DAY", start=T0, end=T0 + N_DAYS * O.DAY,
                            zone="UTC", f=None)
    assert [(O.parse_output_instant(x["periodStart"]), x["day"], x["key"], x["label"], int(x["views"]),
             int(x["blogCount"])) for x in rows] == \
        [(e.period_start, e.period_label, e.key, e.label, e.views, e.blog_count) for e in expected]
    assert sum(int(x["views"]) for x in rows) == len(data.views)
    assert any('"' in x["label"] and "," in x["label"] for x in rows)  # quoting survived the round trip


def test_ndjson_format_gives_the_same_rows(client: TestClient) -> None:
    csv_rows = parse_csv(client.post("/export", json={"query": BLOG_VIEWS, "variables": {"r": RANGE}}).text)[1]
    r = client.post("/export?format=ndjson", json={"query": BLOG_VIEWS, "variables": {"r": RANGE}})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(x) for x in r.content.splitlines()]
    assert [list(x) for x in lines[:1]] == [["periodStart", "day", "key", "label", "views", "blogCount"]]
    assert [{k: as_text(v) for k, v in x.items()} for x in lines] == csv_rows
    assert isinstance(lines[0]["views"], int)


def test_top_and_performance_export_their_rows_and_points(client: TestClient, data: O.Data) -> None:
    span = f'{{start: "{RANGE["start"]}", end: "{RANGE["end"]}"}}'
    top = f"{{ top(dimension: COUNTRY, limit: 3, range: {span}) {{ totalViews nodes {{ views name: label key }} }} }}"
    want = client.post("/graphql", json={"query": top}).json()["data"]["top"]["nodes"]
    header, rows = parse_csv(client.post("/export", json={"query": top}).text)
    assert header == ["views", "name", "key"]
    assert rows == [{k: as_text(n[k]) for k in header} for n in want]
    oracle = O.top(data, dimension="COUNTRY", start=T0, end=T0 + N_DAYS * O.DAY, f=None, limit=3)
    assert [(x["key"], int(x["views"])) for x in rows] == [(o.key, o.views) for o in oracle.rows]

    perf = """query P($r: TimeRange!) { series: performance(granularity: WEEK, range: $r, timeZone: "UTC") {
      points { ...P partial } meta { asOf } } }
      fragment P on PerformancePoint { label views growth @skip(if: false) blogsCreated @include(if: $created) }"""
    perf = perf.replace("query P($r: TimeRange!)", "query P($r: TimeRange!, $created: Boolean = true)")
    variables = {"r": RANGE, "created": False}
    want = client.post("/graphql", json={"query": perf, "variables": variables}).json()["data"]["series"]
    header, rows = parse_csv(client.post("/export", json={"query": perf, "variables": variables}).text)
    assert header == ["label", "views", "growth", "partial"]  # fragments expanded, @include(if: false) left out
    assert rows == [{k: as_text(p[k]) for k in header} for p in want["points"]]
    points = O.performance(data, granularity="WEEK", start=T0, end=T0 + N_DAYS * O.DAY, zone="UTC", f=None)
    assert [int(x["views"]) for x in rows] == [p.views for p in points]
    assert rows[0]["growth"] == ""  # a null growth is an empty cell


def test_cli_export_writes_the_same_csv_and_ndjson(client: TestClient, db: Database, tmp_path: Path) -> None:
    want = client.post("/export", json={"query": BLOG_VIEWS, "variables": {"r": RANGE}}).content
    qfile = tmp_path / "days.graphql"
    qfile.write_text(BLOG_VIEWS)
    env = {"ANALYTICS_DATABASE_URL": db.settings.db_url, "PATH": "/usr/bin:/bin"}
    out = tmp_path / "days.csv"
    p = subprocess.run([sys.executable, "-m", "analytics_gql.cli", "export", str(qfile), "--variables",
                        orjson.dumps({"r": RANGE, "first": 3}).decode(), "-o", str(out)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == want
    assert p.stderr.strip() == f"2500 rows written to {out}"
    p = subprocess.run([sys.executable, "-m", "analytics_gql.cli", "export", str(qfile), "--format", "ndjson",
                        "--variables", orjson.dumps({"r": RANGE}).decode()],
                       env=env, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [orjson.loads(x) for x in p.stdout.splitlines()]
    assert [{k: as_text(v) for k, v in x.items()} for x in lines] == parse_csv(want.decode())[1]

    bad = tmp_path / "bad.graphql"
    bad.write_text("{ top(dimension: BLOG, limit: 5000) { nodes { key } } }")
    p = subprocess.run([sys.executable, "-m", "analytics_gql.cli", "export", str(bad), "-o", str(tmp_path / "x")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr.startswith("error: BAD_USER_INPUT: limit must be between 1 and 1000")
    assert not (tmp_path / "x").exists()  # no file that looks like an (empty) export


@pytest.mark.parametrize(("body", "status", "code", "says"), [
    ({"query": "{ top(dimension: BLOG) { nodes { key } } rollupStatus { watermark } }"}, 400, "BAD_USER_INPUT",
     "exactly one root field"),
    ({"query": "{ rollupStatus { watermark } }"}, 400, "BAD_USER_INPUT", "exactly one root field"),
    ({"query": "mutation { refreshRollups { enqueued } }"}, 400, "BAD_USER_INPUT", "queries only"),
    ({"query": "{ top(dimension: BLOG) { totalViews } }"}, 400, "BAD_USER_INPUT", "nodes { ... }"),
    ({"query": "{ top(dimension: BLOG) { nodes { key } n2: nodes { label } } }"}, 400, "BAD_USER_INPUT",
     "once"),
    ({"query": "{ performance(granularity: DAY, range: {start: \"2025-02-01\", end: \"2025-01-01\"}) "
               "{ points { label } } }"}, 400, "BAD_USER_INPUT", ""),
    ({"query": "{ top(dimension: BLOG, timeZone: \"Mars/Base\") { nodes { key } } }"}, 400, "BAD_USER_INPUT",
     "Mars/Base"),
    ({"query": "{ top(dimension: BLOG) { nodes { nope } } }"}, 400, "BAD_USER_INPUT", "nope"),
    ({"query": "{ top(dimension: BLOG"}, 400, "BAD_USER_INPUT", "Syntax Error"),
    ({"query": "query A { top(dimension: BLOG) { nodes { key } } } query B { top(dimension: BLOG) { nodes { key"
               " } } }"}, 400, "BAD_USER_INPUT", "exactly one operation"),
    ({"query": "query A { top(dimension: BLOG) { nodes { key } } }", "operationName": "Z"}, 400,
     "BAD_USER_INPUT", "no operation named"),
    ({"query": "query($exportAfter_: String) { blogViews(groupBy: BLOG, after: $exportAfter_) { nodes { key } } }"},
     400, "BAD_USER_INPUT", "reserved"),
    ([{"query": "{ top(dimension: BLOG) { nodes { key } } }"}], 400, "BAD_USER_INPUT", "batched"),
])
def test_errors_are_json_with_codes_before_any_csv(client: TestClient, body: Any, status: int, code: str,
                                                   says: str) -> None:
    r = client.post("/export", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    errors = r.json()["errors"]
    assert errors[0]["extensions"]["code"] == code
    assert says in errors[0]["message"]


def test_a_bogus_after_in_the_document_is_replaced_not_used(client: TestClient) -> None:
    """`after` (like `first`) in the document is the export's to set: every page from the first."""
    q = BLOG_VIEWS.replace("after: $after", 'after: "bogus"').replace(", $after: String", "")
    header, rows = parse_csv(client.post("/export", json={"query": q, "variables": {"r": RANGE}}).text)
    assert len(rows) == 2_500


def test_wrong_content_type_and_too_large(client: TestClient) -> None:
    r = client.post("/export", content=b"{}", headers={"content-type": "text/plain"})
    assert (r.status_code, r.json()["errors"][0]["extensions"]["code"]) == (415, "BAD_REQUEST")
    r = client.get("/export")
    assert r.status_code == 405


def test_keys_and_scopes(db: Database, data: O.Data) -> None:
    load(db, data)
    settings = Settings(database_url=db.settings.db_url, api_keys="r1:read;i1:ingest")
    q = {"query": "{ top(dimension: BLOG, limit: 2) { nodes { key views } } }"}
    with TestClient(create_app(settings, db)) as c:
        r = c.post("/export", json=q)
        assert (r.status_code, r.json()["errors"][0]["extensions"]["code"]) == (401, "UNAUTHENTICATED")
        r = c.post("/export", json=q, headers={"Authorization": "Bearer i1"})
        assert (r.status_code, r.json()["errors"][0]["extensions"]["code"]) == (403, "FORBIDDEN")
        r = c.post("/export", json=q, headers={"Authorization": "Bearer r1"})
        assert r.status_code == 200 and parse_csv(r.text)[0] == ["key", "views"]


def test_rate_limit_counts_an_export(db: Database, data: O.Data) -> None:
    load(db, data)
    settings = Settings(database_url=db.settings.db_url, rate_limit="1/s, burst 1")
    q = {"query": "{ top(dimension: BLOG, limit: 2) { nodes { key } } }"}
    with TestClient(create_app(settings, db)) as c:
        assert c.post("/export", json=q).status_code == 200
        r = c.post("/export", json=q)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


# ---------------------------------------------------------------- memory


async def _stream(app: Any, body: bytes, sink: Any) -> int:
    """POST /export straight through ASGI, handing each body chunk to `sink` as it is sent; the status."""
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await anyio.sleep_forever()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            sink(message.get("body", b""))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/export", "raw_path": b"/export", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    return status


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_200000_row_export_streams_with_memory_bounded_by_a_page(db: Database) -> None:
    """200 blogs x 1,000 hours, one view each: 200,000 rows. Peak memory allocated while the export runs (after
    one GraphQL page of the same question has warmed the cache) stays under a quarter of the CSV's size: rows
    are produced and sent a page at a time, never gathered."""
    blogs, hours = 200, 1_000
    t0 = T0
    assert ingest_records(db, "authors", [{"id": "a", "name": "A"}]).rejected == 0
    assert ingest_records(db, "blogs", [{"id": f"b{b:03d}", "title": f"Blog {b}", "authorId": "a",
                                         "createdAt": O.utc(t0).isoformat()} for b in range(blogs)]).rejected == 0
    for h0 in range(0, hours, 100):
        r = ingest_records(db, "views", [{"blogId": f"b{b:03d}", "viewedAt": O.utc(t0 + h * O.HOUR + b).isoformat()}
                                         for h in range(h0, h0 + 100) for b in range(blogs)])
        assert r.rejected == 0
    catch_up(db, Settings(database_url=db.settings.db_url), progress=False, quiet=True)
    query = {"query": """query($r: TimeRange!) { blogViews(groupBy: BLOG, granularity: HOUR, range: $r,
               timeZone: "UTC") { nodes { periodStart key label views } } }""",
             "variables": {"r": {"start": O.utc(t0).isoformat(), "end": O.utc(t0 + hours * O.HOUR).isoformat()}}}
    app = create_app(Settings(database_url=db.settings.db_url), db)
    with TestClient(app) as c:  # warm: the rollup part the pages are cut from is cached, as for any client
        assert c.post("/graphql", json=query).status_code == 200

    size = 0
    lines = 0
    views = 0

    def sink(chunk: bytes) -> None:
        nonlocal size, lines, views
        size += len(chunk)
        lines += chunk.count(b"\r\n")
        views += chunk.count(b",1\r\n")  # every row has one view

    tracemalloc.start()
    try:
        status = anyio.run(_stream, app, orjson.dumps(query), sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200
    assert lines == 1 + blogs * hours
    assert views == blogs * hours
    assert size > 8_000_000
    print(f"export: {size} bytes, peak traced {peak} bytes")
    assert peak < size / 4, (peak, size)
