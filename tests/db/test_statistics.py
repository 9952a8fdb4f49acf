"""Planner statistics: seed, import, rollup (and --rebuild) and compaction analyse the tables they changed (SQLite
rows in sqlite_stat1, PostgreSQL's manual analyze_count), and on PostgreSQL the read path's raw-edge and live
statements use the viewed_at index on a database that was never analysed (EXPLAIN of the statements it runs)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from conftest import pg_server
from sqlalchemy import event, text

from analytics_gql import reports
from analytics_gql.domain import filters as F
from analytics_gql.domain.calendar import Granularity
from analytics_gql.domain.queries import Dimension, PerformanceQuery, RangeSpec, TopQuery
from analytics_gql.loading import import_path, ingest_records, seed
from analytics_gql.rollup import catch_up, compact, rebuild, refresh
from analytics_gql.settings import Settings
from analytics_gql.storage import ingest
from analytics_gql.storage.engine import Database

HOUR = 3_600_000_000
DAY = 24 * HOUR


def start_counting(db: Database) -> dict[str, int]:
    """Manual analyses so far per table (PostgreSQL); on SQLite, forget every sqlite_stat1 row instead."""
    with db.write() as conn:
        if db.sqlite:
            if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
                conn.exec_driver_sql("DELETE FROM sqlite_stat1")
            return {}
        return {str(t): int(n) for t, n in conn.exec_driver_sql(
            "SELECT relname, analyze_count FROM pg_stat_user_tables")}


def analysed_since(db: Database, before: dict[str, int]) -> set[str]:
    """The tables analysed since start_counting."""
    with db.read() as conn:
        if db.sqlite:
            if not conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
                return set()
            return {str(t) for (t,) in conn.exec_driver_sql("SELECT DISTINCT tbl FROM sqlite_stat1")}
        return {str(t) for t, n in conn.exec_driver_sql("SELECT relname, analyze_count FROM pg_stat_user_tables")
                if int(n) > before.get(str(t), 0)}


def test_seed_rollup_rebuild_and_compaction_analyse_what_they_changed(db: Database) -> None:
    before = start_counting(db)
    seed(db, authors=3, blogs=6, views=3000, days=60, seed=7, progress=False)
    assert analysed_since(db, before) == {"authors", "blogs", "view_events"}
    settings = Settings(database_url=db.settings.db_url)
    before = start_counting(db)
    catch_up(db, settings, progress=False, quiet=True)
    rollups = {"views_hour_total", "views_day_by_blog", "views_day_by_country", "views_month", "views_year"}
    assert rollups | {"view_events"} <= analysed_since(db, before)
    assert not analysed_since(db, before) & {"authors", "blogs"}
    before = start_counting(db)
    catch_up(db, settings, progress=False, quiet=True)  # nothing to fold: nothing analysed
    assert analysed_since(db, before) == set()
    before = start_counting(db)
    rebuild(db, settings, progress=False)
    assert rollups <= analysed_since(db, before)
    before = start_counting(db)
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
    report = compact(db, Settings(database_url=db.settings.db_url, retention="raw=20d,hour=30d"), now_us=now)
    assert report.deleted["raw"] > 0 and report.deleted["hour"] > 0
    assert analysed_since(db, before) >= {"view_events", "views_hour_total", "views_hour_by_country"}
    assert not analysed_since(db, before) & {"views_day_by_blog", "authors"}


def test_a_large_scheduled_pass_analyses_and_a_small_one_does_not(db: Database) -> None:
    seed(db, authors=2, blogs=4, views=1500, days=10, seed=3, progress=False)
    settings = Settings(database_url=db.settings.db_url)
    before = start_counting(db)
    refresh(db, settings)  # 1,500 events after none folded: more than 1,000 + 10%
    assert {"view_events", "views_day_by_blog"} <= analysed_since(db, before)
    seed(db, authors=2, blogs=4, views=200, days=10, seed=4, progress=False)
    before = start_counting(db)
    refresh(db, settings)  # 200 events after 1,500: a small pass leaves the statistics to autovacuum
    assert analysed_since(db, before) == set()


def test_import_analyses_the_table_it_loaded(db: Database, tmp_path: Path) -> None:
    files = {
        "authors": [{"id": "a1", "name": "Abebe"}],
        "blogs": [{"id": "b1", "title": "One", "authorId": "a1", "createdAt": "2025-01-01T00:00:00Z"}],
        "views": [{"blogId": "b1", "viewedAt": f"2025-02-01T12:{n % 60:02d}:00Z"} for n in range(300)],
    }
    for kind, items in files.items():
        path = tmp_path / f"{kind}.ndjson"
        path.write_bytes(b"".join(orjson.dumps(i) + b"\n" for i in items))
        before = start_counting(db)
        import_path(db, kind, str(path), progress=False)
        assert analysed_since(db, before) == {kind if kind != "views" else "view_events"}


@pytest.fixture
def unanalysed_pg() -> Iterator[Database]:
    """A PostgreSQL database of its own with autovacuum off for view_events, loaded without any command that
    analyses: 300,000 events over 100 days, folded by a pass told not to analyse, then 2,000 more in the last hour."""
    srv = pg_server()
    name = srv.new_database()
    db = Database(Settings(database_url=srv.url(name)))
    try:
        with db.write() as conn:
            conn.exec_driver_sql("ALTER TABLE view_events SET (autovacuum_enabled = false)")
        ingest_records(db, "authors", [{"id": "a1", "name": "Abebe"}])
        ingest_records(db, "blogs", [{"id": f"b{i}", "title": f"Blog {i}", "authorId": "a1",
                                      "createdAt": "2020-01-01T00:00:00Z"} for i in range(50)])
        with db.read() as conn:
            ids = list(ingest.blog_ids(conn, [f"b{i}" for i in range(50)]).values())
        now = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
        rnd = random.Random(5)
        rows = sorted((rnd.randrange(now - 100 * DAY, now - HOUR), rnd.choice(ids)) for _ in range(300_000))
        with db.write() as conn:
            ingest.insert_views(conn, [(None, b, None, "KE", t) for t, b in rows])
        refresh(db, Settings(database_url=db.settings.db_url), wait=True, analyze=False)
        with db.write() as conn:
            ingest.insert_views(conn, [(None, rnd.choice(ids), None, "US", now - rnd.randrange(HOUR))
                                       for _ in range(2000)])
        yield db
    finally:
        db.dispose()
        srv.drop(name)


def statements_of(db: Database, ask: Any) -> list[tuple[str, Any]]:
    """The statements the read path runs for `ask(conn)`, as sent to the server."""
    seen: list[tuple[str, Any]] = []

    def spy(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", spy)
    try:
        with db.read() as conn:
            ask(conn)
    finally:
        event.remove(db.engine, "before_cursor_execute", spy)
    return seen


def test_raw_edges_and_live_reads_use_the_viewed_at_index_without_statistics(unanalysed_pg: Database) -> None:
    db = unanalysed_pg
    with db.read() as conn:
        row = conn.execute(text(
            "SELECT s.last_analyze, s.last_autoanalyze, c.reltuples FROM pg_stat_user_tables s "
            "JOIN pg_class c ON c.oid = s.relid WHERE s.relname = 'view_events'")).one()
    assert row[0] is None and row[1] is None and row[2] <= 0  # never analysed, reltuples unknown
    utc = ZoneInfo("UTC")
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
    day0 = now // DAY * DAY
    questions = [
        # one hour of raw events after the last whole day (blogs keep no hour buckets), and the live tail
        TopQuery(Dimension.BLOG, RangeSpec(day0 - 60 * DAY, day0 - 10 * DAY + HOUR, utc)),
        # "the last 30 days" at microsecond precision: moving pieces at both ends, the tail
        TopQuery(Dimension.BLOG, RangeSpec(now - 30 * DAY + 1234, None, utc)),
        PerformanceQuery(Granularity.DAY, RangeSpec(now - 30 * DAY + 1234, None, utc), F.TRUE),
        # a half-hour zone: every local day's edges are raw (more ranges than RAW_RANGE_TERMS)
        PerformanceQuery(Granularity.DAY, RangeSpec(now - 300 * DAY + 1234, None, ZoneInfo("Asia/Kolkata")), F.TRUE),
    ]
    explained = []
    for q in questions:
        answer = reports.top if isinstance(q, TopQuery) else reports.performance
        for statement, parameters in statements_of(db, lambda c, q=q, a=answer: a(c, q)):
            if "view_events" not in statement or "rollup_state" in statement:
                continue
            with db.read() as conn:
                plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())
            assert "Seq Scan on view_events" not in plan, plan
            explained.append(statement)
    assert any("plan_raw" in s and "e.id <=" in s for s in explained)  # raw edges / moving pieces were explained
    assert any("plan_tail" in s for s in explained)  # and the live tail


def test_many_raw_edges_are_probed_per_run_on_sqlite(tmp_path: Path) -> None:
    """performance(DAY) over 300 days in a half-hour zone reads 600 raw half-hour edges: SQLite must probe the
    viewed_at index once per edge, not scan the whole span once per edge (found by bench/traffic.py: a year in
    Asia/Kolkata ran past the statement timeout). Counted in SQLite VM steps, which are deterministic: the events
    of the edges cost a few steps each; a scan of the span per edge would cost hundreds of times the table."""
    import sqlite3

    db = Database(Settings(database_url=f"sqlite:///{tmp_path / 'edges.db'}", timezone="UTC"))
    from analytics_gql.storage import schema

    schema.upgrade(db)
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
    rng = random.Random(5)
    with db.write() as conn:
        conn.execute(text("INSERT INTO countries (code, name) VALUES ('US', 'United States') ON CONFLICT DO NOTHING"))
    ingest_records(db, "authors", [{"id": "a1", "name": "A"}])
    ingest_records(db, "blogs", [{"id": "b1", "title": "T", "authorId": "a1", "createdAt": "2020-01-01T00:00:00Z"}])
    n = 20_000
    views = [{"blogId": "b1", "viewedAt": dt.datetime.fromtimestamp((now - rng.randrange(330 * DAY)) / 1e6,
                                                                   dt.UTC).isoformat()} for _ in range(n)]
    assert ingest_records(db, "views", views).accepted == n  # type: ignore[arg-type]
    catch_up(db, db.settings, progress=False, quiet=True)
    q = PerformanceQuery(Granularity.DAY, RangeSpec(now - 300 * DAY + 1234, None, ZoneInfo("Asia/Kolkata")), F.TRUE)
    raw = [(st, p) for st, p in statements_of(db, lambda c: reports.performance(c, q)) if "plan_raw" in st]
    # The series' middle is one statement (its first and last days are another: storage/parts.series_chunks).
    raw.sort(key=lambda sp: -sp[0].count("),"))
    assert raw and raw[0][0].count("),") > 500, "the question must read hundreds of raw edges"
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    con = sqlite3.connect(str(tmp_path / "edges.db"))
    try:
        con.set_progress_handler(count, 100)
        con.execute(raw[0][0], raw[0][1]).fetchall()
    finally:
        con.close()
    db.dispose()
    assert steps[0] * 100 < 200 * n, f"{steps[0] * 100} VM steps for {n} events"

