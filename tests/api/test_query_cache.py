"""The query cache keeps answers exact: a question answered from the cached rollup part, asked again after the
data changed, equals the independent oracle (tests/api/oracle.py), on SQLite and PostgreSQL.

Changes covered: (a) new events (the live tail), (b) a rollup pass, (c) late events, (d) a blog's author and
country changed by an upsert from another Database (another cache, another pool) and by the CLI in another
process, (e) compaction (horizons move), (f) a zone rebuild, and an audit repair (rollup rows change while the
watermark holds). Every check also asserts whether the cache was used, so a cache that is never hit (or never
missed) cannot make these tests pass by accident.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import oracle as O
import orjson
import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from analytics_gql.api.app import create_app
from analytics_gql.loading import ingest_records
from analytics_gql.rollup import audit, catch_up, compact, rebuild
from analytics_gql.settings import Settings
from analytics_gql.storage import parts
from analytics_gql.storage.engine import Database
from analytics_gql.storage.query_cache import QueryCache

CLI = str(Path(sys.executable).with_name("analytics-gql"))
T0 = O.us(dt.datetime(2025, 1, 1, tzinfo=O.UTC))
TOP = """query($d: Dimension!, $r: TimeRange, $f: ViewFilter, $tz: String) {
  top(dimension: $d, range: $r, filter: $f, timeZone: $tz, limit: 1000) {
    nodes { key label views blogCount } totalViews meta { sources { source rows } } } }"""
BLOG_VIEWS = """query($g: Dimension!, $r: TimeRange, $f: ViewFilter, $tz: String) {
  blogViews(groupBy: $g, granularity: MONTH, range: $r, filter: $f, timeZone: $tz, first: 1000) {
    totalCount nodes { key label periodStart views blogCount } } }"""
YEAR = {"start": "2025-01-01", "end": "2026-01-01"}


def views_at(blog: str, country: str | None, first: int, n: int, step: int) -> list[O.View]:
    return [O.View(blog, country, first + i * step) for i in range(n)]


class World:
    """A database, the oracle's copy of what was loaded, and a client on one app."""

    def __init__(self, db: Database, client: TestClient) -> None:
        self.db = db
        self.client = client
        self.truth = O.Data({}, {}, [])

    def authors(self, *authors: O.Author, db: Database | None = None) -> None:
        r = ingest_records(db or self.db, "authors", [  # type: ignore[arg-type]
            {"id": a.id, "name": a.name, **({"country": a.country} if a.country else {})} for a in authors])
        assert r.rejected == 0, r.errors
        self.truth.authors.update({a.id: a for a in authors})

    def blogs(self, *blogs: O.Blog, db: Database | None = None) -> None:
        r = ingest_records(db or self.db, "blogs", [blog_record(b) for b in blogs])  # type: ignore[arg-type]
        assert r.rejected == 0, r.errors
        self.truth.blogs.update({b.id: b for b in blogs})

    def views(self, views: list[O.View]) -> None:
        r = ingest_records(self.db, "views", [  # type: ignore[arg-type]
            {"blogId": v.blog, "viewedAt": O.utc(v.viewed_at).isoformat(),
             **({"viewerCountry": v.viewer_country} if v.viewer_country else {})} for v in views])
        assert r.rejected == 0, r.errors
        self.truth.views.extend(views)

    def ask(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        r = self.client.post("/graphql", json={"query": query, "variables": variables})
        assert r.status_code == 200, r.text
        body = r.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]  # type: ignore[no-any-return]

    def stats(self) -> tuple[int, int]:
        assert self.db.query_cache is not None
        s = self.db.query_cache.stats()
        return s.hits, s.misses

    def check_top(self, dim: str, f: dict[str, Any] | None = None, r: dict[str, str] = YEAR,
                  tz: str = "UTC") -> dict[str, Any]:
        got = self.ask(TOP, {"d": dim, "r": r, "f": f, "tz": tz})["top"]
        s, e = O.parse_time(r["start"], tz), O.parse_time(r["end"], tz)
        want = O.top(self.truth, dimension=dim, start=s, end=e, f=f, limit=1000)
        assert got["totalViews"] == want.total
        assert [(n["key"], n["label"], n["views"], n["blogCount"]) for n in got["nodes"]] == [
            (w.key, w.label, w.views, w.blog_count) for w in want.rows]
        assert want.total > 0  # a check over nothing would prove nothing
        return got

    def check_blog_views(self, dim: str, f: dict[str, Any] | None = None, tz: str = "UTC",
                         r: dict[str, str] = YEAR) -> None:
        got = self.ask(BLOG_VIEWS, {"g": dim, "r": r, "f": f, "tz": tz})["blogViews"]
        s, e = O.parse_time(r["start"], tz), O.parse_time(r["end"], tz)
        want = O.blog_views(self.truth, group_by=dim, granularity="MONTH", start=s, end=e, zone=tz, f=f)
        assert got["totalCount"] == len(want) > 0
        assert [(O.parse_output_instant(n["periodStart"]), n["key"], n["label"], n["views"], n["blogCount"])
                for n in got["nodes"]] == [(w.period_start, w.key, w.label, w.views, w.blog_count) for w in want]


