"""PostgreSQL-only rollup faults: concurrent writers and passes, out-of-order commits, long COPY, hung statements."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import pg_server
from rollup_helpers import (
    add_events,
    assert_exact,
    assert_readers_exact,
    bulk_events,
    raw_events,
    stored,
    writers_and_passes,
)
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from analytics_gql import rollup
from analytics_gql.domain.calendar import DAY_US, HOUR_US
from analytics_gql.settings import Settings
from analytics_gql.storage import rollups as store
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import Shape

LO = 788_918_400_000_000  # 1995-01-01


@pytest.fixture
def pg() -> Iterator[Database]:
    """A migrated throw-away PostgreSQL database."""
    srv = pg_server()
    name = srv.new_database()
    d = Database(Settings(database_url=srv.url(name)), pool_size=8)
    try:
        yield d
    finally:
        d.dispose()
        srv.drop(name)


def test_concurrent_writers_and_passes_are_exact(pg: Database) -> None:
    """Acceptance 2 / R1 / F4: 4 writers x small transactions (50,000 views) while 2 threads run passes."""
    # 1250 transactions x 10 views x 4 writers = 50,000
    folded = writers_and_passes(pg, pg.settings, writers=4, transactions=1250, blogs=40, lo=LO)
    assert sum(1 for n in folded if n) >= 3, "passes must have run while writers were writing"
    rollup.catch_up(pg, pg.settings, progress=False, quiet=True)
    with pg.read() as conn:
        assert len(raw_events(conn)) == 50_000
        assert sum(stored(conn)[(store.Grain.DAY, Shape.TOTAL)].values()) == 50_000
    assert_exact(pg, "UTC")
    assert_readers_exact(pg, "UTC")  # issue 12: reader sets of racing passes, each viewer counted in its cells


def test_lower_id_committed_after_higher_id_is_not_skipped(pg: Database) -> None:
    """F1: a writer holds id n uncommitted while id n+1 commits; the pass never moves past n, then folds both."""
    with pg.engine.connect() as slow:
        tx = slow.begin()
        slow.execute(text("INSERT INTO view_events (blog_id, viewer_country, viewed_at) VALUES (1, 'US', :t)"),
                     {"t": LO})
        add_events(pg, [(2, "IN", LO + HOUR_US)])  # a higher id, committed first
        t0 = time.monotonic()
        r = rollup.refresh(pg, pg.settings)
        assert time.monotonic() - t0 < 2
        assert r.skipped and "writers busy" in r.skipped
        with pg.read() as conn:
            assert store.watermark(conn) == 0
        tx.commit()
    rollup.refresh(pg, pg.settings)
    assert_exact(pg, "UTC")
    with pg.read() as conn:
        assert sum(stored(conn)[(store.Grain.HOUR, Shape.TOTAL)].values()) == 2


def test_long_copy_during_a_pass_never_stalls_ingest(pg: Database) -> None:
    """F5 / R6: a COPY held open for 2 s: the pass skips its round, small inserts never wait > lock_timeout."""
    bulk_events(pg, 1000)
    copying = threading.Event()
    latencies: list[float] = []
    stop = threading.Event()

    def long_copy() -> None:
        raw = pg.engine.raw_connection()
        try:
            cur = raw.cursor()
            with cur.copy("COPY view_events (blog_id, viewer_country, viewed_at) FROM STDIN") as copy:
                for i in range(20):
                    for j in range(500):
                        copy.write_row((7, "KE", LO + (i * 500 + j) * 1000))
                    copying.set()
                    time.sleep(0.1)
            raw.commit()
        finally:
            raw.close()

    def small_inserts() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            add_events(pg, [(8, "US", LO)])
            latencies.append(time.monotonic() - t0)
            time.sleep(0.01)

    c = threading.Thread(target=long_copy)
    s = threading.Thread(target=small_inserts)
    c.start()
    copying.wait()
    s.start()
    time.sleep(0.2)
    results = []
    for _ in range(3):
        results.append(rollup.refresh(pg, pg.settings))
        time.sleep(0.1)
    c.join()
    stop.set()
    s.join()
    assert all(r.skipped for r in results)
    # The lock request waits at most lock_timeout (200 ms) and then gives up; without it, inserts queued behind the
    # pass's lock request would wait for the COPY's commit (1.5 s or more). 1 s leaves room for a loaded machine.
    assert max(latencies) < 1.0, max(latencies)
    rollup.catch_up(pg, pg.settings, progress=False, quiet=True)
    with pg.read() as conn:
        assert sum(stored(conn)[(store.Grain.YEAR, Shape.TOTAL)].values()) == 1000 + 10_000 + len(latencies)
    assert_exact(pg, "UTC")


def test_hung_statement_is_cancelled_and_changes_nothing(pg: Database) -> None:
    """F10: a pass blocked on a locked rollup table hits statement_timeout, rolls back, and the next pass is exact."""
    s = Settings(database_url=pg.settings.db_url, statement_timeout_ms=500)
    d = Database(s)
    add_events(d, [(1, "US", LO + i * HOUR_US) for i in range(20)])
    try:
        with pg.engine.connect() as locker:
            tx = locker.begin()
            locker.execute(text("LOCK TABLE views_day_total IN ACCESS EXCLUSIVE MODE"))
            t0 = time.monotonic()
            with pytest.raises(OperationalError, match="statement timeout"):
                rollup.refresh(d, s)
            assert time.monotonic() - t0 < 5
            tx.rollback()
        with d.read() as conn:
            assert store.watermark(conn) == 0
            assert sum(stored(conn)[(store.Grain.HOUR, Shape.TOTAL)].values()) == 0
        rollup.refresh(d, s)
        assert_exact(d, "UTC")
    finally:
        d.dispose()


def test_connection_killed_mid_pass(pg: Database) -> None:
    """F11 (server side): the pass's backend terminated mid-transaction leaves nothing half-done."""
    bulk_events(pg, 60_000)
    s = Settings(database_url=pg.settings.db_url, rollup_chunk=15_000)
    d = Database(s)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            rollup.catch_up(d, s, progress=False, quiet=True)
        except BaseException as e:  # noqa: BLE001
            failures.append(e)

    t = threading.Thread(target=run)
    t.start()
    killed = 0
    deadline = time.monotonic() + 30
    while not killed and time.monotonic() < deadline and t.is_alive():
        with pg.engine.connect() as c:
            wm = c.execute(text("SELECT coalesce(max(watermark), 0) FROM rollup_state")).scalar()
            if wm:  # the first chunk committed: the next one is in flight
                killed = c.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND query ILIKE '%rollup%'")).scalar() or 0
        time.sleep(0.005)
    t.join()
    d.dispose()
    with pg.read() as conn:
        wm = store.watermark(conn)
    assert killed and failures and wm < 60_000, (killed, failures, wm)
    assert_exact(pg, "UTC")
    rollup.catch_up(pg, pg.settings, progress=False, quiet=True)
    assert_exact(pg, "UTC")
    with pg.read() as conn:
        assert sum(stored(conn)[(store.Grain.MONTH, Shape.TOTAL)].values()) == 60_000


