"""refreshRollups and rollupStatus through the real app, with real API keys, on both databases: the admin scope,
`enqueued` on the embedded runtime, the pass the message runs, and rollupStatus numbers recomputed independently."""

from __future__ import annotations

import datetime as dt
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "db"))
from rollup_helpers import Event, add_events, assert_exact, expected, narrow  # noqa: E402

from analytics_gql import rollup  # noqa: E402
from analytics_gql.api.app import create_app  # noqa: E402
from analytics_gql.domain.calendar import GRAINS, Grain  # noqa: E402
from analytics_gql.jobs import runtime  # noqa: E402
from analytics_gql.jobs.actors import QUEUE  # noqa: E402
from analytics_gql.settings import Settings  # noqa: E402
from analytics_gql.storage import rollups as store  # noqa: E402
from analytics_gql.storage.engine import Database  # noqa: E402
from analytics_gql.storage.tables import rollup_tables  # noqa: E402

ZONE = "America/New_York"
KEYS = "r1:read;i1:ingest;a1:admin"
READ, INGEST, ADMIN = ({"Authorization": f"Bearer {k}"} for k in ("r1", "i1", "a1"))
REFRESH = "mutation { refreshRollups { enqueued } }"
STATUS = "{ rollupStatus { watermark pendingEvents lastRunAt grains { grain rows oldest newest retainedFor } } }"
HOUR = 3_600_000_000
DAY = 24 * HOUR
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
T0 = 1_741_487_400_000_000  # 2025-03-09T02:30:00Z = 2025-03-08 21:30 in New York (local day differs from UTC)


def iso(us: int | None) -> str | None:
    """An instant as GraphQL's DateTime renders it (UTC ISO 8601), computed without the code's calendar."""
    return None if us is None else (_EPOCH + dt.timedelta(microseconds=us)).isoformat()


def local_start(g: Grain, key: int) -> int:
    """The instant a bucket (reference key of rollup_helpers) starts, from the contract's local midnights."""
    if g is Grain.HOUR:
        return key * HOUR
    if g in (Grain.DAY, Grain.WEEK):
        d = dt.date(1970, 1, 1) + dt.timedelta(days=key)
    elif g is Grain.MONTH:
        d = dt.date(key // 12, key % 12 + 1, 1)
    else:
        d = dt.date(key, 1, 1)
    return (dt.datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(ZONE)) - _EPOCH) // dt.timedelta(microseconds=1)


def independent_grains(folded: list[Event], raw: list[Event], retention: dict[str, int]) -> list[dict[str, Any]]:
    """rollupStatus.grains recomputed from the events: raw rows/span, then per grain rows of all its tables and
    the local start of its oldest and newest total bucket."""
    out: list[dict[str, Any]] = [{"grain": "raw", "rows": len(raw), "oldest": iso(min(e[2] for e in raw)),
                                  "newest": iso(max(e[2] for e in raw)), "retainedFor": retention.get("raw")}]
    full = expected(folded, ZONE)
    for g in GRAINS:
        rows = sum(len(narrow(full[g], shape)) for (gg, shape) in rollup_tables if gg is g)
        buckets = [b for b, _, _ in full[g]]
        out.append({"grain": g.value, "rows": rows, "oldest": iso(local_start(g, min(buckets))),
                    "newest": iso(local_start(g, max(buckets))), "retainedFor": retention.get(g.value)})
    return out


def domain_as_json(s: store.RollupStatus) -> dict[str, Any]:
    """rollup.status() in the API's JSON form."""
    return {"watermark": iso(s.watermark), "pendingEvents": s.pending_events, "lastRunAt": iso(s.last_run_at),
            "grains": [{"grain": g.grain, "rows": g.rows, "oldest": iso(g.oldest), "newest": iso(g.newest),
                        "retainedFor": g.retained_for} for g in s.grains]}


@pytest.fixture
def settings(db: Database) -> Settings:
    return Settings(database_url=db.settings.db_url, api_keys=KEYS, timezone=ZONE, retention="hour=30d")


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    # Wired as serving.serve wires it: refreshRollups enqueues through the jobs runtime.
    with TestClient(create_app(settings, db, enqueue=runtime.enqueue_refresh)) as c:
        yield c


def test_an_app_wired_to_no_jobs_enqueues_nothing(settings: Settings, db: Database) -> None:
    """create_app without `enqueue` (no composition root): refreshRollups answers false, even with a runtime up."""
    rt = runtime.start_embedded(settings, scheduler=False)
    try:
        with TestClient(create_app(settings, db)) as c:
            assert post(c, REFRESH, ADMIN) == {"data": {"refreshRollups": {"enqueued": False}}}
    finally:
        rt.stop()