def blog_record(b: O.Blog) -> dict[str, Any]:
    return {"id": b.id, "title": b.title, "authorId": b.author, "createdAt": O.utc(b.created_at).isoformat(),
            **({"country": b.country} if b.country else {})}


@contextmanager
def world(db: Database, zone: str = "UTC", **settings: Any) -> Iterator[World]:
    s = Settings(database_url=db.settings.db_url, timezone=zone, **settings)
    with TestClient(create_app(s, db)) as client:
        w = World(db, client)
        w.authors(O.Author("a1", "Abebe", "ET"), O.Author("a2", "Bo", None))
        w.blogs(O.Blog("b1", "One", "a1", "ET", T0), O.Blog("b2", "Two", "a1", "KE", T0),
                O.Blog("b3", "Three", "a2", None, T0))
        # Mid-hour edges and a quarter of a year: rollup months, days and hours, and raw edges.
        w.views(views_at("b1", "US", T0 + 1_234_567, 300, 7 * O.HOUR + 17_000_000)
                + views_at("b2", None, T0 + 5 * O.DAY, 200, 11 * O.HOUR)
                + views_at("b3", "KE", T0 + 40 * O.DAY, 150, 13 * O.HOUR + 1))
        yield w


def settings_for(db: Database, zone: str = "UTC", **extra: Any) -> Settings:
    return Settings(database_url=db.settings.db_url, timezone=zone, **extra)


QUESTIONS: list[tuple[str, dict[str, Any] | None]] = [
    ("BLOG", None), ("AUTHOR", None), ("COUNTRY", None), ("VIEWER_COUNTRY", {"author": {"eq": "a1"}}),
    ("COUNTRY", {"or": [{"country": {"in": ["ET"]}}, {"viewerCountry": {"eq": "KE"}}]}),
]


def check_all(w: World) -> None:
    for dim, f in QUESTIONS:
        w.check_top(dim, f)
    w.check_blog_views("COUNTRY")
    w.check_blog_views("AUTHOR", {"not": {"blog": {"eq": "b2"}}})


@pytest.mark.parametrize("quick_reads", [False, True])
def test_tail_pass_and_late_events(db: Database, quick_reads: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """(a) new events, (c) late events: served from the cached part plus the live tail; (b) a pass: a new part.
    Also with quick reads (warm answers tried on the event loop first), which are used only when switched on."""
    reads: list[bool] = []
    plain_read = db.read

    @contextmanager
    def spy(*args: Any, **kw: Any) -> Iterator[Any]:
        reads.append(bool(kw.get("quick")))
        with plain_read(*args, **kw) as conn:
            yield conn

    monkeypatch.setattr(db, "read", spy)
    with world(db, quick_reads=quick_reads) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)
        check_all(w)
        hits, misses = w.stats()
        check_all(w)  # the same questions again: every rollup part comes from the cache
        # (>=: a quick read on the event loop that needs more SQL is redone in a thread, and looks up again)
        assert w.stats()[1] == misses and w.stats()[0] >= hits + len(QUESTIONS) + 2
        sources = w.check_top("BLOG")["meta"]["sources"]
        assert {s["source"]: s["rows"] for s in sources}["tail"] == 0

        w.views(views_at("b2", "US", T0 + 300 * O.DAY + 7, 40, O.HOUR))  # (a) new events, recent
        w.views(views_at("b3", "ET", T0 + 2 * O.DAY + 5, 25, 3 * O.HOUR))  # (c) late events, into old buckets
        hits, misses = w.stats()
        check_all(w)
        assert w.stats()[1] == misses and w.stats()[0] >= hits + len(QUESTIONS) + 2  # same parts + the tail
        sources = w.check_top("BLOG")["meta"]["sources"]
        assert {s["source"]: s["rows"] for s in sources}["tail"] == 2  # b2 and b3, one window

        catch_up(db, settings_for(db), progress=False, quiet=True)  # (b) the watermark moves
        hits, misses = w.stats()
        # Few events above the parts' older watermark: the parts are reused, the events folded since are the tail.
        sources = w.check_top("BLOG")["meta"]["sources"]
        assert {s["source"]: s["rows"] for s in sources}["tail"] == 2
        check_all(w)
        assert w.stats()[1] == misses and w.stats()[0] >= hits + len(QUESTIONS) + 3
        db.settle()  # meanwhile each reused part was re-read at the new watermark, in the background
        sources = w.check_top("BLOG")["meta"]["sources"]
        assert {s["source"]: s["rows"] for s in sources}["tail"] == 0
        check_all(w)
        assert w.stats()[1] == misses

        monkeypatch.setattr(parts, "REUSE_TAIL", 10)  # more events than that above the old watermark: new parts
        w.views(views_at("b1", "KE", T0 + 200 * O.DAY + 3, 30, O.HOUR))
        catch_up(db, settings_for(db), progress=False, quiet=True)
        hits, misses = w.stats()
        check_all(w)
        assert w.stats()[1] >= misses + len(QUESTIONS) + 2
        sources = w.check_top("BLOG")["meta"]["sources"]
        assert {s["source"]: s["rows"] for s in sources}["tail"] == 0
        check_all(w)
    assert any(reads) is quick_reads and not all(reads)


