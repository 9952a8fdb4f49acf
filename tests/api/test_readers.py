"""Readers (CONTRACT 3, "Readers"; issue 12) beyond the property test: retention, rebuild after the upgrade,
questions that must not read a set, audit of reader sets, export, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import re
from collections.abc import Iterator
from typing import Any

import oracle as O
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text
from starlette.testclient import TestClient
from test_query_properties import load, reset

from analytics_gql import rollup
from analytics_gql.api.app import create_app
from analytics_gql.domain.calendar import to_us
from analytics_gql.settings import Settings
from analytics_gql.storage import reader_sets
from analytics_gql.storage.engine import Database

BLOGS = [O.Blog(f"b{i}", f"Blog {i}", "a0" if i < 2 else "a1", ["US", "IN", None, "GB"][i],
                O.us(dt.datetime(2023, 12, 1, tzinfo=O.UTC))) for i in range(4)]
AUTHORS = [O.Author("a0", "Ann", "US"), O.Author("a1", "Bo", None)]
LO = O.us(dt.datetime(2024, 1, 1, tzinfo=O.UTC))
HI = O.us(dt.datetime(2025, 7, 1, tzinfo=O.UTC))
TOP = """query($r: TimeRange, $o: TopOrder, $d: Dimension!) {
  top(dimension: $d, range: $r, limit: 10, orderBy: $o, timeZone: "UTC") {
    nodes { key views readers } totalViews totalReaders } }"""
TOP_VIEWS = """query($r: TimeRange) { top(dimension: BLOG, range: $r, timeZone: "UTC") { nodes { key views } } }"""
BLOG_VIEWS = """query($r: TimeRange) {
  blogViews(groupBy: COUNTRY, granularity: MONTH, range: $r, timeZone: "UTC", first: 1000) {
    nodes { key periodStart views readers } } }"""
PERFORMANCE = """query($r: TimeRange!) {
  performance(granularity: DAY, range: $r, timeZone: "UTC") { points { periodStart views readers readersGrowth } } }"""


SETS = re.compile(r"\breaders_(day|week|month|year)_|\bviewers\b")  # a reader table or the dictionary


def views() -> list[O.View]:
    r = random.Random(12)
    pool = [f"reader-{i}" for i in range(150)] + ["Reader-1", "réader"]
    return [O.View(f"b{r.randrange(4)}", r.choice(["US", "KE", None]), r.randrange(LO, HI),
                   r.choice([*pool[:20], *pool, None])) for _ in range(3000)]


@pytest.fixture
def loaded(db: Database) -> Iterator[tuple[Database, O.Data]]:
    reset(db)
    data = O.Data({a.id: a for a in AUTHORS}, {b.id: b for b in BLOGS}, views())
    load(db, "authors", [{"id": a.id, "name": a.name, **({"country": a.country} if a.country else {})}
                         for a in AUTHORS])
    load(db, "blogs", [{"id": b.id, "title": b.title, "authorId": b.author, "createdAt": O.utc(b.created_at)
                        .isoformat(), **({"country": b.country} if b.country else {})} for b in BLOGS])
    load(db, "views", [{"blogId": v.blog, "viewedAt": O.utc(v.viewed_at).isoformat(),
                        **({"viewerCountry": v.viewer_country} if v.viewer_country else {}),
                        **({"viewerId": v.viewer} if v.viewer else {})} for v in data.views])
    yield db, data


def ask(client: TestClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = client.post("/graphql", json={"query": query, "variables": variables}).json()
    assert not body.get("errors"), body
    return body["data"]  # type: ignore[no-any-return]


def refused(client: TestClient, query: str, variables: dict[str, Any]) -> str:
    body = client.post("/graphql", json={"query": query, "variables": variables}).json()
    assert body.get("errors") and body["data"] is None, body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], body
    return str(body["errors"][0]["message"])


def iso(y: int, m: int, d: int = 1) -> str:
    return dt.datetime(y, m, d, tzinfo=dt.UTC).isoformat()


def want_top(data: O.Data, a: int, b: int) -> dict[str, Any]:
    rows = O.top_by_readers(data, dimension="BLOG", start=a, end=b, f=None, limit=10)
    return {"nodes": [{"key": k, "views": v, "readers": n} for k, v, n in rows],
            "totalViews": sum(v for _k, v, _n in rows), "totalReaders": O.readers(data, None, a, b)}


def test_after_compaction_readers_are_exact_where_kept_grains_answer_and_refused_elsewhere(
        loaded: tuple[Database, O.Data]) -> None:
    """raw=60d compacts raw events before 2025-05-02: whole years (year x blog sets), whole months (month x blog
    sets) and days (day totals) are still exact; a blog question from mid-March 2024 needs raw events the
    reader sets do not replace (blog sets are kept per month), so it is refused with the retention error, while
    its view counts are still answered (day x blog counts)."""
    db, data = loaded
    settings = Settings(database_url=db.settings.db_url, timezone="UTC", retention="raw=60d")
    rollup.catch_up(db, settings, progress=False, quiet=True)
    report = rollup.compact(db, settings, now_us=to_us(dt.datetime(2025, 7, 1, tzinfo=dt.UTC)))
    assert report.deleted["raw"] > 2000
    with TestClient(create_app(settings, db)) as client:
        year = {"start": iso(2024, 1), "end": iso(2025, 1)}
        got = ask(client, TOP, {"r": year, "o": "READERS", "d": "BLOG"})["top"]
        assert got == want_top(data, LO, O.us(dt.datetime(2025, 1, 1, tzinfo=O.UTC)))
        months = {"start": iso(2024, 3), "end": iso(2024, 9)}
        nodes = ask(client, BLOG_VIEWS, {"r": months})["blogViews"]["nodes"]
        want = O.blog_views(data, group_by="COUNTRY", granularity="MONTH", start=O.parse_time(months["start"], "UTC"),
                            end=O.parse_time(months["end"], "UTC"), zone="UTC", f=None)
        month_end = {p.start: p.end for p in O.periods("MONTH", O.parse_time(months["start"], "UTC"),
                                                        O.parse_time(months["end"], "UTC"), "UTC")}
        assert [(n["key"], O.parse_output_instant(n["periodStart"]), n["views"], n["readers"]) for n in nodes] == [
            (w.key, w.period_start, w.views,
             O.readers(data, None, w.period_start, month_end[w.period_start], "COUNTRY", w.key))
            for w in want if w.period_start is not None]
        days = {"start": iso(2024, 3, 3), "end": iso(2024, 3, 9)}
        points = ask(client, PERFORMANCE, {"r": days})["performance"]["points"]
        starts = [O.parse_output_instant(p["periodStart"]) for p in points]
        assert [p["readers"] for p in points] == [O.readers(data, None, s, s + O.DAY) for s in starts]
        mid = {"start": iso(2024, 3, 10), "end": iso(2024, 4, 1)}
        assert "compacted" in refused(client, TOP, {"r": mid, "o": "VIEWS", "d": "BLOG"})
        counted = ask(client, TOP_VIEWS, {"r": mid})["top"]["nodes"]
        assert sum(n["views"] for n in counted) == sum(
            1 for v in data.views if O.parse_time(mid["start"], "UTC") <= v.viewed_at < O.parse_time(mid["end"], "UTC"))


def test_readers_refused_until_the_rebuild_after_upgrading(loaded: tuple[Database, O.Data]) -> None:
    """Migration 0006 records the watermark at upgrade in rollup_state.readers_from: events folded before have no
    sets, so readers are refused (naming `rollup --rebuild`) while view counts are answered; the rebuild makes
    every number exact."""
    db, data = loaded
    settings = Settings(database_url=db.settings.db_url, timezone="UTC")
    rollup.catch_up(db, settings, progress=False, quiet=True)
    with db.write() as conn:  # as the upgrade leaves a database whose events were folded before it
        conn.execute(text("UPDATE rollup_state SET readers_from = watermark"))
        for (_g, _s), t in reader_sets.reader_tables.items():
            conn.execute(t.delete())
    r = {"start": iso(2024, 2), "end": iso(2025, 2)}
    with TestClient(create_app(settings, db)) as client:
        assert "rollup --rebuild" in refused(client, TOP, {"r": r, "o": "VIEWS", "d": "BLOG"})
        assert ask(client, TOP_VIEWS, {"r": r})["top"]["nodes"]
        rollup.rebuild(db, settings, progress=False)
        got = ask(client, TOP, {"r": r, "o": "READERS", "d": "BLOG"})["top"]
        assert got == want_top(data, O.parse_time(r["start"], "UTC"), O.parse_time(r["end"], "UTC"))


def test_questions_without_readers_read_no_set(loaded: tuple[Database, O.Data]) -> None:
    """A question that selects no reader field sends no statement naming a reader table or the dictionary; one
    that selects `readers` does."""
    db, _data = loaded
    settings = Settings(database_url=db.settings.db_url, timezone="UTC")
    rollup.catch_up(db, settings, progress=False, quiet=True)
    statements: list[str] = []

    def log(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sa_event.listen(db.engine, "before_cursor_execute", log)
    try:
        with TestClient(create_app(settings, db)) as client:
            r = {"start": iso(2024, 2, 3), "end": iso(2025, 2, 5)}
            ask(client, TOP_VIEWS, {"r": r})
            ask(client, "query($r: TimeRange!) { performance(granularity: DAY, range: $r) { points { views } } }",
                {"r": r})
            assert statements and not [s for s in statements if SETS.search(s)]
            ask(client, TOP, {"r": r, "o": "VIEWS", "d": "BLOG"})
            assert [s for s in statements if SETS.search(s)]
    finally:
        sa_event.remove(db.engine, "before_cursor_execute", log)


def test_audit_repairs_a_corrupted_reader_set(loaded: tuple[Database, O.Data]) -> None:
    """Every reader cell overwritten with another's set is found and repaired by the audit; answers are exact
    again afterwards."""
    db, data = loaded
    settings = Settings(database_url=db.settings.db_url, timezone="UTC")
    rollup.catch_up(db, settings, progress=False, quiet=True)
    assert rollup.audit(db, settings, seed=1).ok
    with db.write() as conn:
        conn.execute(text("UPDATE readers_year_by_blog SET readers = (SELECT readers FROM readers_day_total "
                          "ORDER BY bucket LIMIT 1)"))
    report = rollup.audit(db, settings, seed=1)
    assert not report.ok and report.repaired
    assert all(d[0] == "year/by_blog readers" for d in report.drift)
    assert rollup.audit(db, settings, seed=1).ok
    with TestClient(create_app(settings, db)) as client:
        r = {"start": iso(2024, 1), "end": iso(2025, 1)}
        got = ask(client, TOP, {"r": r, "o": "READERS", "d": "BLOG"})["top"]
        assert got == want_top(data, LO, O.parse_time(r["end"], "UTC"))


def test_export_writes_reader_columns_as_graphql_answers(loaded: tuple[Database, O.Data]) -> None:
    """POST /export of a query selecting readers: the CSV rows are the GraphQL nodes."""
    db, _data = loaded
    settings = Settings(database_url=db.settings.db_url, timezone="UTC")
    rollup.catch_up(db, settings, progress=False, quiet=True)
    variables = {"r": {"start": iso(2024, 2, 3), "end": iso(2025, 2, 5)}, "o": "READERS", "d": "VIEWER_COUNTRY"}
    with TestClient(create_app(settings, db)) as client:
        nodes = ask(client, TOP, variables)["top"]["nodes"]
        body = client.post("/export", json={"query": TOP, "variables": variables})
        assert body.status_code == 200, body.text
        rows = list(csv.reader(io.StringIO(body.text)))
    assert rows[0] == ["key", "views", "readers"]
    assert rows[1:] == [[n["key"], str(n["views"]), str(n["readers"])] for n in nodes]
    assert len(nodes) == 3 and all(n["readers"] > 0 for n in nodes)