def post(client: TestClient, query: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = client.post("/graphql", json={"query": query}, headers=headers or {})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def forbidden(body: dict[str, Any]) -> bool:
    return body["data"] is None and [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]


def events(n: int, seed: int) -> list[Event]:
    r = random.Random(seed)
    return [(r.randint(1, 5), r.choice([None, "US", "IN"]), T0 + r.randrange(-3 * DAY, 70 * DAY)) for _ in range(n)]


def test_refresh_rollups_needs_admin_and_the_embedded_runtime_folds(client: TestClient, settings: Settings,
                                                                     db: Database) -> None:
    """Without admin: FORBIDDEN and nothing is enqueued. With admin: enqueued=false while no runtime runs (nothing
    would consume it), enqueued=true on the embedded runtime, whose worker then folds every event exactly."""
    evs = events(40, 1)
    add_events(db, evs)
    r = client.post("/graphql", json={"query": REFRESH})
    assert r.status_code == 401 and r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    for headers in (READ, INGEST):
        assert forbidden(post(client, REFRESH, headers))
    assert post(client, REFRESH, ADMIN) == {"data": {"refreshRollups": {"enqueued": False}}}
    before = rollup.status(db, settings)
    assert (before.watermark, before.watermark_id, before.pending_events, before.last_run_at) == (None, 0, 40, None)
    assert [g.rows for g in before.grains] == [40, 0, 0, 0, 0, 0]

    rt = runtime.start_embedded(settings, scheduler=False)  # no scheduler: only our message can fold anything
    try:
        for headers in (READ, INGEST):
            assert forbidden(post(client, REFRESH, headers))
        rt.broker.join(QUEUE, timeout=30_000, fail_fast=True)
        unchanged = rollup.status(db, settings)
        assert (unchanged.watermark_id, unchanged.pending_events) == (0, 40)  # a refused call enqueued nothing
        t_before = store.now_us()
        assert post(client, REFRESH, ADMIN) == {"data": {"refreshRollups": {"enqueued": True}}}
        rt.broker.join(QUEUE, timeout=30_000, fail_fast=True)
        t_after = store.now_us()
    finally:
        rt.stop()
    with db.read() as conn:
        top = store.max_event_id(conn)
    after = rollup.status(db, settings)
    assert (after.watermark_id, after.pending_events, after.last_run_events) == (top, 0, 40)
    assert after.watermark is not None and after.last_run_at is not None
    assert t_before <= after.watermark <= after.last_run_at <= t_after
    assert domain_as_json(after)["grains"] == independent_grains(evs, evs, {"hour": 30})
    assert_exact(db, ZONE)


def test_rollup_status_equals_the_use_case_and_an_independent_count(client: TestClient, settings: Settings,
                                                                     db: Database) -> None:
    """rollupStatus needs read; before any pass it reports raw rows only; after a pass and one late event its
    every field equals rollup.status() and the numbers recomputed from the events."""
    r = client.post("/graphql", json={"query": STATUS})
    assert r.status_code == 401
    assert forbidden(post(client, STATUS, INGEST))
    assert post(client, STATUS, READ) == {"data": {"rollupStatus": {
        "watermark": None, "pendingEvents": 0, "lastRunAt": None,
        "grains": [{"grain": g, "rows": 0, "oldest": None, "newest": None, "retainedFor": 30 if g == "hour" else None}
                   for g in ("raw", "hour", "day", "week", "month", "year")]}}}

    folded: list[Event] = [(1, "US", T0), (1, "US", T0 + 1), (2, None, T0 + 25 * HOUR), (3, "IN", T0 + 40 * DAY),
                           (1, "IN", T0 - 2 * DAY)]
    add_events(db, folded)
    t_before = store.now_us()
    assert rollup.refresh(db, settings).events == 5
    t_after = store.now_us()
    late: list[Event] = [(4, "KE", T0 - 400 * DAY)]
    add_events(db, late)

    got = post(client, STATUS, READ)["data"]["rollupStatus"]
    want = rollup.status(db, settings)
    assert got == domain_as_json(want)
    assert got["pendingEvents"] == 1
    assert want.watermark is not None and want.last_run_at is not None
    assert t_before <= want.watermark <= want.last_run_at <= t_after
    assert got["grains"] == independent_grains(folded, folded + late, {"hour": 30})
    # Spot checks of the reference: New York day of T0 is 2025-03-08 (EST), its week starts Monday 2025-03-03,
    # and the newest day is 2025-04-17 (EDT); the hour grain keeps UTC hours.
    by = {g["grain"]: g for g in got["grains"]}
    assert by["day"]["oldest"] == "2025-03-06T05:00:00+00:00" and by["day"]["newest"] == "2025-04-17T04:00:00+00:00"
    assert by["week"]["oldest"] == "2025-03-03T05:00:00+00:00"
    assert by["hour"]["oldest"] == "2025-03-07T02:00:00+00:00"
    assert by["raw"]["oldest"] == iso(T0 - 400 * DAY) and by["raw"]["rows"] == 6
