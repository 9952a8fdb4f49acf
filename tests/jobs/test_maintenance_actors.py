"""compact_rollups and audit_rollups run by the in-process broker's worker, on both databases: the retention
policy deletes exactly the folded raw rows past the horizon and records it; the audit repairs a corrupted rollup."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "db"))
from rollup_helpers import Event, add_events, assert_exact, expected, narrow, raw_events, stored  # noqa: E402
from sqlalchemy import select, update  # noqa: E402

from analytics_gql import rollup  # noqa: E402
from analytics_gql.domain.calendar import DAY_US, HOUR_US, Grain  # noqa: E402
from analytics_gql.jobs import runtime  # noqa: E402
from analytics_gql.jobs.actors import QUEUE  # noqa: E402
from analytics_gql.settings import Settings  # noqa: E402
from analytics_gql.storage import rollups as store  # noqa: E402
from analytics_gql.storage.engine import Database  # noqa: E402
from analytics_gql.storage.tables import Shape, rollup_tables  # noqa: E402

JOIN_MS = 60_000


def test_compact_actor_deletes_exactly_the_folded_raw_rows_past_the_horizon(db: Database) -> None:
    """ANALYTICS_RETENTION=raw=30d: the worker's compaction deletes the folded rows older than the hour-aligned
    horizon (now - 30 days), keeps newer ones and an old row not folded yet, leaves the rollups alone, and records
    the horizon and the time it ran. Every event lies at least 12 h from the horizon, so the actor's clock, a few
    seconds after ours, draws the same line."""
    now = store.now_us()
    ages = [0.5, 3, 12, 29.5, 30.5, 45, 200]  # days; the last three are past the horizon
    folded: list[Event] = [(1 + i % 3, ("US", None, "IN")[i % 3], now - int(a * DAY_US)) for i, a in enumerate(ages)]
    add_events(db, folded)
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    unfolded: Event = (9, "KE", now - 300 * DAY_US)  # older than the horizon but above the watermark
    add_events(db, [unfolded])
    with db.read() as conn:
        before = stored(conn)
        wm = store.watermark(conn)
    s = Settings(database_url=db.settings.db_url, retention="raw=30d")
    rt = runtime.start_embedded(s, scheduler=False)
    try:
        t0 = store.now_us()
        rt.actors.compact.send()
        rt.broker.join(QUEUE, timeout=JOIN_MS, fail_fast=True)
        t1 = store.now_us()
        with db.read() as conn:
            kept = raw_events(conn)
            horizons = store.horizons(conn)
            state = store.read_state(conn)
            after = stored(conn)
        h = horizons["raw"]
        assert (t0 - 30 * DAY_US) // HOUR_US * HOUR_US <= h <= (t1 - 30 * DAY_US) // HOUR_US * HOUR_US
        assert h % HOUR_US == 0
        assert sorted(kept) == sorted([*folded[:4], unfolded])
        assert sorted(kept) == sorted([e for e in folded if e[2] >= h] + [unfolded])
        assert {g: v for g, v in horizons.items() if g != "raw"} == {g.value: 0 for g in Grain}
        assert state is not None and state.watermark == wm and state.last_compact_at is not None
        assert t0 <= state.last_compact_at <= t1
        assert after == before  # no rollup grain has a policy: every cell stays
        # The kept old row is folded by the next pass like any other.
        rt.actors.refresh.send()
        rt.broker.join(QUEUE, timeout=JOIN_MS, fail_fast=True)
    finally:
        rt.stop()
    with db.read() as conn:
        assert sum(stored(conn)[(Grain.YEAR, Shape.TOTAL)].values()) == 8


def test_audit_actor_repairs_corrupted_cells_and_records_the_run(db: Database) -> None:
    """A drifted day x blog cell and a month x blog x country cell deleted outright: the worker's audit (the
    scheduler's sample of 200) recomputes them from raw and repairs both, and records when it ran. The data set is
    small enough that the sample covers every stored cell and every raw id, so the repair is certain."""
    r = random.Random(3)
    lo = 1_735_689_600_000_000  # 2025-01-01
    evs: list[Event] = [(r.randint(1, 3), r.choice(["US", None, "IN"]), lo + r.randrange(5 * DAY_US))
                        for _ in range(60)]
    add_events(db, evs)
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    assert_exact(db, "UTC")
    want = expected(evs, "UTC")
    day_blog = rollup_tables[(Grain.DAY, Shape.BY_BLOG)]
    month_full = rollup_tables[(Grain.MONTH, Shape.FULL)]
    (bucket, blog, _), views = max(narrow(want[Grain.DAY], Shape.BY_BLOG).items(), key=lambda kv: kv[1])
    gone = sorted(want[Grain.MONTH])[0]
    with db.write() as conn:
        conn.execute(update(day_blog).where(day_blog.c.bucket == bucket, day_blog.c.blog_id == blog)
                     .values(views=day_blog.c.views + 7))
        conn.execute(month_full.delete().where(month_full.c.bucket == gone[0], month_full.c.blog_id == gone[1],
                                               month_full.c.viewer_country == gone[2]))
    with db.read() as conn:
        assert conn.execute(select(day_blog.c.views).where(day_blog.c.bucket == bucket,
                                                           day_blog.c.blog_id == blog)).scalar() == views + 7
        assert stored(conn)[(Grain.MONTH, Shape.FULL)][gone] == 0
        assert store.read_state(conn).last_audit_at is None  # type: ignore[union-attr]
    rt = runtime.start_embedded(Settings(database_url=db.settings.db_url), scheduler=False)
    try:
        t0 = store.now_us()
        rt.actors.audit.send(200)
        rt.broker.join(QUEUE, timeout=JOIN_MS, fail_fast=True)
        t1 = store.now_us()
    finally:
        rt.stop()
    assert_exact(db, "UTC")
    with db.read() as conn:
        assert stored(conn)[(Grain.MONTH, Shape.FULL)][gone] == want[Grain.MONTH][gone]
        state = store.read_state(conn)
    assert state is not None and state.last_audit_at is not None and t0 <= state.last_audit_at <= t1