def test_reused_parts_are_advanced_by_the_events_folded_since(db: Database,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """After a pass, a reused part is brought to the new watermark in the background by adding the events folded
    since (parts.advanced, one statement over their ids), not by reading its buckets and edges again; the answers
    stay those of the oracle, late events into old buckets and a blog new to a group (blogCount) included."""
    calls = {"read": 0, "advanced": 0}
    plain_read, plain_advanced = parts.read_part, parts.advanced

    def read_spy(*a: Any, **kw: Any) -> Any:
        calls["read"] += 1
        return plain_read(*a, **kw)

    def advanced_spy(*a: Any, **kw: Any) -> Any:
        calls["advanced"] += 1
        return plain_advanced(*a, **kw)

    monkeypatch.setattr(parts, "read_part", read_spy)
    monkeypatch.setattr(parts, "advanced", advanced_spy)
    with world(db) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)
        check_all(w)
        w.blogs(O.Blog("b4", "Four", "a1", "KE", T0))  # a1 gets a third blog, KE a second, only in the delta
        # Dimension upserts change the state key; the views below are what the advance must add.
        check_all(w)
        w.views(views_at("b4", "US", T0 + 3 * O.DAY + 11, 20, 5 * O.HOUR)  # late, into old buckets
                + views_at("b1", "KE", T0 + 80 * O.DAY + 13, 30, O.HOUR)
                + views_at("b3", None, T0 + 200 * O.DAY + 1, 10, 2 * O.HOUR))
        catch_up(db, settings_for(db), progress=False, quiet=True)
        before = dict(calls)
        check_all(w)  # reused: the old parts and the 60 events above their watermark as the tail
        assert calls["read"] == before["read"]
        db.settle()
        assert calls["advanced"] >= before["advanced"] + len(QUESTIONS) + 2
        assert calls["read"] == before["read"]  # nothing was read again
        sources = w.check_top("BLOG")["meta"]["sources"]
        assert {s["source"]: s["rows"] for s in sources}["tail"] == 0  # the parts are at the new watermark
        check_all(w)
        got = {n["key"]: n["blogCount"] for n in w.check_top("AUTHOR")["nodes"]}
        assert got["a1"] == 3  # b1, b2 and b4 (b4 only in the advance)


def test_a_series_moved_by_an_hour_reads_only_its_first_and_last_windows(db: Database,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A monthly series over a year at millisecond precision, asked again an hour later: its middle months come
    from the cache (parts.series_chunks), only the first and last windows are read; answers equal the oracle's."""
    reads: list[int] = []
    plain_read = parts.read_part

    def read_spy(conn: Any, ctx: Any, windows: list[tuple[int, int]], *a: Any) -> Any:
        reads.append(len(windows))
        return plain_read(conn, ctx, windows, *a)

    monkeypatch.setattr(parts, "read_part", read_spy)
    with world(db) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)
        first = {"start": "2025-01-01T05:17:00.123Z", "end": "2026-01-01T05:17:00.123Z"}
        later = {"start": "2025-01-01T06:17:00.123Z", "end": "2026-01-01T06:17:00.123Z"}
        for dim, f in [("COUNTRY", None), ("AUTHOR", {"not": {"blog": {"eq": "b2"}}})]:
            reads.clear()
            w.check_blog_views(dim, f, r=first)
            assert reads == [2, 11]  # cold: the first and last months together, the eleven between
            reads.clear()
            w.check_blog_views(dim, f, r=later)
            assert reads == [2]  # an hour later: the first and last windows only
            reads.clear()
            w.check_blog_views(dim, f, r=later)
            assert reads == []  # and then the whole series from the cache


