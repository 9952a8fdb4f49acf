"""`analytics-gql audit` and `analytics-gql compact` run from the venv on both databases: exit statuses, the exact
lines they print, and exactly what they change."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from rollup_helpers import Event, add_events, assert_exact, expected, narrow, raw_events, stored
from sqlalchemy import update

from analytics_gql import rollup
from analytics_gql.domain.calendar import DAY_US, HOUR_US, Grain
from analytics_gql.storage import rollups as store
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import Shape, rollup_tables

CLI = str(Path(sys.executable).with_name("analytics-gql"))
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    full.update({f"ANALYTICS_{k.upper()}": v for k, v in env.items()})
    return subprocess.run([CLI, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def iso(us: int) -> str:
    return (_EPOCH + dt.timedelta(microseconds=us)).isoformat()


def test_audit_no_repair_exits_3_and_changes_nothing_then_audit_repairs(db: Database, tmp_path: Path) -> None:
    """One drifted day cell: `audit --no-repair` names it, exits 3 and leaves it as it was; `audit` repairs it
    (exit 0) and the rollups are exact again; a third audit finds no drift. The data (40 events over three days of
    one week) is small enough that the default sample recomputes every stored cell, so the counts are exact."""
    url = db.settings.db_url
    lo = 1_736_208_000_000_000  # 2025-01-07, a Tuesday
    evs: list[Event] = [(1 + i % 3, ("US", None, "IN")[i % 3], lo + (i * 7919 % 72) * HOUR_US + i) for i in range(40)]
    add_events(db, evs)
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    assert_exact(db, "UTC")
    with db.read() as conn:
        cells = sum(len(counts) for counts in stored(conn).values())
    day_totals = narrow(expected(evs, "UTC")[Grain.DAY], Shape.TOTAL)
    (bucket, _, _), views = sorted(day_totals.items())[1]
    table = rollup_tables[(Grain.DAY, Shape.TOTAL)]
    with db.write() as conn:
        conn.execute(update(table).where(table.c.bucket == bucket).values(views=views + 4))
    with db.read() as conn:
        corrupted = stored(conn)
    assert corrupted[(Grain.DAY, Shape.TOTAL)][(bucket, None, None)] == views + 4

    done = run(tmp_path, "audit", "--no-repair", database_url=url)
    line = f"audit: 1 of {cells} cells drifted, NOT repaired (--no-repair): day/total[{bucket}] {views + 4}->{views}"
    assert (done.returncode, done.stdout) == (3, line + "\n"), done.stderr
    assert "Traceback" not in done.stderr
    with db.read() as conn:
        assert stored(conn) == corrupted
        first_audit = store.read_state(conn).last_audit_at  # type: ignore[union-attr]
    assert first_audit is not None

    done = run(tmp_path, "audit", database_url=url)
    line = f"audit: 1 of {cells} cells drifted, repaired: day/total[{bucket}] {views + 4}->{views}"
    assert (done.returncode, done.stdout) == (0, line + "\n"), done.stderr
    assert_exact(db, "UTC")
    with db.read() as conn:
        assert stored(conn)[(Grain.DAY, Shape.TOTAL)][(bucket, None, None)] == views
        assert store.read_state(conn).last_audit_at > first_audit  # type: ignore[union-attr,operator]

    done = run(tmp_path, "audit", database_url=url)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"audit: {cells} cells recomputed from raw, no drift\n",
                                                           "")


def test_compact_deletes_exactly_what_the_retention_policy_says(db: Database, tmp_path: Path) -> None:
    """Without ANALYTICS_RETENTION `compact` deletes nothing. With raw=30d,hour=60d it deletes the folded raw rows
    older than the hour-aligned now - 30 days (keeping an older row not folded yet) and the hour cells before
    now - 60 days, leaves day and coarser grains whole, records both horizons and prints them. Every event lies at
    least 12 h from a horizon, so the command's clock, seconds after ours, draws the same lines."""
    url = db.settings.db_url
    now = store.now_us()
    ages = [0.5, 10, 29.5, 30.5, 59.5, 60.5, 90]  # days
    folded: list[Event] = [(1 + i % 2, ("US", "IN", None)[i % 3], now - int(a * DAY_US)) for i, a in enumerate(ages)]
    add_events(db, folded)
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    unfolded: Event = (7, "KE", now - 300 * DAY_US)
    add_events(db, [unfolded])
    with db.read() as conn:
        before = stored(conn)
        raw_before = raw_events(conn)

    done = run(tmp_path, "compact", database_url=url)
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "compaction: no retention policy set (ANALYTICS_RETENTION), nothing deleted\n", "")
    with db.read() as conn:
        assert sorted(raw_events(conn), key=str) == sorted(raw_before, key=str) and stored(conn) == before
        assert set(store.horizons(conn).values()) == {0}

    t0 = store.now_us()
    done = run(tmp_path, "compact", database_url=url, retention="raw=30d,hour=60d")
    t1 = store.now_us()
    with db.read() as conn:
        kept = raw_events(conn)
        after = stored(conn)
        h = store.horizons(conn)
        state = store.read_state(conn)
    assert (t0 - 30 * DAY_US) // HOUR_US * HOUR_US <= h["raw"] <= (t1 - 30 * DAY_US) // HOUR_US * HOUR_US
    assert (t0 - 60 * DAY_US) // HOUR_US * HOUR_US <= h["hour"] <= (t1 - 60 * DAY_US) // HOUR_US * HOUR_US
    assert {g: v for g, v in h.items() if g not in ("raw", "hour")} == {"day": 0, "week": 0, "month": 0, "year": 0}
    assert sorted(kept, key=str) == sorted([*folded[:3], unfolded], key=str)
    hours = expected(folded, "UTC")[Grain.HOUR]
    deleted_hour_cells = 0
    for shape in (Shape.TOTAL, Shape.BY_COUNTRY):
        want = narrow(hours, shape)
        old = {k for k in want if k[0] * HOUR_US < h["hour"]}
        assert len(old) == 2  # the events 60.5 and 90 days old
        deleted_hour_cells += len(old)
        assert after[(Grain.HOUR, shape)] == {k: v for k, v in want.items() if k not in old}
    for key, counts in before.items():
        if key[0] is not Grain.HOUR:
            assert after[key] == counts
    assert (done.returncode, done.stdout, done.stderr) == (
        0, f"compaction: raw: 4 rows deleted, complete from {iso(h['raw'])}; "
           f"hour: {deleted_hour_cells} rows deleted, complete from {iso(h['hour'])}\n", "")
    assert state is not None and state.last_compact_at is not None and t0 <= state.last_compact_at <= t1
