"""ANALYTICS_RATE_LIMIT through the real app: 429 with Retry-After past the burst, refill, buckets per key or per
address, probes and static files never limited, authentication (401) before the bucket, the body never read."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import httpx
import orjson
import pytest
from sqlalchemy import func, select

from analytics_gql.api.app import create_app
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import authors

pytestmark = pytest.mark.anyio
QUERY = {"query": "{ rollupStatus { pendingEvents } }"}
OK = {"data": {"rollupStatus": {"pendingEvents": 0}}}
KEYS = "k1:read,ingest;k2:read"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refused(wait: int, rule: str) -> dict[str, object]:
    return {"errors": [{"message": f"rate limit exceeded ({rule}); retry after {wait} s",
                        "extensions": {"code": "RATE_LIMITED"}}]}


@asynccontextmanager
async def serving(db: Database, **kw: str) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """One app; `client(address)` gives an HTTP client seen by the app as coming from that address."""
    app = create_app(Settings(database_url=db.settings.db_url, **kw), db=db)  # type: ignore[arg-type]
    clients: list[httpx.AsyncClient] = []

    def client(address: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://testserver"))
        return clients[-1]

    try:
        yield client
    finally:
        for c in clients:
            await c.aclose()


async def test_429_after_the_burst_with_retry_after_from_the_bucket(db: Database) -> None:
    async with serving(db, api_keys=KEYS, rate_limit="1/min, burst 3") as client:
        http = client()
        for _ in range(3):
            r = await http.post("/graphql", json=QUERY, headers=bearer("k1"))
            assert (r.status_code, r.json()) == (200, OK)
        # 3 tokens taken within a second at 1/min: the next token is 60 s minus the elapsed fraction away -> 60
        r = await http.post("/graphql", json=QUERY, headers=bearer("k1"))
        assert (r.status_code, r.headers["retry-after"], r.json()) == (429, "60", refused(60, "1/min, burst 3"))
        assert r.headers["content-type"] == "application/json" and r.headers["x-request-id"]


async def test_ingest_is_limited_before_its_body_is_read(db: Database) -> None:
    async with serving(db, api_keys=KEYS, rate_limit="1/min, burst 1", max_ingest_bytes="1024") as client:
        http = client()
        line = orjson.dumps({"id": "a1", "name": "Abebe"})
        r = await http.post("/ingest/authors", content=line, headers={**bearer("k1"), "Content-Type":
                                                                        "application/x-ndjson"})
        assert (r.status_code, r.json()["accepted"]) == (200, 1)
        # Over the body limit and not NDJSON either: still 429, since the bucket is checked before the body.
        r = await http.post("/ingest/authors", content=b"x" * 5000, headers={**bearer("k1"), "Content-Type":
                                                                               "text/plain"})
        assert (r.status_code, r.headers["retry-after"]) == (429, "60")
        r = await http.post("/graphql", json=QUERY, headers=bearer("k1"))  # one bucket per key for every endpoint
        assert r.status_code == 429
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(authors)).scalar_one() == 1


async def test_a_refill_lets_requests_through_again(db: Database) -> None:
    async with serving(db, api_keys=KEYS, rate_limit="2/s, burst 1") as client:
        http = client()
        assert (await http.post("/graphql", json=QUERY, headers=bearer("k1"))).status_code == 200
        r = await http.post("/graphql", json=QUERY, headers=bearer("k1"))
        assert (r.status_code, r.headers["retry-after"]) == (429, "1")  # up to 0.5 s to the next token
        await anyio.sleep(0.6)  # one token back at 2/s
        assert (await http.post("/graphql", json=QUERY, headers=bearer("k1"))).status_code == 200
        assert (await http.post("/graphql", json=QUERY, headers=bearer("k1"))).status_code == 429


async def test_keys_have_separate_buckets(db: Database) -> None:
    async with serving(db, api_keys=KEYS, rate_limit="1/min, burst 2") as client:
        http = client()
        codes = [(await http.post("/graphql", json=QUERY, headers=bearer(k))).status_code
                 for k in ("k1", "k1", "k1", "k2", "k2", "k2")]
        assert codes == [200, 200, 429, 200, 200, 429]
        # The same key from another address is the same caller: the same (empty) bucket.
        r = await client("10.1.2.3").post("/graphql", json=QUERY, headers={"X-API-Key": "k1"})
        assert r.status_code == 429


async def test_an_open_server_has_a_bucket_per_client_address(db: Database) -> None:
    async with serving(db, rate_limit="1/min, burst 2") as client:
        a, a_again, b = client("10.0.0.1"), client("10.0.0.1"), client("10.0.0.2")
        codes = [(await c.post("/graphql", json=QUERY)).status_code for c in (a, a_again, a, b, b, b)]
        assert codes == [200, 200, 429, 200, 200, 429]


async def test_probes_metrics_graphiql_and_static_files_are_never_limited(db: Database) -> None:
    async with serving(db, rate_limit="1/min, burst 1") as client:
        http = client()
        assert (await http.post("/graphql", json=QUERY)).status_code == 200
        assert (await http.post("/graphql", json=QUERY)).status_code == 429
        page = await http.get("/graphql", headers={"Accept": "text/html"})
        asset = page.text.split('src="', 1)[1].split('"', 1)[0]
        assert asset.startswith("/static/")
        for _ in range(5):
            for path, headers in (("/healthz", {}), ("/readyz", {}), ("/metrics", {}), (asset, {}),
                                  ("/graphql", {"Accept": "text/html"})):
                assert (await http.get(path, headers=headers)).status_code == 200, path
        metrics = (await http.get("/metrics")).text
        assert 'analytics_http_requests_total{route="/graphql",status="429"}' in metrics


async def test_authentication_comes_before_the_bucket(db: Database) -> None:
    async with serving(db, api_keys=KEYS, rate_limit="1/min, burst 2") as client:
        http = client()
        # Unknown and missing keys are 401, and take no token from anyone's bucket.
        for headers in (bearer("nope"), {}, bearer("nope"), {}, bearer("k1x")):
            r = await http.post("/graphql", json=QUERY, headers=headers)
            assert (r.status_code, r.json()["errors"][0]["extensions"]["code"]) == (401, "UNAUTHENTICATED")
        codes = [(await http.post("/graphql", json=QUERY, headers=bearer("k1"))).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = await http.post("/graphql", json=QUERY, headers=bearer("nope"))  # an empty k1 bucket does not matter
        assert r.status_code == 401


async def test_no_limit_unless_set(db: Database) -> None:
    async with serving(db) as client:
        http = client()
        codes = {(await http.post("/graphql", json=QUERY)).status_code for _ in range(60)}
        assert codes == {200}