def test_dimension_upserts_from_another_process(db: Database, tmp_path: Path) -> None:
    """(d) a blog's author and country change through another Database, then through the CLI: answers follow."""
    with world(db) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)
        w.views(views_at("b1", None, T0 + 100 * O.DAY, 10, O.HOUR))  # a tail too
        check_all(w)
        check_all(w)
        other = Database(settings_for(db))  # its own pool and cache: another process as far as ours knows
        try:
            w.blogs(O.Blog("b2", "Two, moved", "a2", "ET", T0), db=other)
        finally:
            other.dispose()
        hits, misses = w.stats()
        check_all(w)
        assert w.stats()[1] > misses  # the dimensions version moved: filtered and grouped parts are re-read

        path = tmp_path / "blogs.ndjson"
        moved = O.Blog("b3", "Three", "a1", "KE", T0)
        path.write_bytes(orjson.dumps(blog_record(moved)) + b"\n")
        env = {**os.environ, "ANALYTICS_DATABASE_URL": db.settings.db_url}
        done = subprocess.run([CLI, "import", "blogs", str(path)], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        w.truth.blogs[moved.id] = moved
        check_all(w)


def test_compaction_moves_horizons(db: Database) -> None:
    """(e) compaction deletes raw events and fine buckets: a cached answer that needed them is not reused."""
    with world(db) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)
        edge = {"start": "2025-01-01T00:20:00", "end": "2025-03-01T10:30:00"}  # sub-hour edges: raw
        w.check_top("BLOG", r=edge)
        w.check_top("BLOG", r=edge)
        check_all(w)
        now = T0 + 400 * O.DAY
        compact(db, settings_for(db, retention="raw=100d,hour=200d"), now_us=now)
        r = w.client.post("/graphql", json={"query": TOP, "variables": {"d": "BLOG", "r": edge}})
        err = r.json()["errors"][0]
        assert err["extensions"]["code"] == "BAD_USER_INPUT" and "retention has compacted" in err["message"], err
        hits, misses = w.stats()
        check_all(w)  # whole days: still answered, exactly, from the coarser grains
        assert w.stats()[1] > misses


def test_compacted_late_events_are_not_lost_to_an_older_part(db: Database) -> None:
    """A part read at watermark w1 is reused later with the events above w1 as its tail; late events folded after
    w1 and then compacted out of raw (the raw horizon unchanged) would be missing from both: compaction must stop
    the reuse."""
    now = T0 + 400 * O.DAY
    retention = settings_for(db, retention="raw=100d")
    with world(db) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)
        compact(db, retention, now_us=now)  # the raw horizon is set; it will not move below
        check_all(w)  # whole months in 2025: rollups only, now cached at w1
        w.views(views_at("b1", "ET", T0 + 20 * O.DAY + 9, 12, O.HOUR))  # late: far past the raw horizon
        catch_up(db, settings_for(db), progress=False, quiet=True)
        report = compact(db, retention, now_us=now)
        assert report.deleted["raw"] == 12  # the late events are gone from raw, kept only in the rollups
        check_all(w)


def test_zone_rebuild(db: Database) -> None:
    """(f) rollups rebuilt in another zone: answers in both zones stay exact (new parts, not the old ones)."""
    with world(db) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)
        ny = {"start": "2025-01-01", "end": "2025-12-01"}
        w.check_top("COUNTRY", r=ny, tz="America/New_York")
        check_all(w)
        w.views(views_at("b1", "KE", T0 + 50 * O.DAY + 3, 30, 5 * O.HOUR))
        rebuild(db, settings_for(db, "America/New_York"), progress=False)
        hits, misses = w.stats()
        w.check_top("COUNTRY", r=ny, tz="America/New_York")
        assert w.stats()[1] > misses
        check_all(w)
        w.check_blog_views("BLOG", tz="America/New_York")


def test_audit_repair_is_not_hidden_by_the_cache(db: Database) -> None:
    """A drifted rollup cell repaired by the audit (same watermark) changes answers: the cached part must go."""
    with world(db) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)
        with db.write() as conn:  # drift in the year shapes, as a bug or a bad restore might leave
            for table in ("views_year", "views_year_by_blog", "views_year_total"):
                conn.execute(text(f"UPDATE {table} SET views = views + 1000"))
        got = w.ask(TOP, {"d": "BLOG", "r": YEAR, "f": None, "tz": "UTC"})["top"]
        assert got["totalViews"] > len(w.truth.views)  # the drift is visible (and now cached)
        report = audit(db, settings_for(db), sample=100_000, repair=True)
        assert report.drift and report.repaired
        w.check_top("BLOG")
        check_all(w)


