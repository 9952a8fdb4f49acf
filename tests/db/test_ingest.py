"""Bulk loading on SQLite and PostgreSQL: upserts, rejected items by index, duplicates counted once, arrival order."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from ingest_helpers import stored_views
from sqlalchemy import func, select

from analytics_gql import loading
from analytics_gql.errors import BadInput
from analytics_gql.storage import ingest
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import authors, blogs, view_events

T0 = "2025-02-01T12:00:00Z"
T0_US = 1_738_411_200_000_000


def load_dims(db: Database) -> None:
    people = [{"id": "a1", "name": "Abebe", "country": "ET"}, {"id": "a2", "name": "Mei"}]
    r = loading.ingest_records(db, "authors", people)  # type: ignore[arg-type]
    assert (r.accepted, r.rejected) == (2, 0)
    r = loading.ingest_records(
        db,
        "blogs",
        [
            {"id": "b1", "title": "Hello", "authorId": "a1", "country": "ET", "createdAt": "2025-01-03T10:00:00Z"},
            {"id": "b2", "title": "World", "authorId": "a2", "createdAt": "2025-01-04T00:00:00+01:00"},
        ],
    )
    assert (r.accepted, r.rejected) == (2, 0)


def test_authors_and_blogs_upsert_by_client_id(db: Database) -> None:
    load_dims(db)
    r = loading.ingest_records(
        db,
        "authors",
        [{"id": "a2", "name": "Mei", "country": "CN"}, {"id": "a3", "name": "X", "country": "XX"},
         {"id": "a2", "name": "Mei Lin", "country": "TW"}],  # repeated in one call: the last one wins
    )
    assert r.to_dict() == {
        "accepted": 2, "duplicates": 0, "rejected": 1,
        "errors": [{"index": 1, "message": "country: 'XX' is not an ISO 3166-1 alpha-2 country code"}],
    }
    r = loading.ingest_records(
        db,
        "blogs",
        [
            {"id": "b2", "title": "World, again", "authorId": "a1", "createdAt": "2025-01-05T00:00:00Z"},
            {"id": "b3", "title": "Orphan", "authorId": "nobody", "createdAt": "2025-01-05T00:00:00Z"},
            {"id": "b2", "title": "World, last", "authorId": "a1", "country": "KE", "createdAt": T0},
        ],
        index_base=1,
    )
    assert (r.accepted, r.rejected) == (2, 1)
    assert [(e.index, e.message) for e in r.errors] == [(2, "unknown author 'nobody': load it first")]
    with db.read() as conn:
        got_authors = conn.execute(select(authors.c.external_id, authors.c.name, authors.c.country_code)
                                   .order_by(authors.c.external_id)).all()
        got_blogs = conn.execute(
            select(blogs.c.external_id, blogs.c.title, authors.c.external_id, blogs.c.country_code, blogs.c.created_at)
            .join(authors, authors.c.id == blogs.c.author_id).order_by(blogs.c.external_id)
        ).all()
    assert [tuple(a) for a in got_authors] == [("a1", "Abebe", "ET"), ("a2", "Mei Lin", "TW")]
    assert [tuple(b) for b in got_blogs] == [
        ("b1", "Hello", "a1", "ET", 1_735_898_400_000_000),
        ("b2", "World, last", "a1", "KE", T0_US),
    ]


def test_views_keep_good_items_and_name_bad_ones(db: Database) -> None:
    load_dims(db)
    items: list[dict | str] = [  # type: ignore[type-arg]
        {"eventId": "e1", "blogId": "b1", "viewerId": "u1", "viewerCountry": "KE", "viewedAt": T0},
        {"eventId": "e2", "blogId": "nope", "viewedAt": T0},
        '{"eventId": "e3", "blogId": "b2", "viewedAt": "2025-02-01T13:00:00+01:00"}',
        '{"eventId": "e4", "blogId": ',
        {"eventId": "e1", "blogId": "b2", "viewedAt": T0},  # same event id again: counted once
        {"blogId": "b2", "viewerCountry": "ke", "viewedAt": T0},
        {"blogId": "b1", "viewedAt": "2025-02-01T12:00:00.5Z"},
    ]
    r = loading.ingest_records(db, "views", items, index_base=1)
    assert (r.accepted, r.duplicates, r.rejected) == (3, 1, 3)
    assert [e.index for e in r.errors] == [2, 4, 6]
    assert r.errors[0].message == "unknown blog 'nope': load the blog first"
    assert r.errors[1].message.startswith("invalid JSON: ")
    assert r.errors[2].message == "viewerCountry: 'ke' must be upper case (KE)"
    assert stored_views(db) == [
        ("e1", "b1", "u1", "KE", T0_US),
        ("e3", "b2", None, None, T0_US),
        (None, "b1", None, None, T0_US + 500_000),
    ]
    again = loading.ingest_records(db, "views", items[:1] + items[2:3])
    assert (again.accepted, again.duplicates, again.rejected) == (0, 2, 0)
    assert len(stored_views(db)) == 3


def test_view_without_time_defaults_to_now(db: Database) -> None:
    load_dims(db)
    before = loading.now_us()
    r = loading.ingest_records(db, "views", [{"blogId": "b1"}])
    after = loading.now_us()
    assert r.accepted == 1
    (row,) = stored_views(db)
    assert before <= row[4] <= after


def test_large_lists_are_chunked_and_keep_arrival_order(db: Database) -> None:
    load_dims(db)
    n = loading.API_CHUNK + 7
    items: list[dict | str] = [  # type: ignore[type-arg]
        {"eventId": f"e{i}", "blogId": "b1" if i % 3 else "b2", "viewedAt": T0} for i in range(n)
    ]
    items[n - 2] = {"eventId": "e5", "blogId": "b1", "viewedAt": T0}  # duplicate in the second chunk
    items[3] = {"eventId": "e3", "blogId": "ghost"}  # rejected in the first chunk
    items[n - 4] = {"eventId": f"e{n - 4}", "blogId": "ghost"}  # and in the second: indexes go on counting
    r = loading.ingest_records(db, "views", items, index_base=1)
    assert (r.accepted, r.duplicates, r.rejected) == (n - 3, 1, 2)
    assert [(e.index, e.message) for e in r.errors] == [
        (4, "unknown blog 'ghost': load the blog first"), (n - 3, "unknown blog 'ghost': load the blog first")]
    got = [row[0] for row in stored_views(db)]
    assert got == [f"e{i}" for i in range(n) if i not in (3, n - 4, n - 2)]


def test_a_list_that_fails_in_a_later_chunk_stores_nothing(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """One request, one transaction: a failure after the first chunk was written leaves nothing behind."""
    load_dims(db)
    real = loading._store
    calls = []

    def failing_store(*args: Any, **kwargs: Any) -> loading.IngestResult:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected: the database went away in the second chunk")
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "_store", failing_store)
    items: list[dict | str] = [  # type: ignore[type-arg]
        {"eventId": f"e{i}", "blogId": "b1", "viewedAt": T0} for i in range(loading.API_CHUNK + 1)]
    with pytest.raises(RuntimeError, match="injected"):
        loading.ingest_records(db, "views", items)
    assert len(calls) == 2 and stored_views(db) == []
    monkeypatch.setattr(loading, "_store", real)
    r = loading.ingest_records(db, "views", items)  # the retry stores every item once
    assert (r.accepted, r.duplicates) == (loading.API_CHUNK + 1, 0)
    assert len(stored_views(db)) == loading.API_CHUNK + 1


def test_unknown_kind_is_a_user_error(db: Database) -> None:
    with pytest.raises(BadInput, match="unknown kind 'users'"):
        loading.ingest_records(db, "users", [])


def test_seed_is_exact_and_uses_the_same_store(db: Database) -> None:
    assert loading.is_empty(db)
    r = loading.seed(db, authors=5, blogs=30, views=2_500, days=10, seed=3, progress=False)
    assert (r.accepted, r.duplicates, r.rejected) == (2_500, 0, 0)
    assert not loading.is_empty(db)
    with db.read() as conn:
        assert ingest.count_views(conn) == 2_500
        assert conn.execute(select(blogs.c.id)).all().__len__() == 30
        early = conn.execute(
            select(view_events.c.id).join(blogs, blogs.c.id == view_events.c.blog_id)
            .where(view_events.c.viewed_at < blogs.c.created_at)
        ).all()
    assert early == []


def test_seed_refuses_views_without_blogs(db: Database) -> None:
    with pytest.raises(BadInput, match="--views needs at least one blog"):
        loading.seed(db, authors=1, blogs=0, views=10, days=1, progress=False)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # PostgreSQL staging path
def test_pg_staging_skips_stored_and_repeated_ids(db: Database) -> None:
    load_dims(db)
    with db.read() as conn:
        b1 = ingest.blog_ids(conn, ["b1"])["b1"]
    rows = [("x1", b1, None, None, T0_US), ("x2", b1, "u", "KE", T0_US), ("x1", b1, None, None, T0_US + 1),
            (None, b1, None, None, T0_US + 2)]
    with db.write() as conn:
        assert ingest._pg_staging_rows(conn, rows[:1]) == 1
    with db.write() as conn:
        assert ingest.insert_views(conn, rows) == 2  # x1 already stored, then repeated; x2 and the id-less row new
        assert ingest.insert_views(conn, rows) == 1  # a second call in one transaction: only the id-less row



@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # PostgreSQL only: SQLite has a single writer
def test_pg_concurrent_writer_of_the_same_event_id_wins_once(db: Database) -> None:
    load_dims(db)
    with db.read() as conn:
        b1 = ingest.blog_ids(conn, ["b1"])["b1"]
    result: list[int] = []
    with db.write() as other:
        # Uncommitted: the racer's ON CONFLICT waits for this transaction, then skips the id it committed.
        ingest.insert_views(other, [("race", b1, None, None, T0_US)])

        def racer() -> None:
            with db.write() as conn:
                rows = [("race", b1, None, None, T0_US), ("calm", b1, None, None, T0_US)]
                result.append(ingest.insert_views(conn, rows))

        t = threading.Thread(target=racer)
        t.start()
        time.sleep(0.5)
    t.join(timeout=30)
    assert result == [1]
    assert sorted(r[0] for r in stored_views(db)) == ["calm", "race"]


@pytest.mark.parametrize("error", ["UniqueViolation", "DeadlockDetected"])
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # PostgreSQL direct COPY path
def test_pg_direct_copy_falls_back_to_staging(db: Database, monkeypatch: pytest.MonkeyPatch, error: str) -> None:
    import psycopg

    load_dims(db)
    with db.read() as conn:
        b1 = ingest.blog_ids(conn, ["b1"])["b1"]
    with db.write() as conn:
        assert ingest.insert_views(conn, [("old", b1, None, None, T0_US)]) == 1  # direct: nothing conflicts
    real_copy = ingest._pg_copy
    calls: list[int] = []

    def copy_then_fail(conn, rows):  # type: ignore[no-untyped-def]
        calls.append(len(rows))
        real_copy(conn, rows[:1])  # a partial COPY, undone by the savepoint
        raise getattr(psycopg.errors, error)("simulated")

    monkeypatch.setattr(ingest, "_pg_copy", copy_then_fail)
    rows = [("new1", b1, "u", "KE", T0_US + 1), ("old", b1, None, None, T0_US), ("new2", b1, None, None, T0_US + 2)]
    with db.write() as conn:
        assert ingest.insert_views(conn, rows) == 2
    assert calls == [3]
    assert [r[0] for r in stored_views(db)] == ["old", "new1", "new2"]
    with db.write() as conn:
        assert ingest.insert_views(conn, rows, direct=False) == 0  # staging only: no COPY attempt
    assert calls == [3]


@pytest.mark.parametrize(("direct_a", "direct_b"), [(False, False), (True, False)], ids=["staging", "copy-staging"])
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # PostgreSQL only: SQLite has a single writer
def test_pg_writers_of_the_same_ids_in_crossed_orders_both_finish(db: Database, direct_a: bool, direct_b: bool) -> None:
    load_dims(db)
    with db.read() as conn:
        b1 = ingest.blog_ids(conn, ["b1"])["b1"]
    n = 20_000  # long enough that the two statements meet in the middle and wait for each other
    rows = [(f"x{i}", b1, None, None, T0_US + i) for i in range(n)]
    stored: dict[str, int] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def write(tag: str, mine: list[ingest.ViewRow], direct: bool) -> None:
        try:
            with db.write() as conn:
                start.wait()
                stored[tag] = ingest.insert_views(conn, mine, direct=direct)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            failures.append(e)

    threads = [threading.Thread(target=write, args=("A", rows, direct_a)),
               threading.Thread(target=write, args=("B", rows[::-1], direct_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []  # was: one of them died of "deadlock detected"
    assert sorted(stored.values()) == [0, n]  # both ended; each id stored once, by whichever committed first
    got = stored_views(db)
    assert sorted(r[0] for r in got) == sorted(r[0] for r in rows)
    assert [r[4] for r in got] in ([T0_US + i for i in range(n)], [T0_US + i for i in reversed(range(n))])


@pytest.mark.parametrize("kind", ["authors", "blogs"])
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # PostgreSQL only: SQLite has a single writer
def test_pg_upserts_of_the_same_ids_in_crossed_orders_both_finish(db: Database, kind: str) -> None:
    load_dims(db)
    n = 5_000  # enough rows that the two calls meet in the middle
    if kind == "authors":
        items = [{"id": f"p{i}", "name": f"N{i}"} for i in range(n)]
    else:
        items = [{"id": f"q{i}", "title": f"T{i}", "authorId": "a1", "createdAt": T0} for i in range(n)]
    done: dict[str, int] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def upsert(tag: str, mine: list[dict[str, str]]) -> None:
        try:
            start.wait()
            done[tag] = loading.ingest_records(db, kind, mine).accepted  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            failures.append(e)

    threads = [threading.Thread(target=upsert, args=("A", items)),
               threading.Thread(target=upsert, args=("B", items[::-1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []  # was: one of them died of "deadlock detected"
    assert done == {"A": n, "B": n}
    table = authors if kind == "authors" else blogs
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(table)).scalar_one() == n + 2


def test_the_longest_ids_and_any_characters_are_stored_whole(db: Database) -> None:
    load_dims(db)
    event, viewer = "\u00e9" * 255, "\U0001f600" * 255  # 255 characters: 510 and 1,020 bytes in UTF-8
    injected = "'; DROP TABLE view_events; --"
    r = loading.ingest_records(db, "views", [
        {"eventId": event, "blogId": "b1", "viewerId": viewer, "viewedAt": T0},
        {"eventId": injected, "blogId": "b2", "viewerId": "\\N", "viewedAt": T0},  # \N: COPY's text-format NULL
        {"eventId": event, "blogId": "b2"},
    ])
    assert (r.accepted, r.duplicates, r.rejected) == (2, 1, 0)
    assert stored_views(db) == [(event, "b1", viewer, None, T0_US), (injected, "b2", "\\N", None, T0_US)]
