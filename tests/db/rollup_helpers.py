"""Test helpers for rollups: insert raw events with Core, an independent Python GROUP BY, table snapshots."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, insert, select, text

from analytics_gql.domain.calendar import GRAINS, Grain
from analytics_gql.storage.engine import Database
from analytics_gql.storage.reader_sets import decode
from analytics_gql.storage.tables import (
    SHAPE_KEYS,
    Shape,
    reader_tables,
    rollup_horizons,
    rollup_state,
    rollup_tables,
    view_events,
    viewers,
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
        for t in (view_events, rollup_state, rollup_horizons, *rollup_tables.values(), *reader_tables.values(),
                  viewers):
            conn.execute(delete(t))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)


def contract_day(at: int, zone: ZoneInfo) -> dt.date:
    """The local date D whose period [S(D), S(D+1)) holds `at`, straight from CONTRACT 3 (S(D) is
    `datetime(D, tzinfo=zone)`), independent of analytics_gql.domain.calendar."""
    guess = (_EPOCH + at * _US).astimezone(zone).date()
    for d in (guess + dt.timedelta(days=k) for k in (-2, -1, 0, 1, 2)):
        nxt = d + dt.timedelta(days=1)
        s0 = (dt.datetime(d.year, d.month, d.day, tzinfo=zone) - _EPOCH) // _US
        s1 = (dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone) - _EPOCH) // _US
        if s0 <= at < s1:
            return d
    raise AssertionError(f"no local period holds {at} in {zone}")


def reference_key(g: Grain, at: int, zone: ZoneInfo) -> int:
    """The bucket key of `at` per the storage layout (ARCHITECTURE.md), from the contract's periods."""
    if g is Grain.HOUR:
        return at // 3_600_000_000
    d = contract_day(at, zone)
    day = (d - dt.date(1970, 1, 1)).days
    return {Grain.DAY: day, Grain.WEEK: day - d.weekday(), Grain.MONTH: d.year * 12 + d.month - 1,
            Grain.YEAR: d.year}[g]


def expected(events: list[Event], zone: str) -> dict[Grain, Counter[tuple[int, int, str]]]:
    """Rollups computed independently: Python GROUP BY with the contract's periods (not the code's bucket maths)."""
    z = ZoneInfo(zone)
    out: dict[Grain, Counter[tuple[int, int, str]]] = {g: Counter() for g in GRAINS}
    for blog, country, at in events:
        for g in GRAINS:
            out[g][(reference_key(g, at, z), blog, country or "--")] += 1
    return out


Key = tuple[int, int | None, str | None]  # (bucket, blog_id, viewer_country), None where a shape has no such key


def narrow(full: Counter[tuple[int, int, str]], shape: Shape) -> Counter[Key]:
    """Independent counts summed over the keys `shape` drops."""
    keys = SHAPE_KEYS[shape]
    out: Counter[Key] = Counter()
    for (b, blog, c), v in full.items():
        out[(b, blog if "blog_id" in keys else None, c if "viewer_country" in keys else None)] += v
    return out


def stored(conn: Connection) -> dict[tuple[Grain, Shape], Counter[Key]]:
    """Every rollup table as a Counter keyed (bucket, blog_id, viewer_country), None for keys it does not keep."""
    out: dict[tuple[Grain, Shape], Counter[Key]] = {}
    for (g, shape), t in rollup_tables.items():
        keys = SHAPE_KEYS[shape]
        counts: Counter[Key] = Counter()
        for row in conn.execute(select(t.c.bucket, *(t.c[k] for k in keys), t.c.views)):
            values = dict(zip(keys, row[1:-1], strict=True))
            counts[(row[0], values.get("blog_id"), values.get("viewer_country"))] = row[-1]
        out[(g, shape)] = counts
    return out


def raw_events(conn: Connection, up_to_id: int | None = None) -> list[Event]:
    """Raw events (optionally only id <= up_to_id)."""
    q = select(view_events.c.blog_id, view_events.c.viewer_country, view_events.c.viewed_at)
    if up_to_id is not None:
        q = q.where(view_events.c.id <= up_to_id)
    return [(b, c, t) for b, c, t in conn.execute(q)]