def test_cache_off_gives_the_same_answers(db_url: str) -> None:
    """ANALYTICS_QUERY_CACHE=false: no cache object, every answer read in full, still exact."""
    db = Database(Settings(database_url=db_url, query_cache=False))
    try:
        if db.sqlite:
            from analytics_gql.storage import schema

            schema.upgrade(db)
        assert db.query_cache is None
        s = Settings(database_url=db_url, query_cache=False)
        with TestClient(create_app(s, db)) as client:
            w = World(db, client)
            w.authors(O.Author("a1", "Abebe", "ET"))
            w.blogs(O.Blog("b1", "One", "a1", "ET", T0), O.Blog("b2", "Two", "a1", None, T0))
            w.views(views_at("b1", "US", T0 + 1, 50, 5 * O.HOUR) + views_at("b2", None, T0 + 9, 30, 7 * O.HOUR))
            catch_up(db, s, progress=False, quiet=True)
            w.views(views_at("b2", "ET", T0 + 11, 5, O.DAY))
            for dim, f in QUESTIONS[:4]:
                w.check_top(dim, f)
                w.check_top(dim, f)
    finally:
        db.dispose()


def test_lru_bounds() -> None:
    """Entries and rows are both bounded; the least recently used goes first; oversized values are not kept."""
    c = QueryCache(max_entries=3, max_rows=10)
    for k in "abc":
        c.put(k, k.upper(), 2)
    assert c.get("a") == "A"  # a is now the most recent
    c.put("d", "D", 2)  # 4 entries > 3: b (least recent) goes
    assert c.get("b") is None and c.get("c") == "C" and c.get("d") == "D"
    c.put("e", "E", 7)  # rows 2+2+2+7 > 10: the least recently used go, a then c (d was read last)
    s = c.stats()
    assert (s.rows, s.entries) == (9, 2) and c.get("e") == "E" and c.get("d") == "D"
    assert c.get("a") is None and c.get("c") is None
    c.put("huge", "H", 11)
    assert c.get("huge") is None


PERFORMANCE = """query($gr: Granularity!, $r: TimeRange!, $f: ViewFilter, $tz: String) {
  performance(granularity: $gr, range: $r, filter: $f, timeZone: $tz) {
    points { periodStart label views blogsCreated growth partial } } }"""
DAY_VIEWS = """query($r: TimeRange, $tz: String) {
  blogViews(groupBy: BLOG, granularity: DAY, range: $r, timeZone: $tz, first: 1000) {
    totalCount nodes { key label periodStart periodLabel views blogCount } } }"""


def test_questions_differing_only_in_their_filter_get_their_own_parts(db: Database) -> None:
    """Same windows, grouping and rollup shape, another filter: each answer is its own (the part's key holds the
    filter), cold and warm."""
    filters: list[dict[str, Any] | None] = [
        {"blog": {"eq": "b1"}}, {"blog": {"eq": "b2"}}, {"blog": {"in": ["b1", "b2"]}},
        {"not": {"country": {"eq": "KE"}}}, {"author": {"in": ["a2"]}}, None]
    with world(db) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)
        totals = [w.check_top("BLOG", f)["totalViews"] for f in filters]
        assert len(set(totals)) == len(totals)  # every filter selects other views: a mix-up would show
        hits, _ = w.stats()
        assert [w.check_top("BLOG", f)["totalViews"] for f in filters] == totals
        assert w.stats()[0] >= hits + len(filters)


def test_same_instants_other_period_labels(db: Database) -> None:
    """Kiritimati (+14) and Honolulu (-10) have the same midnights, one calendar day apart: the same windows, the
    same cached part and page, but other period labels. A page's rows are memoised (reports.py) on the page and the
    periods' labels, so each zone gets its own labels."""
    r = {"start": "2025-01-10T10:00:00Z", "end": "2025-01-20T10:00:00Z"}
    s, e = O.parse_time(r["start"], "UTC"), O.parse_time(r["end"], "UTC")
    with world(db) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)  # nothing above the watermark: shared pages
        for tz in ("Pacific/Kiritimati", "Pacific/Honolulu", "Pacific/Kiritimati", "Pacific/Honolulu"):
            got = w.ask(DAY_VIEWS, {"r": r, "tz": tz})["blogViews"]
            want = O.blog_views(w.truth, group_by="BLOG", granularity="DAY", start=s, end=e, zone=tz, f=None)
            assert len(want) > 5
            assert [(O.parse_output_instant(n["periodStart"]), n["periodLabel"], n["key"], n["views"])
                    for n in got["nodes"]] == [(x.period_start, x.period_label, x.key, x.views) for x in want], tz


