"""Rollup passes on SQLite and PostgreSQL: exact against an independent GROUP BY, zones, crashes, retention, audit."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections import Counter
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rollup_helpers import (
    Event,
    add_events,
    add_viewed,
    assert_exact,
    assert_readers_exact,
    expected,
    narrow,
    raw_events,
    reset,
    stored,
    writers_and_passes,
)
from sqlalchemy import text, update

from analytics_gql import logs, rollup
from analytics_gql.domain.calendar import DAY_US, GRAINS, HOUR_US, Grain, bucket_interval, offset_segments, to_us
from analytics_gql.errors import RebuildRequired, UserError
from analytics_gql.settings import Settings
from analytics_gql.storage import rollups as store
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import Shape, rollup_tables

# Half-hour and 45-minute offsets (Kolkata, Kathmandu: +5:30 until 1986, then +5:45), a 30-minute DST shift
# (Lord_Howe), midnight changes (Santiago) and fall-backs across midnight (St_Johns at 00:01 until 2011).
ZONES = ["UTC", "America/Santiago", "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London", "America/New_York",
         "Asia/Kathmandu", "America/St_Johns"]
LO = to_us(dt.datetime(1995, 1, 1, tzinfo=dt.UTC))
HI = to_us(dt.datetime(2035, 1, 1, tzinfo=dt.UTC))


def with_settings(db: Database, **kw: object) -> tuple[Database, Settings]:
    """The test database with other settings (zone, chunk size, retention)."""
    s = Settings(database_url=db.settings.db_url, **kw)
    return Database(s), s


@lru_cache
def edges(zone: str) -> list[int]:
    """Instants where buckets turn over in `zone`: DST changes, local midnights around them, year/month ends."""
    z = ZoneInfo(zone)
    out: list[int] = []
    for t, _ in offset_segments(z, to_us(dt.datetime(1985, 1, 1, tzinfo=dt.UTC)),
                                to_us(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))[1:]:
        out.append(t)
        for g in (Grain.DAY, Grain.WEEK):
            from analytics_gql.domain.calendar import bucket_key
            lo, hi = bucket_interval(g, bucket_key(g, t, z), z)
            out += [lo, hi]
    for y in (2016, 2020, 2024):  # leap years: Feb 29, ISO week 53 (2020), year ends
        for d in (dt.date(y, 1, 1), dt.date(y, 2, 29), dt.date(y, 3, 1), dt.date(y, 12, 31)):
            out.append(to_us(dt.datetime(d.year, d.month, d.day, tzinfo=z)))
    return sorted(set(out))


def instants(zone: str) -> st.SearchStrategy[int]:
    near = st.sampled_from(edges(zone)).flatmap(lambda e: st.sampled_from([e - 1, e, e + 1]) | st.integers(
        e - 2 * HOUR_US, e + 2 * HOUR_US))
    return near | st.integers(LO, HI)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[str, int, list[list[tuple[int, str | None, int, str | None]]]]:
    zone = draw(st.sampled_from(ZONES))
    event = st.tuples(st.integers(1, 3), st.sampled_from([None, "US", "IN"]), instants(zone),
                      st.sampled_from([None, "v1", "V1", "v2", "é", "v3"]))
    batches = draw(st.lists(st.lists(event, max_size=25), min_size=1, max_size=4))
    chunk = draw(st.sampled_from([1, 7, 1000]))
    return zone, chunk, batches


@given(scenario())
def test_rollups_equal_independent_group_by(db: Database, case: tuple[str, int, list[list[Any]]]) -> None:
    """Interleaved ingest and passes (late events included: batches are in no time order) stay exact, view counts
    and reader sets (issue 12: each chunk's readers unioned into cells that already hold some of them)."""
    zone, chunk, batches = case
    reset(db)
    d, s = with_settings(db, timezone=zone, rollup_chunk=chunk)
    try:
        for batch in batches:
            add_viewed(d, batch)
            rollup.refresh(d, s)
            assert_exact(d, zone)
            assert_readers_exact(d, zone)
        with d.read() as conn:
            assert store.watermark(conn) == store.max_event_id(conn)
            assert len(raw_events(conn)) == sum(map(len, batches))
    finally:
        d.dispose()


def test_bucket_sql_matches_reference_over_two_centuries(db: Database) -> None:
    """One event a month-ish from 1970 to 2199 in Santiago: SQL day/week/month/year == calendar.bucket_key."""
    r = random.Random(3)
    zone = "America/Santiago"
    events: list[Event] = [(1, None, t) for t in range(2 * DAY_US, to_us(dt.datetime(2199, 12, 31, tzinfo=dt.UTC)),
                                                        29 * DAY_US + 7 * HOUR_US + r.randrange(HOUR_US))]
    d, s = with_settings(db, timezone=zone)
    try:
        add_events(d, events)
        rollup.catch_up(d, s, progress=False, quiet=True)
        assert_exact(d, zone)
    finally:
        d.dispose()


def test_refresh_is_idempotent_and_counts_once(db: Database) -> None:
    """R2: running the pass 1, 2 or 5 times for one tick gives identical tables."""
    add_events(db, [(1, "US", LO + i * HOUR_US) for i in range(50)])
    snapshots = []
    for runs in (1, 2, 5):
        for _ in range(runs):
            rollup.refresh(db, db.settings)
        with db.read() as conn:
            snapshots.append(stored(conn))
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert sum(snapshots[0][(Grain.DAY, Shape.TOTAL)].values()) == 50
    assert_exact(db, "UTC")


def test_late_event_lands_in_its_old_bucket(db: Database) -> None:
    """R7/F13: an event 30 days old arriving after a pass is folded into its old day at the next pass."""
    now = store.now_us()
    add_events(db, [(1, "US", now - HOUR_US)])
    rollup.refresh(db, db.settings)
    old = now - 30 * DAY_US
    add_events(db, [(1, "US", old), (2, None, now + 400 * DAY_US)])  # and one from the future
    rollup.refresh(db, db.settings)
    with db.read() as conn:
        day = stored(conn)[(Grain.DAY, Shape.BY_BLOG)]
    assert day[(old // DAY_US, 1, None)] == 1
    assert day[((now + 400 * DAY_US) // DAY_US, 2, None)] == 1
    assert_exact(db, "UTC")


def test_zone_change_refused_then_rebuilt(db: Database) -> None:
    """Changing the reporting zone with rollups present needs an explicit rebuild; rebuild recomputes exactly."""
    add_events(db, [(1, "US", edges("Europe/London")[5] + i * 977 * 1_000_000) for i in range(40)])
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    d, s = with_settings(db, timezone="Europe/London")
    try:
        with pytest.raises(RebuildRequired, match="rollup --rebuild"):
            rollup.refresh(d, s)
        rollup.rebuild(d, s, progress=False)
        assert_exact(d, "Europe/London")
        with d.read() as conn:
            assert store.reporting_zone(conn) == "Europe/London"
    finally:
        d.dispose()


def test_zone_adopted_silently_when_rollups_are_empty(db: Database) -> None:
    """Before anything is folded the zone is simply recorded: nothing can be mixed."""
    rollup.refresh(db, db.settings)
    d, s = with_settings(db, timezone="Asia/Kolkata")
    try:
        add_events(d, [(1, "IN", LO + 5 * HOUR_US)])
        rollup.refresh(d, s)
        assert_exact(d, "Asia/Kolkata")
    finally:
        d.dispose()


def test_fault_after_upserts_before_commit_changes_nothing(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """F2: a pass failing after its upserts, before its commit, leaves rollups and watermark untouched."""
    add_events(db, [(1, "US", LO + i * HOUR_US) for i in range(30)])
    rollup.refresh(db, db.settings)
    add_events(db, [(2, "IN", LO + i * DAY_US) for i in range(30)])
    with db.read() as conn:
        before, wm = stored(conn), store.watermark(conn)

    def boom(conn: object, high: int) -> None:
        raise RuntimeError("injected fault after the upserts")

    monkeypatch.setattr(store, "advance_watermark", boom)
    with pytest.raises(RuntimeError, match="injected"):
        rollup.refresh(db, db.settings)
    monkeypatch.undo()
    with db.read() as conn:
        assert stored(conn) == before
        assert store.watermark(conn) == wm
    rollup.refresh(db, db.settings)
    assert_exact(db, "UTC")
    with db.read() as conn:
        assert sum(stored(conn)[(Grain.YEAR, Shape.TOTAL)].values()) == 60


def test_compaction_deletes_only_folded_rows_past_horizon(db: Database) -> None:
    """Compaction removes folded raw rows past the horizon; a raw row above the watermark stays, whatever its age."""
    now = to_us(dt.datetime(2025, 6, 15, 12, tzinfo=dt.UTC))
    folded = [(1, "US", now - k * DAY_US) for k in range(0, 60, 3)]  # 20 events over 60 days
    add_events(db, folded)
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    ancient = now - 5000 * DAY_US
    add_events(db, [(2, None, ancient)])  # not folded yet
    d, s = with_settings(db, retention="raw=10d,hour=20d,day=40d")
    try:
        report = rollup.compact(d, s, now_us=now)
        assert "raw" in report.summary()
        with d.read() as conn:
            kept = raw_events(conn)
            h = store.horizons(conn)
            got = stored(conn)
        cutoff = now - 10 * DAY_US
        assert sorted(kept) == sorted([e for e in folded if e[2] >= cutoff] + [(2, None, ancient)])
        assert h["raw"] == cutoff // HOUR_US * HOUR_US
        assert h["hour"] == (now - 20 * DAY_US) // HOUR_US * HOUR_US
        assert h["day"] == bucket_interval(Grain.DAY, (now - 40 * DAY_US) // DAY_US, ZoneInfo("UTC"))[0]
        assert h["week"] == h["month"] == h["year"] == 0
        for (g, _shape), counts in got.items():
            if g is Grain.HOUR:
                assert all(bucket * HOUR_US >= h["hour"] for bucket, _, _ in counts)
            if g is Grain.DAY:
                assert min(b for b, _, _ in counts) * DAY_US >= h["day"]
            if g in (Grain.MONTH, Grain.YEAR):  # coarse grains keep everything: still the full history
                assert sum(counts.values()) == 20
        # The ancient row is folded by the next pass, then compacted by the next compaction (once a newer event
        # holds the highest id: SQLite keeps the row with the highest id, test below).
        add_events(db, [(1, "US", now)])
        rollup.refresh(d, s)
        with d.read() as conn:
            assert sum(stored(conn)[(Grain.YEAR, Shape.TOTAL)].values()) == 22
        rollup.compact(d, s, now_us=now)
        with d.read() as conn:
            assert (2, None, ancient) not in raw_events(conn)
    finally:
        d.dispose()


def test_late_events_after_compacting_every_raw_row_are_folded(db: Database) -> None:
    """Compaction of all old raw events, then late events (old instants) arrive: their ids must lie above the
    watermark, so the next pass folds them (SQLite reuses the highest rowid + 1 of a table: a compaction that
    deleted the newest-id rows would hand out ids the watermark already covers, and the events would be lost)."""
    now = to_us(dt.datetime(2025, 6, 15, 12, tzinfo=dt.UTC))
    old = [(1, "US", now - 300 * DAY_US + k * HOUR_US) for k in range(10)]
    add_events(db, old)
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    d, s = with_settings(db, retention="raw=30d")
    try:
        rollup.compact(d, s, now_us=now)
        with d.read() as conn:
            state = store.read_state(conn)
            assert state is not None
            watermark = state.watermark
            left = raw_events(conn)
        assert len(left) == (1 if db.sqlite else 0)  # SQLite keeps the row with the highest id, nothing else
        late = [(2, "KE", now - 200 * DAY_US + k * HOUR_US) for k in range(7)]
        add_events(db, late)
        with d.read() as conn:
            assert conn.execute(text("SELECT MIN(id) FROM view_events WHERE blog_id = 2")).scalar() > watermark
        rollup.catch_up(d, s, progress=False, quiet=True)
        with d.read() as conn:
            totals = stored(conn)[(Grain.YEAR, Shape.TOTAL)]
            by_blog = stored(conn)[(Grain.MONTH, Shape.BY_BLOG)]
        assert sum(totals.values()) == 17
        assert sum(v for (_b, blog, _c), v in by_blog.items() if blog == 2) == 7
    finally:
        d.dispose()


def test_default_policy_keeps_everything(db: Database) -> None:
    """No retention configured: compaction deletes nothing and horizons stay 0."""
    add_events(db, [(1, "US", LO)])
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    report = rollup.compact(db, db.settings)
    assert report.deleted == {}
    with db.read() as conn:
        assert len(raw_events(conn)) == 1
        assert set(store.horizons(conn).values()) == {0}


def test_rebuild_refused_after_raw_compaction(db: Database) -> None:
    """A rebuild from compacted raw would lose history: refused with a message that says so."""
    add_events(db, [(1, "US", LO)])
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    d, s = with_settings(db, retention="raw=1d")
    try:
        rollup.compact(d, s)
        with pytest.raises(UserError, match="compacted"):
            rollup.rebuild(d, s, progress=False)
    finally:
        d.dispose()


def test_audit_finds_and_repairs_corrupted_cells(db: Database) -> None:
    """F24: a corrupted cell and a deleted cell are found from raw and repaired; a clean audit reports ok."""
    r = random.Random(5)
    add_events(db, [(r.randint(1, 3), r.choice(["US", None]), LO + r.randrange(300 * DAY_US)) for _ in range(300)])
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    assert rollup.audit(db, db.settings, seed=1).ok
    with db.write() as conn:
        day = rollup_tables[(Grain.DAY, Shape.BY_BLOG)]
        conn.execute(update(day).values(views=day.c.views + 5))  # every day cell drifts
        month = rollup_tables[(Grain.MONTH, Shape.FULL)]
        conn.execute(month.delete())  # month cells missing: only raw-side sampling can see it
        hour = rollup_tables[(Grain.HOUR, Shape.TOTAL)]
        conn.execute(update(hour).values(views=hour.c.views - 1))  # a blog-less shape drifts too
    report = rollup.audit(db, db.settings, sample=4000, repair=False, seed=2)
    assert not report.ok and {g for g, *_ in report.drift} == {"day/by_blog", "month/full", "hour/total"}
    assert all(s - r == 5 for g, _, _, _, s, r in report.drift if g == "day/by_blog")
    assert all(r - s == 1 for g, _, _, _, s, r in report.drift if g == "hour/total")
    assert all(s == 0 and r > 0 for g, _, _, _, s, r in report.drift if g == "month/full")
    report = rollup.audit(db, db.settings, sample=4000, seed=2)
    assert report.repaired
    assert_exact(db, "UTC")
    assert rollup.audit(db, db.settings, seed=3).ok


def test_status_reports_watermark_pending_and_grains(db: Database) -> None:
    """rollupStatus data: pending raw events, the instant rollups are complete to, rows and span per grain."""
    s = rollup.status(db, db.settings)
    assert s.watermark is None and s.pending_events == 0 and s.grains[0].rows == 0
    t0 = LO + 3 * DAY_US + 5
    add_events(db, [(1, "US", t0), (1, "US", t0 + 1), (2, None, t0 + 40 * DAY_US)])
    before = store.now_us()
    rollup.refresh(db, db.settings)
    add_events(db, [(3, "IN", t0)])
    s = rollup.status(db, Settings(database_url=db.settings.db_url, retention="hour=30d"))
    assert s.pending_events == 1 and s.watermark_id == 3
    assert s.watermark is not None and before <= s.watermark <= store.now_us()
    assert s.last_run_at is not None and s.last_run_at >= s.watermark and s.last_run_events == 3
    by = {g.grain: g for g in s.grains}
    assert by["raw"].rows == 4 and by["raw"].oldest == t0 and by["raw"].newest == t0 + 40 * DAY_US
    # hour keeps totals and reader countries: 2 buckets x (1 total + 1 country) rows
    assert by["hour"].rows == 4 and by["hour"].retained_for == 30 and by["day"].retained_for is None
    assert by["hour"].oldest == t0 // HOUR_US * HOUR_US and by["day"].newest == (t0 + 40 * DAY_US) // DAY_US * DAY_US
    # year: full (1, US), (2, --); by blog 1, 2; by country US, --; one total
    assert by["year"].rows == 7


def test_sqlite_busy_for_ten_seconds(tmp_path: object) -> None:
    """F12: a writer holding SQLite for 10 s delays the pass (busy_timeout), which then completes exactly."""
    from analytics_gql.storage import schema

    s = Settings(database_url=f"sqlite:///{tmp_path}/busy.db")
    d = Database(s)
    schema.upgrade(d)
    add_events(d, [(1, "US", LO + i) for i in range(10)])
    held = threading.Event()

    def hold() -> None:
        with d.write() as conn:
            conn.execute(text("UPDATE view_events SET blog_id = blog_id WHERE id = 1"))
            held.set()
            time.sleep(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    t0 = time.monotonic()
    r = rollup.refresh(d, s)
    waited = time.monotonic() - t0
    t.join()
    assert r.events == 10 and waited >= 9
    assert_exact(d, "UTC")
    d.dispose()


def test_watermark_and_rollups_in_one_transaction(db: Database) -> None:
    """A reader never sees rollups and watermark disagree: both move in the same commit."""
    add_events(db, [(1, "US", LO + i * HOUR_US) for i in range(100)])
    d, s = with_settings(db, rollup_chunk=10)
    stop = threading.Event()
    bad: list[str] = []

    def watch() -> None:
        while not stop.is_set():
            with d.read() as conn:
                # One statement, one snapshot (db.read() is READ COMMITTED on PostgreSQL).
                wm, n, want = conn.execute(text(
                    "SELECT (SELECT watermark FROM rollup_state), (SELECT coalesce(sum(views), 0) FROM views_year), "
                    "(SELECT count(*) FROM view_events WHERE id <= (SELECT coalesce(max(watermark), 0) "
                    "FROM rollup_state))")).one()
                if n != want:
                    bad.append(f"watermark {wm} but {n} views")

    t = threading.Thread(target=watch)
    t.start()
    try:
        rollup.catch_up(d, s, progress=False, quiet=True)
    finally:
        stop.set()
        t.join()
        d.dispose()
    assert not bad
    with db.read() as conn:
        want = narrow(expected(raw_events(conn), "UTC")[Grain.YEAR], Shape.FULL)
        assert want == stored(conn)[(Grain.YEAR, Shape.FULL)]
    assert len(GRAINS) == 5


def test_idle_passes_stay_out_of_the_info_log(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    """A pass that folds events logs them at INFO; a scheduled pass with nothing to fold logs at DEBUG only."""
    add_events(db, [(1, "US", LO + i * HOUR_US) for i in range(3)])
    with caplog.at_level(logging.DEBUG, logger="analytics_gql.rollup"):
        rollup.refresh(db, db.settings)
        rollup.refresh(db, db.settings)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "analytics_gql.rollup"]
    assert [level for level, _ in lines] == [logging.INFO, logging.DEBUG]
    assert lines[0][1].startswith("folded 3 events in 1 chunk(s)")
    assert lines[1][1].startswith("folded 0 events in 0 chunk(s)")


def test_process_logging_quiets_routine_scheduler_runs() -> None:
    """The long-running commands' logging keeps APScheduler's per-run INFO lines out, and its warnings in."""
    executors = logging.getLogger("apscheduler.executors")
    saved = executors.level
    try:
        logs.configure()
        assert not executors.isEnabledFor(logging.INFO)
        assert executors.isEnabledFor(logging.WARNING)
    finally:
        executors.setLevel(saved)


# Zones whose clocks fell back across local midnight (St_Johns and Moncton changed at 00:01 local until 2011,
# Goose_Bay too, Casey jumped from +11 to +8 at 02:00): a repeated span of the previous date follows the first
# midnight, and the contract puts it in the new day ([S(D), S(D+1)) with S(D) resolved with fold=0).
FALL_BACK_ACROSS_MIDNIGHT = [("America/St_Johns", 1988), ("America/St_Johns", 2010), ("America/Moncton", 2000),
                             ("America/Goose_Bay", 1989), ("Antarctica/Casey", 2010)]


@pytest.mark.parametrize(("zone", "year"), FALL_BACK_ACROSS_MIDNIGHT)
def test_fall_back_across_midnight_follows_the_contract_periods(db: Database, zone: str, year: int) -> None:
    """F14: events around a fall-back that crosses local midnight land in the day whose contract period holds
    them, at every grain (compared with zoneinfo's datetime(D, tzinfo=zone) intervals, not the code's maths)."""
    from rollup_helpers import contract_day

    z = ZoneInfo(zone)
    lo = to_us(dt.datetime(year, 1, 1, tzinfo=dt.UTC))
    changes = [t for t, _ in offset_segments(z, lo, lo + 366 * DAY_US)[1:]]
    assert changes
    events: list[Event] = []
    for t in changes:
        events += [(1, "CA", t + k * 5 * 60_000_000) for k in range(-40, 41)]
        events += [(2, None, t + k) for k in (-1, 0, 1)]
    d, s = with_settings(db, timezone=zone, rollup_chunk=50)
    try:
        add_events(d, events)
        rollup.catch_up(d, s, progress=False, quiet=True)
        assert_exact(d, zone)
        with d.read() as conn:
            days = stored(conn)[(Grain.DAY, Shape.TOTAL)]
    finally:
        d.dispose()
    want: dict[int, int] = {}
    for _b, _c, t in events:
        k = (contract_day(t, z) - dt.date(1970, 1, 1)).days
        want[k] = want.get(k, 0) + 1
    assert {b: n for (b, _, _), n in days.items()} == want


def test_compaction_cuts_each_grain_exactly_at_its_horizon(db: Database) -> None:
    """Compaction at an instant off the hour, in a zone whose days are not UTC days: each horizon is the start of
    the bucket holding the cutoff (raw: its UTC hour), every bucket from there on is kept whole and exact, and
    every bucket before it is gone (compared with zoneinfo's periods, not the code's bucket maths)."""
    from rollup_helpers import contract_day, reference_key

    zone = "America/New_York"
    z = ZoneInfo(zone)
    now = to_us(dt.datetime(2025, 3, 20, 13, 34, 56, 789_012, tzinfo=dt.UTC))
    r = random.Random(11)
    events: list[Event] = [(r.randint(1, 3), r.choice([None, "US"]), now - r.randrange(120 * DAY_US))
                           for _ in range(400)]
    cutoffs = {"raw": now - 10 * DAY_US, "hour": now - 20 * DAY_US, "day": now - 45 * DAY_US}
    # Events exactly at and around each cutoff's bucket start.
    for c in cutoffs.values():
        hour = c // HOUR_US * HOUR_US
        d = contract_day(c, z)
        day = to_us(dt.datetime(d.year, d.month, d.day, tzinfo=z))
        events += [(1, "US", t) for t in (hour - 1, hour, hour + 1, day - 1, day, day + 1)]
    d, s = with_settings(db, timezone=zone, retention="raw=10d,hour=20d,day=45d")
    try:
        add_events(d, events)
        rollup.catch_up(d, s, progress=False, quiet=True)
        rollup.compact(d, s, now_us=now)
        with d.read() as conn:
            h = store.horizons(conn)
            kept_raw = raw_events(conn)
            got = stored(conn)
    finally:
        d.dispose()
    day_c = contract_day(cutoffs["day"], z)
    want_h = {"raw": cutoffs["raw"] // HOUR_US * HOUR_US, "hour": cutoffs["hour"] // HOUR_US * HOUR_US,
              "day": to_us(dt.datetime(day_c.year, day_c.month, day_c.day, tzinfo=z)),
              "week": 0, "month": 0, "year": 0}
    assert h == want_h
    last = events[-1]  # the highest id (ids follow insertion order), which SQLite keeps whatever its age
    want_raw = [e for e in events if e[2] >= want_h["raw"]]
    if db.sqlite and last[2] < want_h["raw"]:
        want_raw.append(last)
    assert Counter(kept_raw) == Counter(want_raw)
    full = expected(events, zone)
    for (g, shape), counts in got.items():
        first = reference_key(g, want_h[g.value], z) if want_h[g.value] else 0
        assert counts == narrow(+Counter({k: v for k, v in full[g].items() if k[0] >= first}), shape), (g, shape)


def test_horizons_only_move_forward(db: Database) -> None:
    """A longer policy, or a compaction with an earlier clock, never moves a horizon back (the data is gone)."""
    now = to_us(dt.datetime(2025, 6, 15, 12, 30, tzinfo=dt.UTC))
    add_events(db, [(1, "US", now - k * DAY_US) for k in range(60)])
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    d, s = with_settings(db, retention="raw=10d,hour=20d,day=40d")
    d2, s2 = with_settings(db, retention="raw=30d,hour=50d,day=55d,week=70d")
    try:
        rollup.compact(d, s, now_us=now)
        with d.read() as conn:
            first = store.horizons(conn)
        rollup.compact(d2, s2, now_us=now)
        rollup.compact(d, s, now_us=now - 5 * DAY_US)
        with d.read() as conn:
            after = store.horizons(conn)
    finally:
        d.dispose()
        d2.dispose()
    assert first["raw"] == (now - 10 * DAY_US) // HOUR_US * HOUR_US
    assert first["hour"] == (now - 20 * DAY_US) // HOUR_US * HOUR_US
    assert first["day"] == (now - 40 * DAY_US) // DAY_US * DAY_US
    week_start = (now - 70 * DAY_US) // DAY_US
    week_start -= (week_start + 3) % 7  # the Monday (1970-01-01 was a Thursday)
    assert after == {**first, "week": week_start * DAY_US}


def test_audit_leaves_compacted_history_alone(db: Database) -> None:
    """After raw events are compacted, the audit recomputes only cells raw still covers: the rollups' history
    (which raw no longer holds) is neither reported as drift nor 'repaired' to zero."""
    now = to_us(dt.datetime(2025, 6, 15, 12, tzinfo=dt.UTC))
    r = random.Random(4)
    events: list[Event] = [(r.randint(1, 3), r.choice([None, "US"]), now - r.randrange(400 * DAY_US))
                           for _ in range(300)]
    add_events(db, events)
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    d, s = with_settings(db, retention="raw=30d")
    try:
        rollup.compact(d, s, now_us=now)
        with d.read() as conn:
            before = stored(conn)
        report = rollup.audit(d, s, sample=4000, seed=1)
        with d.read() as conn:
            after = stored(conn)
    finally:
        d.dispose()
    assert report.ok and report.checked > 0
    assert after == before
    assert sum(after[(Grain.YEAR, Shape.TOTAL)].values()) == 300


def test_chunk_ending_exactly_at_a_clock_change(db: Database) -> None:
    """F14: a chunk whose newest event lies exactly on a clock change (Santiago falls back at local 24:00: that
    instant still belongs to the previous day) uses the offset in force at that very instant."""
    zone = "America/Santiago"
    z = ZoneInfo(zone)
    lo = to_us(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    changes = [t for t, _ in offset_segments(z, lo, lo + 366 * DAY_US)[1:]]
    events: list[Event] = []
    for t in changes:
        events += [(1, "CL", t - 5 * HOUR_US), (1, "CL", t)]  # one chunk each: the change is its max instant
    d, s = with_settings(db, timezone=zone, rollup_chunk=2)
    try:
        add_events(d, events)
        rollup.catch_up(d, s, progress=False, quiet=True)
        assert_exact(d, zone)
    finally:
        d.dispose()


def test_status_numbers_are_exact(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """rollupStatus: the watermark instant only once a pass caught up, pending events counted over id gaps left
    by compaction, rows per grain = rows of all its tables, oldest/newest = local bucket starts (Kolkata)."""
    from rollup_helpers import contract_day

    zone = "Asia/Kolkata"
    z = ZoneInfo(zone)
    now = to_us(dt.datetime(2025, 6, 15, 12, 10, tzinfo=dt.UTC))
    r = random.Random(8)
    events: list[Event] = [(r.randint(1, 4), r.choice([None, "IN", "US"]), now - r.randrange(900 * DAY_US))
                           for _ in range(120)]
    d, s = with_settings(db, timezone=zone, rollup_chunk=50, retention="raw=100d")
    try:
        add_events(d, events)
        real_apply = store.fold_apply
        calls: list[int] = []

        def apply_then_fail(conn: object) -> None:
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("injected fault in the second chunk")
            real_apply(conn)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "fold_apply", apply_then_fail)
        with pytest.raises(RuntimeError, match="injected"):
            rollup.refresh(d, s)
        monkeypatch.undo()
        st1 = rollup.status(d, s)
        # The first chunk committed, but the pass never caught up: no instant can be promised yet.
        assert (st1.watermark, st1.watermark_id, st1.pending_events, st1.last_run_at) == (None, 50, 70, None)
        rollup.catch_up(d, s, progress=False, quiet=True)
        rollup.compact(d, s, now_us=now)
        late: list[Event] = [(2, "IN", now - 5 * DAY_US), (3, None, now - 400 * DAY_US)]
        add_events(d, late)
        st2 = rollup.status(d, s)
    finally:
        d.dispose()
    horizon = (now - 100 * DAY_US) // HOUR_US * HOUR_US
    kept = [e for e in events if e[2] >= horizon] + late
    if db.sqlite and events[-1][2] < horizon:
        kept.append(events[-1])  # the highest id stays on SQLite
    assert (st2.watermark_id, st2.pending_events) == (120, 2)
    by = {g.grain: g for g in st2.grains}
    assert (by["raw"].rows, by["raw"].oldest, by["raw"].newest) == (
        len(kept), min(e[2] for e in kept), max(e[2] for e in kept))
    assert by["raw"].retained_for == 100 and by["day"].retained_for is None
    full = expected(events, zone)
    for g in GRAINS:
        rows = sum(len(narrow(full[g], shape)) for (gg, shape) in rollup_tables if gg is g)
        first = min(e[2] for e in events)
        last = max(e[2] for e in events)
        if g is Grain.HOUR:
            span = (first // HOUR_US * HOUR_US, last // HOUR_US * HOUR_US)
        else:
            starts = []
            for t in (first, last):
                day = contract_day(t, z)
                begin = {Grain.DAY: day, Grain.WEEK: day - dt.timedelta(days=day.weekday()),
                         Grain.MONTH: day.replace(day=1), Grain.YEAR: day.replace(month=1, day=1)}[g]
                starts.append(to_us(dt.datetime(begin.year, begin.month, begin.day, tzinfo=z)))
            span = (starts[0], starts[1])
        assert (by[g.value].rows, by[g.value].oldest, by[g.value].newest) == (rows, *span), g


def test_rebuild_after_grain_compaction_restores_every_grain(db: Database) -> None:
    """Hours compacted, raw kept (ANALYTICS_RETENTION=hour=20d): a zone rebuild recomputes every grain from raw,
    so the hour horizon is forgotten and old hours are back, exact in the new zone."""
    now = to_us(dt.datetime(2025, 6, 15, 12, tzinfo=dt.UTC))
    add_events(db, [(1, "US", now - k * 7 * HOUR_US) for k in range(200)])
    d, s = with_settings(db, retention="hour=20d")
    d2, s2 = with_settings(db, timezone="Asia/Kolkata", retention="hour=20d")
    try:
        rollup.catch_up(d, s, progress=False, quiet=True)
        rollup.compact(d, s, now_us=now)
        with d.read() as conn:
            assert store.horizons(conn)["hour"] == (now - 20 * DAY_US) // HOUR_US * HOUR_US
        rollup.rebuild(d2, s2, progress=False)
        with d2.read() as conn:
            assert set(store.horizons(conn).values()) == {0}
        assert_exact(d2, "Asia/Kolkata")
    finally:
        d.dispose()
        d2.dispose()


class _Progress:
    """Records what a pass reports to a progress bar."""

    def __init__(self) -> None:
        self.total = 0
        self.updates: list[int] = []

    def update(self, n: int) -> None:
        self.updates.append(n)


def test_chunks_are_bounded_and_each_moves_the_watermark(db: Database) -> None:
    """ANALYTICS_ROLLUP_CHUNK=10 over 95 events: ten transactions of at most 10 ids, the last one 5."""
    add_events(db, [(1 + i % 3, "US", LO + i * HOUR_US) for i in range(95)])
    d, s = with_settings(db, rollup_chunk=10)
    seen: list[int] = []
    real_advance = store.advance_watermark

    def advance(conn: object, high: int) -> None:
        seen.append(high)
        real_advance(conn, high)  # type: ignore[arg-type]

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store, "advance_watermark", advance)
            bar = _Progress()
            r = rollup.refresh(d, s, wait=True, progress=bar)
        assert (r.events, r.chunks, r.watermark, r.target, r.caught_up) == (95, 10, 95, 95, True)
        assert seen == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
        assert (bar.total, bar.updates) == (95, [10] * 9 + [5])
        assert_exact(d, "UTC")
    finally:
        d.dispose()


def test_audit_ignores_events_not_yet_folded(db: Database) -> None:
    """Events above the watermark are not in the rollups yet: the audit counts raw events up to the watermark
    only, so pending events are neither drift nor 'repaired' into the rollups (the next pass would add them again)."""
    r = random.Random(6)
    events: list[Event] = [(r.randint(1, 3), r.choice(["US", None]), LO + r.randrange(60 * DAY_US))
                           for _ in range(200)]
    add_events(db, events)
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    add_events(db, events[:80])  # the same cells again, pending
    report = rollup.audit(db, db.settings, sample=4000, seed=4)
    assert report.ok and report.checked > 0
    rollup.refresh(db, db.settings)
    assert_exact(db, "UTC")
    with db.read() as conn:
        assert sum(stored(conn)[(Grain.YEAR, Shape.TOTAL)].values()) == 280


def _sqlite(tmp_path: object, **kw: object) -> tuple[Database, Settings]:
    from analytics_gql.storage import schema

    s = Settings(database_url=f"sqlite:///{tmp_path}/two-phase.db", **kw)
    d = Database(s)
    schema.upgrade(d)
    return d, s


def test_sqlite_writers_go_on_while_a_pass_computes_its_deltas(tmp_path: object) -> None:
    """SQLite: the deltas are computed outside the write lock, so a writer with a 0.2 s busy timeout gets in while
    the pass reads and groups; its event is folded by the next pass, exactly once."""
    import sqlite3

    d, s = _sqlite(tmp_path)
    add_events(d, [(1 + i % 3, "US", LO + i * HOUR_US) for i in range(40)])
    real_prepare = store.fold_prepare
    wrote: list[float] = []

    def prepare_then_write(conn: object, zone: ZoneInfo, low: int, high: int) -> int:
        n = real_prepare(conn, zone, low, high)  # type: ignore[arg-type]
        if not wrote:
            other = sqlite3.connect(f"{tmp_path}/two-phase.db", timeout=0.2, isolation_level=None)
            t0 = time.monotonic()
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO view_events (blog_id, viewer_country, viewed_at) VALUES (2, 'IN', ?)", (LO,))
            other.execute("COMMIT")
            wrote.append(time.monotonic() - t0)
            other.close()
        return n

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store, "fold_prepare", prepare_then_write)
            r = rollup.refresh(d, s)
        assert wrote and wrote[0] < 0.2
        # The pass had read its target (40) before the write: the new event waits for the next pass.
        assert (r.events, r.watermark, r.caught_up) == (40, 40, True)
        assert rollup.status(d, s).pending_events == 1
        assert rollup.refresh(d, s).events == 1
        assert_exact(d, "UTC")
    finally:
        d.dispose()


@pytest.mark.parametrize("other_catches_up", [False, True])
def test_sqlite_pass_that_lost_the_race_recomputes_under_the_lock(tmp_path: object, other_catches_up: bool) -> None:
    """SQLite: another pass moves the watermark between this pass's deltas and its lock. The deltas are thrown
    away (never added: nothing twice) and the chunk is recomputed from the new watermark under the lock."""
    d, s = _sqlite(tmp_path, rollup_chunk=50)
    add_events(d, [(1 + i % 3, "US" if i % 2 else None, LO + i * HOUR_US) for i in range(120)])
    real_prepare = store.fold_prepare
    real_drop = store.drop_deltas
    prepared: list[tuple[int, int]] = []
    dropped: list[int] = []

    def prepare_then_race(conn: object, zone: ZoneInfo, low: int, high: int) -> int:
        n = real_prepare(conn, zone, low, high)  # type: ignore[arg-type]
        prepared.append((low, high))
        if len(prepared) == 1:  # another pass folds meanwhile, under the lock, from another connection
            with d.write() as other:
                top = 120 if other_catches_up else 50
                store.ensure_state(other, "UTC")
                real_prepare(other, zone, 0, top)
                store.fold_apply(other)
                store.advance_watermark(other, top)
        return n

    def drop(conn: object) -> None:
        dropped.append(1)
        real_drop(conn)  # type: ignore[arg-type]

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store, "fold_prepare", prepare_then_race)
            mp.setattr(store, "drop_deltas", drop)
            r = rollup.refresh(d, s)
        if other_catches_up:
            # Nothing left to fold: the unused deltas of (0, 50] are dropped, nothing is added.
            assert (r.events, r.chunks, r.watermark) == (0, 0, 120) and dropped
            assert prepared == [(0, 50)]
        else:
            # (0, 50] prepared outside the lock went unused; (50, 100] was recomputed under it, then (100, 120].
            assert (r.events, r.watermark) == (70, 120)
            assert prepared[:2] == [(0, 50), (50, 100)]
        assert_exact(d, "UTC")
    finally:
        d.dispose()


def test_sqlite_a_failed_chunk_leaves_no_delta_tables_on_pooled_connections(tmp_path: object) -> None:
    """SQLite temp tables outlive transactions: a chunk that fails after its deltas were computed (outside the lock)
    and after they were added (the drop rolled back with the rest) must not leave them on a pooled connection."""
    d, s = _sqlite(tmp_path)
    add_events(d, [(1, "US", LO + i * HOUR_US) for i in range(30)])

    def boom(conn: object, high: int) -> None:
        raise RuntimeError("injected fault before the watermark move")

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store, "advance_watermark", boom)
            with pytest.raises(RuntimeError, match="injected"):
                rollup.refresh(d, s)
        pool = d.engine.pool
        conns = [d.engine.connect() for _ in range(pool.checkedin())]  # type: ignore[attr-defined]
        try:
            for c in conns:
                names = c.exec_driver_sql("SELECT name FROM sqlite_temp_master WHERE type = 'table'").fetchall()
                assert names == []
        finally:
            for c in conns:
                c.close()
        assert rollup.refresh(d, s).events == 30
        assert_exact(d, "UTC")
    finally:
        d.dispose()


def test_sqlite_concurrent_writers_and_two_phase_passes_are_exact(tmp_path: object) -> None:
    """R1 on SQLite with deltas computed outside the write lock: 3 writers in small transactions while 2 threads
    run passes of 300-id chunks, so passes race each other between their two phases; afterwards exact."""
    d, s = _sqlite(tmp_path, rollup_chunk=300)
    real_prepare = store.fold_prepare
    prepares: list[int] = []

    def counting_prepare(conn: object, zone: ZoneInfo, low: int, high: int) -> int:
        prepares.append(high - low)
        return real_prepare(conn, zone, low, high)  # type: ignore[arg-type]

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store, "fold_prepare", counting_prepare)
            # 200 transactions x 10 views x 3 writers = 6,000
            folded = writers_and_passes(d, s, writers=3, transactions=200, blogs=3, lo=LO)
        assert sum(1 for n in folded if n) >= 3, "passes must have run while writers were writing"
        rollup.catch_up(d, s, progress=False, quiet=True)
        with d.read() as conn:
            assert len(raw_events(conn)) == 6_000
        assert_exact(d, "UTC")
        assert_readers_exact(d, "UTC")
        assert sum(folded) <= 6_000 and len(prepares) >= 2
    finally:
        d.dispose()
