"""POST /ingest/{authors|blogs|views}: NDJSON through HTTP, exact counts, line numbers, 200/400/413 (both DBs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import strawberry
from sqlalchemy import func, select

from analytics_gql.api.app import create_app
from analytics_gql.api.extensions import schema_extensions
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import authors, blogs, view_events

pytestmark = pytest.mark.anyio
NDJSON = {"Content-Type": "application/x-ndjson"}


@strawberry.type
class Query:
    @strawberry.field
    def ok(self) -> bool:
        return True


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def lines(*records: object) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


async def client(db: Database, **kw: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=db.settings.db_url, **kw)  # type: ignore[arg-type]
    schema = strawberry.Schema(query=Query, extensions=schema_extensions(settings))
    app = create_app(settings, db=db, schema=schema)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def http(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client(db):
        yield c


def count(db: Database, table) -> int:  # type: ignore[no-untyped-def]
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


async def load_dimensions(http: httpx.AsyncClient) -> None:
    r = await http.post("/ingest/authors", content=lines(
        {"id": "a1", "name": "Abebe", "country": "ET"}, {"id": "a2", "name": "Bo"}), headers=NDJSON)
    assert (r.status_code, r.json()) == (200, {"accepted": 2, "duplicates": 0, "rejected": 0, "errors": []})
    r = await http.post("/ingest/blogs", content=lines(
        {"id": "b1", "title": "Hello", "authorId": "a1", "country": "ET", "createdAt": "2025-01-03T10:00:00Z"},
        {"id": "b2", "title": "World", "authorId": "a2", "createdAt": "2025-01-04"}), headers=NDJSON)
    assert (r.status_code, r.json()) == (200, {"accepted": 2, "duplicates": 0, "rejected": 0, "errors": []})


async def test_all_good_lines_are_200(http: httpx.AsyncClient, db: Database) -> None:
    await load_dimensions(http)
    views = [{"eventId": f"e-{i}", "blogId": "b1" if i % 3 else "b2", "viewerCountry": "KE",
              "viewedAt": f"2025-02-01T12:{i:02d}:00Z"} for i in range(40)]
    r = await http.post("/ingest/views", content=lines(*views), headers=NDJSON)
    assert (r.status_code, r.json()) == (200, {"accepted": 40, "duplicates": 0, "rejected": 0, "errors": []})
    assert (count(db, authors), count(db, blogs), count(db, view_events)) == (2, 2, 40)


async def test_duplicates_are_still_200_and_stored_once(http: httpx.AsyncClient, db: Database) -> None:
    await load_dimensions(http)
    body = lines(*({"eventId": f"e-{i}", "blogId": "b1"} for i in range(5)))
    assert (await http.post("/ingest/views", content=body, headers=NDJSON)).json()["accepted"] == 5
    r = await http.post("/ingest/views", content=body + lines({"eventId": "e-new", "blogId": "b2"}), headers=NDJSON)
    assert (r.status_code, r.json()) == (200, {"accepted": 1, "duplicates": 5, "rejected": 0, "errors": []})
    assert count(db, view_events) == 6


async def test_bad_lines_are_400_with_line_numbers_and_good_lines_kept(http: httpx.AsyncClient, db: Database) -> None:
    await load_dimensions(http)
    body = (
        lines({"blogId": "b1"})                          # line 1: good
        + b"\n"                                          # line 2: blank, skipped but counted
        + b'{"blogId": "b1"\n'                           # line 3: broken JSON
        + lines({"blogId": "nope"})                      # line 4: unknown blog
        + lines({"blogId": "b2", "viewerCountry": "XX"})  # line 5: unknown country
        + b"   \n"                                       # line 6: blank
        + lines({"blogId": "b2", "viewedAt": "2025-02-01T00:00:00Z"})  # line 7: good
        + b"[1, 2]\n"                                    # line 8: not an object
        + b'{"blogId": "b1", "viewed_at": "x"}'          # line 9: unknown field, no final newline
    )
    r = await http.post("/ingest/views", content=body, headers=NDJSON)
    reply = r.json()
    assert r.status_code == 400
    assert (reply["accepted"], reply["duplicates"], reply["rejected"]) == (2, 0, 5)
    assert [e["line"] for e in reply["errors"]] == [3, 4, 5, 8, 9]
    assert [e["index"] for e in reply["errors"]] == [3, 4, 5, 8, 9]
    messages = {e["line"]: e["message"] for e in reply["errors"]}
    assert "JSON" in messages[3] and "nope" in messages[4] and "XX" in messages[5] and "viewed_at" in messages[9]
    assert count(db, view_events) == 2


async def test_unknown_author_rejected_by_line(http: httpx.AsyncClient, db: Database) -> None:
    await load_dimensions(http)
    r = await http.post("/ingest/blogs", content=lines(
        {"id": "b3", "title": "T", "authorId": "a1", "createdAt": "2025-01-01"},
        {"id": "b4", "title": "T", "authorId": "ghost", "createdAt": "2025-01-01"}), headers=NDJSON)
    assert r.status_code == 400
    assert (r.json()["accepted"], r.json()["rejected"], [e["line"] for e in r.json()["errors"]]) == (1, 1, [2])
    assert count(db, blogs) == 3


async def test_byte_order_mark_and_crlf_accepted(http: httpx.AsyncClient, db: Database) -> None:
    await load_dimensions(http)
    body = b"\xef\xbb\xbf" + b'{"blogId": "b1"}\r\n{"blogId": "b2"}\r\n'
    r = await http.post("/ingest/views", content=body, headers=NDJSON)
    assert (r.status_code, r.json()["accepted"]) == (200, 2)


async def test_empty_body_is_200_with_nothing_stored(http: httpx.AsyncClient, db: Database) -> None:
    r = await http.post("/ingest/views", content=b"", headers=NDJSON)
    assert (r.status_code, r.json()) == (200, {"accepted": 0, "duplicates": 0, "rejected": 0, "errors": []})


async def test_too_large_is_413_and_nothing_stored(db: Database) -> None:
    async for http in client(db, max_ingest_bytes=2048):
        await load_dimensions(http)
        body = lines(*({"blogId": "b1", "viewerId": f"reader-{i}"} for i in range(100)))
        assert len(body) > 2048
        r = await http.post("/ingest/views", content=body, headers=NDJSON)
        assert r.status_code == 413 and r.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        assert count(db, view_events) == 0
        small = lines(*({"blogId": "b1"} for _ in range(10)))
        assert (await http.post("/ingest/views", content=small, headers=NDJSON)).json()["accepted"] == 10


async def test_keys_on_ingest(db: Database) -> None:
    async for http in client(db, api_keys="r1:read;l1:ingest"):
        body = lines({"id": "a1", "name": "A"})
        assert (await http.post("/ingest/authors", content=body, headers=NDJSON)).status_code == 401
        r = await http.post("/ingest/authors", content=body, headers={**NDJSON, "Authorization": "Bearer r1"})
        assert r.status_code == 403
        r = await http.post("/ingest/authors", content=body, headers={**NDJSON, "X-API-Key": "l1"})
        assert (r.status_code, r.json()["accepted"]) == (200, 1)
        assert count(db, authors) == 1


async def test_unknown_kind_is_404(http: httpx.AsyncClient) -> None:
    r = await http.post("/ingest/passwords", content=b"{}\n", headers=NDJSON)
    assert r.status_code == 404


async def test_context_ingest_and_read_share_the_loading_code(db: Database) -> None:
    from analytics_gql.api.context import Context, make_limiter
    from analytics_gql.errors import Forbidden, Unauthenticated

    limiter = make_limiter(2)
    reader = Context(settings=db.settings, db=db, scopes=frozenset({"read"}), request_id="r", limiter=limiter)
    with pytest.raises(Forbidden):
        await reader.ingest("authors", [{"id": "a1", "name": "A"}])
    with pytest.raises(Forbidden):
        await reader.enqueue_refresh()  # scope is checked before the jobs runtime is even looked up
    anonymous = Context(settings=db.settings, db=db, scopes=frozenset(), authenticated=False, limiter=limiter)
    with pytest.raises(Unauthenticated):
        anonymous.require("read")
    loader = Context(settings=db.settings, db=db, scopes=frozenset({"ingest"}), request_id="l", limiter=limiter)
    result = await loader.ingest("authors", [{"id": "a1", "name": "A"}, {"id": "a2"}, {"id": "a3", "name": "C"}])
    assert (result.accepted, result.rejected, [e.index for e in result.errors]) == (2, 1, [1])
    assert await loader.read(lambda conn, t: conn.execute(select(func.count()).select_from(t)).scalar_one(),
                             authors) == 2


async def test_sqlite_busy_for_ten_seconds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """F12: another process holds SQLite's write lock for 10 s. Reads (/readyz, /metrics' gauges, queries) answer
    at once from the WAL snapshot; an ingest waits for the lock (busy_timeout 30 s) and then stores every line."""
    import sqlite3
    import threading
    import time

    from analytics_gql.storage import schema as migrations

    path = tmp_path / "busy.db"
    db = Database(Settings(database_url=f"sqlite:///{path}"))
    migrations.upgrade(db)
    try:
        async for http in client(db):
            await load_dimensions(http)
            locked, release = threading.Event(), threading.Event()

            def hold(locked: threading.Event = locked, release: threading.Event = release) -> None:
                other = sqlite3.connect(path, isolation_level=None)
                other.execute("BEGIN IMMEDIATE")
                locked.set()
                release.wait(10)
                other.execute("COMMIT")
                other.close()

            holder = threading.Thread(target=hold)
            holder.start()
            assert locked.wait(5)
            t0 = time.monotonic()
            try:
                r = await http.post("/graphql", json={"query": "{ ok }"})
                assert r.json() == {"data": {"ok": True}}
                r = await http.get("/readyz")
                assert r.status_code == 200
                r = await http.get("/metrics")
                assert "analytics_rollup_pending_events 0.0" in r.text
                assert time.monotonic() - t0 < 5  # reads did not wait for the writer
                views = [{"eventId": f"busy-{i}", "blogId": "b1"} for i in range(25)]
                r = await http.post("/ingest/views", content=lines(*views), headers=NDJSON)
                waited = time.monotonic() - t0
            finally:
                release.set()
                holder.join(15)
            assert (r.status_code, r.json()) == (200, {"accepted": 25, "duplicates": 0, "rejected": 0, "errors": []})
            assert 9 < waited < 30, waited  # it waited for the lock, and got it when it was released
            assert count(db, view_events) == 25
    finally:
        db.dispose()


async def test_database_error_during_ingest_is_masked_with_request_id(caplog) -> None:  # type: ignore[no-untyped-def]
    """F19 outside GraphQL: the database down under POST /ingest. Was starlette's plain-text 'Internal Server Error'
    with no X-Request-Id (and no id in the log); now the JSON error shape with the id, logged once with it."""
    import logging

    import sqlalchemy

    db = Database(Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/none"))
    try:
        settings = db.settings
        app = create_app(settings, db=db, schema=strawberry.Schema(query=Query, extensions=schema_extensions(settings)))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            with caplog.at_level(logging.ERROR, logger="analytics_gql.api"):
                r = await http.post("/ingest/views", content=lines({"blogId": "b1"}), headers=NDJSON)
            rid = r.headers["x-request-id"]
            assert (r.status_code, r.headers["content-type"], r.json()) == (500, "application/json", {"errors": [
                {"message": "Internal server error", "extensions": {"code": "INTERNAL", "requestId": rid}}]})
            logged = [rec for rec in caplog.records if rid in rec.getMessage()]
            assert len(logged) == 1 and logged[0].exc_info is not None
            assert isinstance(logged[0].exc_info[1], sqlalchemy.exc.OperationalError)
            metrics = (await http.get("/metrics")).text
            assert 'analytics_http_requests_total{route="/ingest",status="500"}' in metrics
    finally:
        db.dispose()
