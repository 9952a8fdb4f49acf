"""/healthz, /readyz (at head, unmigrated, unreachable) and /metrics counters, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import strawberry

from analytics_gql import rollup
from analytics_gql.api.app import create_app
from analytics_gql.api.extensions import schema_extensions
from analytics_gql.settings import Settings
from analytics_gql.storage import schema as migrations
from analytics_gql.storage.engine import Database, normalise_url

pytestmark = pytest.mark.anyio
RELEASE = threading.Event()
NDJSON = {"Content-Type": "application/x-ndjson"}


@strawberry.type
class Query:
    @strawberry.field
    async def answer(self) -> int:
        return 42

    @strawberry.field
    async def fails(self) -> int:
        raise RuntimeError("bug")

    @strawberry.field
    async def stuck(self, info: strawberry.Info) -> int:
        """Holds one of the request threads (the app's limiter) until RELEASE is set."""
        import anyio.to_thread

        await anyio.to_thread.run_sync(RELEASE.wait, 30, limiter=info.context.limiter)
        return 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = db.settings
    app = create_app(settings, db=db, schema=strawberry.Schema(query=Query, extensions=schema_extensions(settings)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def http(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client(db):
        yield c


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from the exposition text (None when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.group(1))
    return None


async def scrape(http: httpx.AsyncClient) -> str:
    r = await http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_healthz(http: httpx.AsyncClient) -> None:
    r = await http.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


async def test_readyz_at_head(http: httpx.AsyncClient, db: Database) -> None:
    r = await http.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready", "revision": migrations.head_revision(db)})


async def test_readyz_not_ready_on_unmigrated_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    try:
        async for http in client(db):
            r = await http.get("/readyz")
            assert r.status_code == 503
            assert r.json() == {"status": "unavailable", "reason": "database not migrated to head", "revision": None,
                                "head": migrations.head_revision(db)}
            assert (await http.get("/healthz")).status_code == 200  # the process is up all the same
            migrations.upgrade(db)
            assert (await http.get("/readyz")).status_code == 200
    finally:
        db.dispose()


async def test_readyz_not_ready_one_revision_behind_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A database migrated, but not to head (a deploy that skipped `migrate`), is not ready either."""
    db = Database(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}"))
    try:
        migrations.upgrade(db, "head-1")
        with db.read() as conn:
            behind = migrations.current_revision(conn)
        head = migrations.head_revision(db)
        assert behind is not None and behind != head
        async for http in client(db):
            r = await http.get("/readyz")
            assert (r.status_code, r.json()) == (503, {"status": "unavailable", "reason": "database not migrated "
                                                       "to head", "revision": behind, "head": head})
            migrations.upgrade(db)
            r = await http.get("/readyz")
            assert (r.status_code, r.json()) == (200, {"status": "ready", "revision": head})
    finally:
        db.dispose()


async def test_readyz_not_ready_on_unmigrated_postgres(empty_db_url: str) -> None:
    db = Database(Settings(database_url=empty_db_url))
    try:
        async for http in client(db):
            r = await http.get("/readyz")
            assert r.status_code == 503 and r.json()["reason"] == "database not migrated to head"
            migrations.upgrade(db)
            assert (await http.get("/readyz")).status_code == 200
    finally:
        db.dispose()


async def test_readyz_unreachable_database() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    db = Database(Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/none"))
    try:
        async for http in client(db):
            r = await http.get("/readyz")
            assert (r.status_code, r.json()) == (503, {"status": "unavailable", "reason": "database unreachable"})
            assert "127.0.0.1" not in r.text and "psycopg" not in r.text
            assert (await scrape(http)).count("analytics_rollup_pending_events") == 0
    finally:
        db.dispose()


async def test_metrics_count_graphql_fields(http: httpx.AsyncClient) -> None:
    before = await scrape(http)
    for _ in range(3):
        await http.post("/graphql", json={"query": "{ answer }"})
    await http.post("/graphql", json={"query": "{ answer fails }"})
    after = await scrape(http)

    def delta(name: str, **labels: str) -> float:
        return (sample(after, name, **labels) or 0.0) - (sample(before, name, **labels) or 0.0)

    assert delta("analytics_graphql_field_requests_total", field="answer", outcome="ok") == 4
    assert delta("analytics_graphql_field_requests_total", field="fails", outcome="error") == 1
    assert delta("analytics_graphql_field_seconds_count", field="answer") == 4
    assert delta("analytics_http_requests_total", route="/graphql", status="200") == 4


async def test_metrics_rows_ingested_and_rollup_lag(http: httpx.AsyncClient, db: Database) -> None:
    before = await scrape(http)
    assert sample(before, "analytics_rollup_pending_events") == 0
    await http.post("/ingest/authors", content=b'{"id": "a1", "name": "A"}\n', headers=NDJSON)
    blog = b'{"id": "b1", "title": "T", "authorId": "a1", "createdAt": "2025-01-01"}\n'
    await http.post("/ingest/blogs", content=blog, headers=NDJSON)
    views = b"".join(orjson.dumps({"eventId": f"e{i}", "blogId": "b1"}) + b"\n" for i in range(7))
    await http.post("/ingest/views", content=views + b'{"blogId": "zz"}\n', headers=NDJSON)
    await http.post("/ingest/views", content=views[: views.index(b"\n") + 1], headers=NDJSON)  # one duplicate
    after = await scrape(http)

    def delta(**labels: str) -> float:
        name = "analytics_rows_ingested_total"
        return (sample(after, name, **labels) or 0.0) - (sample(before, name, **labels) or 0.0)

    assert delta(kind="views", outcome="accepted") == 7
    assert delta(kind="views", outcome="rejected") == 1
    assert delta(kind="views", outcome="duplicates") == 1
    assert delta(kind="authors", outcome="accepted") == 1
    assert sample(after, "analytics_rollup_pending_events") == 7
    assert sample(after, "analytics_rollup_last_pass_seconds") is None  # no pass has run yet

    before = time.time()
    r = rollup.catch_up(db, Settings(database_url=db.settings.db_url), quiet=True)
    after_pass = time.time()
    folded = await scrape(http)
    assert sample(folded, "analytics_rollup_pending_events") == 0
    seconds = sample(folded, "analytics_rollup_last_pass_seconds")
    assert seconds is not None and 0 <= seconds <= r.seconds + 0.001  # the pass's own time, in ms resolution
    ran_at = sample(folded, "analytics_rollup_last_run_timestamp_seconds")
    assert ran_at is not None and before - 0.001 <= ran_at <= after_pass


async def _timed_get(http: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    import time

    t0 = time.monotonic()
    r = await http.get(path)
    return r, time.monotonic() - t0


async def test_readyz_and_metrics_bounded_when_statements_hang(empty_db_url: str) -> None:
    """F10: a statement that hangs (here: a lock held by a stuck migration) must not hang the probes.

    Without a bound, /readyz waited for statement_timeout (30 s) and /metrics the same, longer than any probe's or
    Prometheus scrape's timeout; they must answer (503 / the gauges left out) within a few seconds.
    """
    import sqlalchemy

    db = Database(Settings(database_url=empty_db_url))
    migrations.upgrade(db)
    locker = sqlalchemy.create_engine(normalise_url(empty_db_url))
    try:
        async for http in client(db):
            with locker.connect() as conn:
                conn.execute(sqlalchemy.text("LOCK TABLE alembic_version, view_events IN ACCESS EXCLUSIVE MODE"))
                r, took = await _timed_get(http, "/readyz")
                assert (r.status_code, r.json()) == (503, {"status": "unavailable",
                                                           "reason": "database did not answer in time"})
                assert took < 8, took
                m, took = await _timed_get(http, "/metrics")
                assert m.status_code == 200 and took < 8, took
                assert "analytics_rollup_pending_events" not in m.text
                assert "analytics_http_requests_total" in m.text
                assert (await http.get("/healthz")).status_code == 200
                conn.rollback()
            r = await http.get("/readyz")
            assert r.status_code == 200, r.text
            assert sample(await scrape(http), "analytics_rollup_pending_events") == 0
    finally:
        locker.dispose()
        db.dispose()


async def test_readyz_and_metrics_bounded_when_the_server_does_not_answer() -> None:
    """A frozen server (F7/F11 style): TCP accepts, nothing ever answers, so no statement_timeout can fire.

    The probe stops waiting after PROBE_TIMEOUT_S (3 s), well before the driver's 5 s connect timeout.
    """
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody reads the startup packet
        port = silent.getsockname()[1]
        db = Database(Settings(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/none"))
        try:
            async for http in client(db):
                r, took = await _timed_get(http, "/readyz")
                assert (r.status_code, r.json()) == (503, {"status": "unavailable",
                                                           "reason": "database did not answer in time"})
                assert took < 4.5, took
                m, took = await _timed_get(http, "/metrics")
                assert m.status_code == 200 and took < 4.5, took
                assert "analytics_rollup_pending_events" not in m.text
        finally:
            db.dispose()


async def test_probes_answer_while_every_request_thread_is_busy(http: httpx.AsyncClient, db: Database) -> None:
    """16 slow GraphQL requests hold every request thread: /readyz and /metrics still answer at once."""
    import anyio

    from analytics_gql.api.context import DEFAULT_THREADS

    RELEASE.clear()
    results: list[dict] = []  # type: ignore[type-arg]

    async def slow() -> None:
        results.append((await http.post("/graphql", json={"query": "{ stuck }"}, timeout=60)).json())

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(DEFAULT_THREADS):
                tg.start_soon(slow)
            await anyio.sleep(0.5)
            with anyio.fail_after(2.5):
                r = await http.get("/readyz")
                assert (r.status_code, r.json()) == (200, {"status": "ready",
                                                           "revision": migrations.head_revision(db)})
                assert sample(await scrape(http), "analytics_rollup_pending_events") == 0
            assert results == []  # the slow ones were all still running
            RELEASE.set()
    finally:
        RELEASE.set()
    assert results == [{"data": {"stuck": 1}}] * DEFAULT_THREADS