def test_blogs_created_follows_an_upsert_of_created_at(db: Database) -> None:
    """blogsCreated is cached per dimensions version: moving a blog's createdAt moves its count at once."""
    r = {"start": "2024-12-30", "end": "2025-02-03"}
    f = {"not": {"blog": {"eq": "b1"}}}

    def check(w: World) -> list[int]:
        got = w.ask(PERFORMANCE, {"gr": "WEEK", "r": r, "f": f, "tz": "UTC"})["performance"]["points"]
        want = O.performance(w.truth, granularity="WEEK", start=O.parse_time(r["start"], "UTC"),
                             end=O.parse_time(r["end"], "UTC"), zone="UTC", f=f)
        assert [(O.parse_output_instant(p["periodStart"]), p["label"], p["views"], p["blogsCreated"], p["growth"],
                 p["partial"]) for p in got] == [(x.start, x.label, x.views, x.blogs_created, x.growth, x.partial)
                                                 for x in want]
        return [x.blogs_created for x in want]

    with world(db) as w:
        catch_up(db, settings_for(db), progress=False, quiet=True)
        assert check(w) == check(w) == [2, 0, 0, 0, 0]  # b2 and b3 (b1 is filtered out), week of 2025-01-01
        w.blogs(O.Blog("b2", "Two", "a1", "KE", T0 + 20 * O.DAY))
        assert check(w) == [1, 0, 0, 1, 0]  # b2 now created on 2025-01-21


OPEN_PERF = """query($r: TimeRange!) { performance(granularity: DAY, range: $r, timeZone: "UTC") {
  points { periodStart views growth blogsCreated } } }"""
OPEN_DAY_VIEWS = """query($r: TimeRange) { blogViews(groupBy: BLOG, granularity: DAY, range: $r, timeZone: "UTC",
  first: 1000) { nodes { key periodStart views blogCount } } }"""
MINUTE = 60 * 1_000_000