def test_a_long_pass_never_stalls_ingest(pg: Database) -> None:
    """R6: the EXCLUSIVE lock that fixes safe_high is released before the fold (its own short transaction), so
    small inserts keep flowing while a pass folds a large backlog."""
    bulk_events(pg, 300_000)
    latencies: list[float] = []
    stop = threading.Event()
    started = threading.Event()

    def small_inserts() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            add_events(pg, [(8, "US", LO)])
            latencies.append(time.monotonic() - t0)
            started.set()
            time.sleep(0.01)

    s = threading.Thread(target=small_inserts)
    s.start()
    started.wait()
    t0 = time.monotonic()
    try:
        r = rollup.refresh(pg, pg.settings, wait=True)
    finally:
        took = time.monotonic() - t0
        stop.set()
        s.join()
    assert r.caught_up and r.events >= 300_000
    # A stall would last about as long as the pass: inserts waited at most a small part of it (and under 1 s).
    assert len(latencies) > 20 and max(latencies) < min(1.0, took / 2), (took, max(latencies))
    rollup.catch_up(pg, pg.settings, progress=False, quiet=True)
    with pg.read() as conn:
        assert sum(stored(conn)[(store.Grain.YEAR, Shape.TOTAL)].values()) == 300_000 + len(latencies)


