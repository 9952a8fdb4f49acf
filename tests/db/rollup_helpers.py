"""Test helpers for rollups: insert raw events with Core, an independent Python GROUP BY, table snapshots."""

from __future__ import annotations

from collections import Counter
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, insert, select, text

from analytics_gql.domain.calendar import GRAINS, Grain, bucket_key
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import (
    rollup_horizons,
    rollup_state,
    rollups,
    rollups_by_blog,
    rollups_by_country,
    rollups_total,
    view_events,
)

Event = tuple[int, str | None, int]  # blog_id, viewer_country, viewed_at


def add_events(db: Database, events: list[Event]) -> None:
    """Insert raw events in one write transaction (ingest stand-in)."""
    if not events:
        return
    with db.write() as conn:
        conn.execute(insert(view_events), [{"blog_id": b, "viewer_country": c, "viewed_at": t} for b, c, t in events])


def reset(db: Database) -> None:
    """Empty raw events, rollups and bookkeeping (between Hypothesis examples on one database)."""
    with db.write() as conn:
        for t in (view_events, rollup_state, rollup_horizons, *rollups.values(), *rollups_by_blog.values(),
                  *rollups_by_country.values(), *rollups_total.values()):
            conn.execute(delete(t))


def expected(events: list[Event], zone: str) -> dict[Grain, Counter[tuple[int, int, str]]]:
    """Rollups computed independently: Python GROUP BY with the reference bucket maths."""
    z = ZoneInfo(zone)
    out: dict[Grain, Counter[tuple[int, int, str]]] = {g: Counter() for g in GRAINS}
    for blog, country, at in events:
        for g in GRAINS:
            out[g][(bucket_key(g, at, z), blog, country or "--")] += 1
    return out


def stored(conn: Connection) -> dict[Grain, Counter[tuple[int, int, str]]]:
    """Every rollup table as a Counter keyed (bucket, blog_id, viewer_country)."""
    out: dict[Grain, Counter[tuple[int, int, str]]] = {}
    for g, t in rollups.items():
        rows = conn.execute(select(t.c.bucket, t.c.blog_id, t.c.viewer_country, t.c.views))
        out[g] = Counter({(b, blog, c): v for b, blog, c, v in rows})
    return out


def raw_events(conn: Connection, up_to_id: int | None = None) -> list[Event]:
    """Raw events (optionally only id <= up_to_id)."""
    q = select(view_events.c.blog_id, view_events.c.viewer_country, view_events.c.viewed_at)
    if up_to_id is not None:
        q = q.where(view_events.c.id <= up_to_id)
    return [(b, c, t) for b, c, t in conn.execute(q)]


def assert_exact(db: Database, zone: str) -> None:
    """Every grain equals the independent GROUP BY of the raw events below the watermark, bucket by bucket."""
    with db.read() as conn:
        wm = conn.execute(select(rollup_state.c.watermark)).scalar() or 0
        want = expected(raw_events(conn, wm), zone)
        got = stored(conn)
    for g in GRAINS:
        extra, missing = sorted((got[g] - want[g]).items())[:5], sorted((want[g] - got[g]).items())[:5]
        assert got[g] == want[g], f"{g}: extra {extra}, missing {missing}"
    # The narrow shapes equal the independent counts summed over the dropped key.
    with db.read() as conn:
        for g in GRAINS:
            by_blog: Counter[tuple[int, int]] = Counter()
            by_country: Counter[tuple[int, str]] = Counter()
            for (b, blog, c), v in want[g].items():
                by_blog[(b, blog)] += v
                by_country[(b, c)] += v
            tb, tc = rollups_by_blog[g], rollups_by_country[g]
            assert Counter({(b, k): v for b, k, v in conn.execute(select(tb.c.bucket, tb.c.blog_id, tb.c.views))}) \
                == by_blog, f"{g} by blog"
            assert Counter({(b, k): v for b, k, v in conn.execute(
                select(tc.c.bucket, tc.c.viewer_country, tc.c.views))}) == by_country, f"{g} by country"
            totals: Counter[int] = Counter()
            for (b, _blog, _c), v in want[g].items():
                totals[b] += v
            tt = rollups_total[g]
            assert Counter(dict(conn.execute(select(tt.c.bucket, tt.c.views)).all())) == totals, f"{g} totals"


def bulk_events(db: Database, n: int, *, base: int = 788_918_400_000_000) -> None:
    """Insert n synthetic events with one set-based statement (50 blogs, 3 countries, ~3 years of hours)."""
    body = (f"SELECT 1 + i % 50, CASE WHEN i % 3 = 0 THEN NULL WHEN i % 3 = 1 THEN 'US' ELSE 'IN' END, "
            f"{base} + ((i % 100003) * 7919 % 26000) * 3600000000 + i FROM ")
    with db.write() as conn:
        if db.sqlite:
            sql = (f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {int(n)}) "
                   f"INSERT INTO view_events (blog_id, viewer_country, viewed_at) {body} s")
        else:
            sql = f"INSERT INTO view_events (blog_id, viewer_country, viewed_at) {body} generate_series(1, {int(n)}) i"
        conn.execute(text(sql))