def test_ranges_ending_now_reuse_the_cached_part_and_stay_exact(db: Database) -> None:
    """A range with no end ends at the request's "now": its windows differ with every request. The part before the
    UTC hour that holds each moving end is cached and reused; the events after it (folded or not) are read live.
    Exact against the oracle with events in the current hour, on both sides of the cut, and around the previous
    day's matching instant (growth), before and after a pass."""
    with world(db) as w:
        now = O.us(dt.datetime.now(dt.UTC))
        start = now - 3 * O.DAY - 17 * MINUTE  # fixed; the last period and its growth window end at "now"
        w.blogs(O.Blog("b4", "Four", "a2", "KE", now - 10 * MINUTE), O.Blog("b5", "Five", "a1", None, now - O.DAY))
        w.views(views_at("b1", "US", now - 50 * MINUTE, 8, 6 * MINUTE + 7)  # the last 50 minutes
                + views_at("b2", "KE", now - O.DAY - 40 * MINUTE, 5, 7 * MINUTE)  # before yesterday's "now"
                + views_at("b3", None, now - O.DAY + 5 * MINUTE, 4, 9 * MINUTE)  # after it: not in growth's window
                # Whatever the time of day: one view in the current UTC hour (so in the current day) and one in
                # yesterday's window up to the same time of day (growth's previous window), 30 s before those ends.
                + views_at("b1", "US", max(now - MINUTE // 2, now // O.HOUR * O.HOUR), 1, MINUTE)
                + views_at("b2", "US", max(now - O.DAY - MINUTE // 2, now // O.DAY * O.DAY - O.DAY), 1, MINUTE))
        catch_up(db, settings_for(db), progress=False, quiet=True)
        open_top = {"start": "2025-01-01T00:00:00Z"}
        open_perf = {"start": O.utc(start).isoformat()}

        def check() -> tuple[int, dict[str, int]]:
            hour = O.us(dt.datetime.now(dt.UTC)) // O.HOUR
            got_top = w.ask(TOP, {"d": "BLOG", "r": open_top, "f": None, "tz": "UTC"})["top"]
            got_days = w.ask(OPEN_DAY_VIEWS, {"r": {"start": O.utc(start).isoformat()}})["blogViews"]["nodes"]
            got_perf = w.ask(OPEN_PERF, {"r": open_perf})["performance"]["points"]
            end = O.us(dt.datetime.now(dt.UTC))  # no event lies between the server's "now"s and this one
            want_top = O.top(w.truth, dimension="BLOG", start=T0, end=end, f=None, limit=1000)
            assert got_top["totalViews"] == want_top.total
            assert [(n["key"], n["views"], n["blogCount"]) for n in got_top["nodes"]] == [
                (r.key, r.views, r.blog_count) for r in want_top.rows]
            want_days = O.blog_views(w.truth, group_by="BLOG", granularity="DAY", start=start, end=end, zone="UTC",
                                     f=None)
            assert [(O.parse_output_instant(n["periodStart"]), n["key"], n["views"]) for n in got_days] == [
                (r.period_start, r.key, r.views) for r in want_days]
            want_perf = O.performance(w.truth, granularity="DAY", start=start, end=end, zone="UTC", f=None)
            assert [(O.parse_output_instant(p["periodStart"]), p["views"], p["growth"], p["blogsCreated"])
                    for p in got_perf] == [(p.start, p.views, p.growth, p.blogs_created) for p in want_perf]
            assert want_perf[-1].blogs_created == 1 and sum(p.blogs_created for p in want_perf) == 2
            assert want_perf[-1].views > 0 and want_perf[-1].growth is not None  # the moving windows hold events
            same_hour = hour == O.us(dt.datetime.now(dt.UTC)) // O.HOUR
            return (w.stats()[1] if same_hour else -1), {s["source"]: s["rows"] for s in got_top["meta"]["sources"]}

        misses, sources = check()
        assert sources["tail"] == 0 and sources["raw"] >= 1  # the current hour's events: read live, at or below
        again, _ = check()  # a later "now": the parts before the cuts come from the cache
        assert again in (misses, -1)  # (-1: the UTC hour changed meanwhile, and with it the cuts)
        w.views(views_at("b2", "US", now - 20 * MINUTE, 3, 5 * MINUTE)  # not folded: the live tail
                + views_at("b1", "ET", now - O.DAY - 30 * MINUTE, 2, MINUTE))
        after, sources = check()
        assert sources["tail"] == 2  # b1 and b2, one window
        assert after in (misses, -1)
        catch_up(db, settings_for(db), progress=False, quiet=True)
        check()


YEAR_QUESTIONS = {
    "top": """query($r: TimeRange) { top(dimension: BLOG, range: $r, timeZone: "UTC", limit: 1000) {
      nodes { key views blogCount } totalViews } }""",
    "blogViews": """query($r: TimeRange) { blogViews(groupBy: COUNTRY, granularity: MONTH, range: $r, timeZone: "UTC",
      first: 1000) { nodes { key periodStart views blogCount } } }""",
    "performance": OPEN_PERF,
}


def check_year(w: World, start: int, end: int) -> int:
    """top, monthly blogViews and daily performance over [start, end) (milliseconds), against the oracle; the blogs
    created in the first period."""
    r = {"start": O.utc(start).isoformat(timespec="milliseconds"), "end": O.utc(end).isoformat(timespec="milliseconds")}
    got = {name: w.ask(q, {"r": r}) for name, q in YEAR_QUESTIONS.items()}
    want_top = O.top(w.truth, dimension="BLOG", start=start, end=end, f=None, limit=1000)
    assert got["top"]["top"]["totalViews"] == want_top.total > 0
    assert [(n["key"], n["views"], n["blogCount"]) for n in got["top"]["top"]["nodes"]] == [
        (x.key, x.views, x.blog_count) for x in want_top.rows]
    want_bv = O.blog_views(w.truth, group_by="COUNTRY", granularity="MONTH", start=start, end=end, zone="UTC", f=None)
    assert [(O.parse_output_instant(n["periodStart"]), n["key"], n["views"], n["blogCount"])
            for n in got["blogViews"]["blogViews"]["nodes"]] == [
        (x.period_start, x.key, x.views, x.blog_count) for x in want_bv]
    want_perf = O.performance(w.truth, granularity="DAY", start=start, end=end, zone="UTC", f=None)
    assert [(O.parse_output_instant(p["periodStart"]), p["views"], p["growth"], p["blogsCreated"])
            for p in got["performance"]["performance"]["points"]] == [
        (p.start, p.views, p.growth, p.blogs_created) for p in want_perf]
    assert want_perf[0].views > 0 and want_perf[0].growth is not None and want_perf[-1].views > 0
    return want_perf[0].blogs_created


def test_a_range_ending_now_with_folded_events_dated_after_its_end(db: Database) -> None:
    """The piece of a range ending now inside its last hour comes from that hour's cached part (parts.held_hours)
    only while no folded event lies after the end in that hour: events dated a little ahead, folded, are left out
    (the piece is read from raw events instead), before and after another pass; answers equal the oracle's."""
    ms = 1000
    if O.us(dt.datetime.now(dt.UTC)) % O.HOUR > O.HOUR - 20_000 * ms:
        time.sleep(25)  # room in this hour after the end for the events dated ahead
    with world(db) as w:
        e = O.us(dt.datetime.now(dt.UTC)) // ms * ms - 2_000 * ms
        s = e - 365 * O.DAY
        w.views(views_at("b1", "US", e - 40 * MINUTE, 10, MINUTE) + views_at("b2", "KE", s + 10 * MINUTE, 5, MINUTE)
                + views_at("b2", "US", s - O.DAY + 200 * ms, 5, 7 * MINUTE))  # growth's first previous window
        catch_up(db, settings_for(db), progress=False, quiet=True)
        check_year(w, s, e)  # the hour's part is cached now
        w.views(views_at("b3", "ET", e + 300 * ms, 3, 1_000 * ms)  # after the end, in its hour
                + views_at("b1", "KE", e - 5 * MINUTE, 2, MINUTE))
        catch_up(db, settings_for(db), progress=False, quiet=True)
        check_year(w, s, e)
        w.views(views_at("b2", "US", e - 2 * MINUTE, 4, 10 * ms))
        catch_up(db, settings_for(db), progress=False, quiet=True)
        check_year(w, s, e)
        db.settle()
        check_year(w, s, e)


def test_a_held_hour_missing_from_the_cache_is_read_at_the_snapshots_watermark(db: Database) -> None:
    """The question's part reused at an older watermark (after a pass), its last hour's part not in the cache: the
    hour is read at the snapshot's watermark (its rollup hour holds the events folded since the older one, which the
    tail counts too), so the events of that pass are counted once; daily performance uses the hour rollups."""
    ms = 1000
    with world(db) as w:
        e = O.us(dt.datetime.now(dt.UTC)) // ms * ms - 2_000 * ms
        s = e - 365 * O.DAY
        hour = e - e % O.HOUR
        w.views(views_at("b1", "US", hour + (e - hour) // 3, 5, ms)
                + views_at("b2", "US", s - O.DAY + 200 * ms, 5, 7 * MINUTE)
                + views_at("b2", "KE", s + MINUTE, 3, MINUTE))
        catch_up(db, settings_for(db), progress=False, quiet=True)
        check_year(w, s, e)
        w.views(views_at("b3", "ET", hour + (e - hour) // 2, 4, ms))  # the last hour, folded by the next pass
        catch_up(db, settings_for(db), progress=False, quiet=True)
        cache = db.query_cache
        assert cache is not None
        hours = [k for k in list(cache._entries) if k[0] == "part" and len(k[1]) == 1 and k[1][0][1] - k[1][0][0]
                 == O.HOUR]
        assert hours, "the last hour's parts were cached"
        for k in hours:
            cache._entries.pop(k)
        check_year(w, s, e)  # the questions' parts reused at the older watermark, the hour read anew


def test_the_last_365_days_at_millisecond_precision_stay_warm_and_exact(db: Database) -> None:
    """A client sending `now - 365 days .. now` at millisecond precision with every request: each window's
    whole-hour interior is cached whatever the instants inside its first and last hour, and the pieces outside it
    are read live. Two requests 1.5 s apart (other milliseconds at both ends) are exact against the oracle, with
    events and a blog created between the two starts, around both ends, in growth's previous windows and in the
    live tail; the second misses no cached part (unless a UTC hour began between them, which moves the cuts).
    A pass, then a third request: exact."""
    ms = 1000
    with world(db) as w:
        e1 = O.us(dt.datetime.now(dt.UTC)) // ms * ms - 2_000 * ms
        s1 = e1 - 365 * O.DAY
        s2, e2 = s1 + 1_503 * ms, e1 + 1_503 * ms
        w.blogs(O.Blog("b4", "Four", "a2", "KE", s1 + 700 * ms), O.Blog("b5", "Five", "a1", None, s2 + 2_000 * ms),
                O.Blog("b6", "Six", "a1", None, s1 - ms))
        w.views(views_at("b1", "US", s1 + 500 * ms, 20, 3 * MINUTE)  # the first hour, from between the starts
                + views_at("b2", "KE", s1 - 30 * MINUTE, 10, 3 * MINUTE)  # across the start
                + views_at("b3", None, e1 - 50 * MINUTE, 8, 5 * MINUTE)  # the last hour
                + views_at("b2", "US", s1 - O.DAY + 200 * ms, 5, 7 * MINUTE))  # growth's first previous window
        catch_up(db, settings_for(db), progress=False, quiet=True)
        w.views(views_at("b1", "ET", e1 - 10 * MINUTE, 3, MINUTE)  # not folded: the live tail
                + views_at("b4", "ET", s1 + 1_200 * ms, 2, MINUTE))  # one between the starts, one after both
        created = check_year(w, s1, e1)
        hits, misses = w.stats()
        time.sleep(1.5)
        w.views(views_at("b3", "KE", e1 + 100 * ms, 1, MINUTE))  # between the ends (live tail)
        assert check_year(w, s2, e2) == created - 1 >= 1  # b4 was created between the starts
        if (s1 // O.HOUR, e1 // O.HOUR) == (s2 // O.HOUR, e2 // O.HOUR):
            # Per question its part and the part of the hour it ends in (parts.held_hours); and blogsCreated.
            assert w.stats() == (hits + 2 * len(YEAR_QUESTIONS) + 1, misses)
        w.views(views_at("b3", "US", e1 - 20 * MINUTE, 4, MINUTE))
        catch_up(db, settings_for(db), progress=False, quiet=True)  # a pass between requests
        check_year(w, s2 + 10 * ms, e2 + 10 * ms)