def test_rollup_command_gives_up_with_exit_1_while_writers_stay_busy(pg: Database) -> None:
    """`analytics-gql rollup --wait S`: a writer holding view_events for longer than S makes the command fail
    (exit 1, saying why) instead of reporting success; once the writer commits it folds everything, exit 0."""
    add_events(pg, [(1, "US", LO + i * HOUR_US) for i in range(5)])
    env = {**os.environ, "ANALYTICS_DATABASE_URL": pg.settings.db_url}
    cli = [str(Path(sys.executable).with_name("analytics-gql")), "rollup", "--wait", "1"]
    with pg.engine.connect() as writer:
        tx = writer.begin()
        writer.execute(text("INSERT INTO view_events (blog_id, viewer_country, viewed_at) VALUES (2, 'IN', :t)"),
                       {"t": LO + DAY_US})  # uncommitted: holds ROW EXCLUSIVE on view_events
        t0 = time.monotonic()
        busy = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
        waited = time.monotonic() - t0
        tx.commit()
    assert busy.returncode == 1, busy
    assert "writers kept the raw table busy for 1 s" in busy.stdout
    assert waited < 30
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    assert "folded 6 events" in done.stdout
    assert_exact(pg, "UTC")


def test_application_connections_run_without_jit(pg: Database) -> None:
    """The API's short statements are never JIT-compiled: an estimate far above jit_above_cost made a 1.5 ms read of
    the last hour's raw events compile for 70 ms. Reads and writes alike."""
    with pg.read() as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
    with pg.write() as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar() == "off"


@contextmanager
def pass_lock_held(pg: Database) -> Iterator[None]:
    """Another session holds the pass lock in an open transaction (as a running pass, compaction or audit does)."""
    with pg.engine.connect() as holder:
        tx = holder.begin()
        try:
            holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": store.PASS_LOCK_KEY})
            yield
        finally:
            tx.rollback()  # ends the transaction, and the transaction-scoped lock with it


def test_refresh_skips_while_another_connection_holds_the_pass_lock(pg: Database) -> None:
    """A job's pass (wait=False) finds the pass lock held by another session's open transaction: it skips with
    "another pass is running" and moves nothing; once the lock is released the next pass folds everything, exactly."""
    first = [(1, "US", LO + k * HOUR_US) for k in range(10)]
    add_events(pg, first)
    assert rollup.refresh(pg, pg.settings).events == 10
    second = [(2, None, LO + k * DAY_US + 7) for k in range(25)]
    add_events(pg, second)
    with pg.read() as conn:
        before = stored(conn)
        wm = store.watermark(conn)
        top = store.max_event_id(conn)
    assert wm == top - 25
    with pass_lock_held(pg):
        result = rollup.refresh(pg, pg.settings, wait=False)
        assert (result.skipped, result.events, result.chunks, result.caught_up) == (
            "another pass is running", 0, 0, False)
        with pg.read() as conn:
            assert store.watermark(conn) == wm and stored(conn) == before
            assert store.status(conn).pending_events == 25
    result = rollup.refresh(pg, pg.settings, wait=False)
    assert (result.skipped, result.events, result.chunks, result.watermark) == (None, 25, 1, top)
    assert_exact(pg, "UTC")
    with pg.read() as conn:
        assert store.watermark(conn) == top
        assert sum(stored(conn)[(store.Grain.YEAR, Shape.TOTAL)].values()) == 35


def test_waiting_refresh_queues_behind_the_pass_lock(pg: Database) -> None:
    """The CLI's pass (wait=True) does not skip: it waits for the lock, then folds everything."""
    add_events(pg, [(3, "IN", LO + k * HOUR_US) for k in range(12)])
    done: list[rollup.PassResult] = []
    waiter = threading.Thread(target=lambda: done.append(rollup.refresh(pg, pg.settings, wait=True)))
    with pass_lock_held(pg):
        waiter.start()
        time.sleep(1.0)
        alive = waiter.is_alive()
        with pg.read() as conn:
            wm = store.watermark(conn)
    waiter.join(30)
    assert alive and wm == 0  # it was queued behind the lock, having folded nothing
    assert not waiter.is_alive()
    assert [(r.skipped, r.events) for r in done] == [(None, 12)]
    assert_exact(pg, "UTC")