def assert_exact(db: Database, zone: str) -> None:
    """Every rollup table equals the independent GROUP BY of the raw events below the watermark, bucket by bucket."""
    with db.read() as conn:
        wm = conn.execute(select(rollup_state.c.watermark)).scalar() or 0
        want = expected(raw_events(conn, wm), zone)
        got = stored(conn)
    assert {g for g, _ in got} == set(GRAINS)  # every grain is kept, in some shape
    for (g, shape), counts in got.items():
        need = narrow(want[g], shape)
        extra, missing = sorted((counts - need).items())[:5], sorted((need - counts).items())[:5]
        assert counts == need, f"{g} {shape}: extra {extra}, missing {missing}"


def add_viewed(db: Database, events: list[tuple[int, str | None, int, str | None]]) -> None:
    """Insert raw events with viewerIds (blog_id, viewer_country, viewed_at, viewer_id) in one transaction."""
    if not events:
        return
    with db.write() as conn:
        conn.execute(insert(view_events), [{"blog_id": b, "viewer_country": c, "viewed_at": t, "viewer_id": v}
                                           for b, c, t, v in events])


def assert_readers_exact(db: Database, zone: str) -> None:
    """Every reader-set table equals the distinct viewerIds (as strings) of the raw events below the watermark,
    grouped per cell with the contract's periods; the dictionary is dense and one-to-one."""
    z = ZoneInfo(zone)
    with db.read() as conn:
        wm = conn.execute(select(rollup_state.c.watermark)).scalar() or 0
        rows = conn.execute(select(view_events.c.blog_id, view_events.c.viewer_country, view_events.c.viewed_at,
                                   view_events.c.viewer_id).where(view_events.c.id <= wm)).all()
        names = dict(conn.execute(select(viewers.c.id, viewers.c.viewer_id)).all())
        got: dict[tuple[Grain, Shape], dict[Key, set[str]]] = {}
        for (g, shape), t in reader_tables.items():
            keys = SHAPE_KEYS[shape]
            cells: dict[Key, set[str]] = {}
            for row in conn.execute(select(t.c.bucket, *(t.c[k] for k in keys), t.c.readers)):
                values = dict(zip(keys, row[1:-1], strict=True))
                cells[(row[0], values.get("blog_id"), values.get("viewer_country"))] = {
                    names[i] for i in decode(row[-1])}
            got[(g, shape)] = cells
    # Dense integers: consecutive (PostgreSQL's identity does not restart after the tests' DELETE).
    assert not names or sorted(names) == list(range(min(names), min(names) + len(names)))
    assert len(set(names.values())) == len(names)
    assert set(names.values()) == {v for *_, v in rows if v is not None}
    for (g, shape), cells in got.items():
        keys = SHAPE_KEYS[shape]
        want: dict[Key, set[str]] = {}
        for blog, country, at, viewer in rows:
            if viewer is None:
                continue
            key = (reference_key(g, at, z), blog if "blog_id" in keys else None,
                   (country or "--") if "viewer_country" in keys else None)
            want.setdefault(key, set()).add(viewer)
        assert cells == want, f"{g} {shape}: {len(cells)} cells stored, {len(want)} expected"


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


def writers_and_passes(db: Database, settings: object, *, writers: int, transactions: int, blogs: int,
                       lo: int) -> list[int]:
    """`writers` threads each commit `transactions` transactions of 10 random views (blogs 1..`blogs`, 800 days from
    `lo`) while 2 threads run rollup.refresh in a loop until the writers are done. Returns the events each pass
    folded; raises the first error a thread met."""
    import random
    import threading

    from analytics_gql import rollup

    errors: list[BaseException] = []
    writers_done = threading.Event()
    folded: list[int] = []

    def writer(seed: int) -> None:
        r = random.Random(seed)
        try:
            for _ in range(transactions):
                add_viewed(db, [(r.randint(1, blogs), r.choice([None, "US", "IN", "KE"]),
                                 lo + r.randrange(800 * 86_400_000_000),
                                 r.choice([None, f"v{r.randrange(300)}", f"V{r.randrange(30)}"])) for _ in range(10)])
        except BaseException as e:  # noqa: BLE001 - raised below
            errors.append(e)

    def passes() -> None:
        try:
            while not writers_done.is_set():
                folded.append(rollup.refresh(db, settings).events)  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ws = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    ps = [threading.Thread(target=passes) for _ in range(2)]
    for t in ws + ps:
        t.start()
    for t in ws:
        t.join()
    writers_done.set()
    for t in ps:
        t.join()
    if errors:
        raise errors[0]
    return folded
