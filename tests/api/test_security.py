"""S1/S4/F17-F22: query bombs, body limits, keys and scopes, masking, introspection, injection, cross-origin."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from enum import Enum

import anyio
import httpx
import pytest
import sqlalchemy.exc
import strawberry
from strawberry.schema.config import StrawberryConfig

from analytics_gql.api.app import create_app
from analytics_gql.api.extensions import MAX_ALIASES, MAX_DEPTH, MAX_TOKENS, schema_extensions
from analytics_gql.api.server import LIMIT_CONCURRENCY
from analytics_gql.errors import BadInput
from analytics_gql.settings import Settings

CALLS: list[str] = []  # every stand-in resolver appends its name: "no resolver ran" is checked on this


@strawberry.enum
class Dimension(Enum):
    BLOG = "BLOG"
    AUTHOR = "AUTHOR"


@strawberry.type
class Node:
    @strawberry.field
    def child(self) -> Node:
        CALLS.append("child")
        return Node()

    @strawberry.field
    def name(self) -> str:
        CALLS.append("name")
        return "n"


@strawberry.type
class Query:
    @strawberry.field
    async def echo(self, text: str) -> str:
        CALLS.append("echo")
        return text

    @strawberry.field
    def node(self) -> Node:
        CALLS.append("node")
        return Node()

    @strawberry.field
    async def top(self, dimension: Dimension, limit: int = 10) -> str:
        CALLS.append("top")
        if not 1 <= limit <= 1000:
            raise BadInput(f"limit must be between 1 and 1000, got {limit}")
        return dimension.value

    @strawberry.field
    async def boom(self) -> int:
        CALLS.append("boom")
        raise sqlalchemy.exc.OperationalError(
            "SELECT secret FROM view_events", {}, Exception("connection to /var/run/postgresql failed (psycopg)"))


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def refresh_rollups(self, info: strawberry.Info) -> bool:
        info.context.require("admin")
        CALLS.append("refreshRollups")
        return True

    @strawberry.mutation
    async def record_views(self, info: strawberry.Info, n: int) -> int:
        info.context.require("ingest")
        CALLS.append("recordViews")
        return n


KEYS = "r1:read;l1:ingest;o1:admin"


def make_settings(tmp_path, **kw) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(database_url=f"sqlite:///{tmp_path / 'sec.db'}", **kw)


def standin_schema(settings: Settings) -> strawberry.Schema:
    return strawberry.Schema(query=Query, mutation=Mutation, extensions=schema_extensions(settings),
                             config=StrawberryConfig(disable_field_suggestions=not settings.introspection))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, schema=standin_schema(settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c
    app.state.db.dispose()


@pytest.fixture
async def prod(tmp_path) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """Production switches: keys, no introspection, no GraphiQL."""
    async for c in client_for(make_settings(tmp_path, api_keys=KEYS, introspection=False, graphiql=False)):
        yield c


@pytest.fixture
async def dev(tmp_path) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """The local default: open, introspection and GraphiQL on."""
    async for c in client_for(make_settings(tmp_path)):
        yield c


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


def gql(query: str, variables: dict | None = None) -> dict:  # type: ignore[type-arg]
    return {"query": query, "variables": variables}


READ = {"Authorization": "Bearer r1"}
INGEST = {"X-API-Key": "l1"}
ADMIN = {"Authorization": "Bearer o1"}

pytestmark = pytest.mark.anyio


# ---- S1 / F17: bombs are refused before any resolver runs ----

async def test_alias_bomb_refused_without_running_a_resolver(prod: httpx.AsyncClient) -> None:
    query = "{ " + " ".join(f'a{i}: echo(text: "x")' for i in range(MAX_ALIASES + 1)) + " }"
    r = await prod.post("/graphql", json=gql(query), headers=READ)
    body = r.json()
    assert r.status_code == 200 and body["data"] is None
    assert "aliases" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert CALLS == []


async def test_aliases_at_the_limit_still_run(prod: httpx.AsyncClient) -> None:
    query = "{ " + " ".join(f'a{i}: echo(text: "x{i}")' for i in range(MAX_ALIASES)) + " }"
    r = await prod.post("/graphql", json=gql(query), headers=READ)
    assert r.json() == {"data": {f"a{i}": f"x{i}" for i in range(MAX_ALIASES)}}
    assert CALLS == ["echo"] * MAX_ALIASES


async def test_depth_bomb_refused_without_running_a_resolver(prod: httpx.AsyncClient) -> None:
    query = "{ node { " + "child { " * (MAX_DEPTH + 3) + "name" + " }" * (MAX_DEPTH + 3) + " } }"
    r = await prod.post("/graphql", json=gql(query), headers=READ)
    body = r.json()
    assert body["data"] is None and "depth" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert CALLS == []


async def test_depth_bomb_through_fragments_refused(prod: httpx.AsyncClient) -> None:
    frags = [f"fragment F{i} on Node {{ child {{ ...F{i + 1} }} }}" for i in range(MAX_DEPTH + 2)]
    frags.append(f"fragment F{MAX_DEPTH + 2} on Node {{ name }}")
    query = "{ node { ...F0 } } " + " ".join(frags)
    r = await prod.post("/graphql", json=gql(query), headers=READ)
    assert r.json()["data"] is None and CALLS == []


async def test_token_bomb_refused_without_running_a_resolver(prod: httpx.AsyncClient) -> None:
    # Many tokens in few bytes (well under the body limit): only the token limit stops this one.
    query = "{ echo(text: \"x\") " + "__typename " * (MAX_TOKENS + 10) + "}"
    assert len(query) < 64 * 1024
    r = await prod.post("/graphql", json=gql(query), headers=READ)
    body = r.json()
    assert body["data"] is None and "tokens" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert CALLS == []


async def test_batch_refused(prod: httpx.AsyncClient) -> None:
    r = await prod.post("/graphql", json=[gql("{ echo(text: \"a\") }")] * 50, headers=READ)
    assert r.status_code == 400 and "batched" in r.json()["errors"][0]["message"]
    assert CALLS == []


async def test_body_over_limit_is_413(prod: httpx.AsyncClient) -> None:
    padding = "#" + "x" * (64 * 1024) + "\n"
    r = await prod.post("/graphql", json=gql(padding + "{ echo(text: \"a\") }"), headers=READ)
    assert r.status_code == 413 and r.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert CALLS == []


async def test_ten_megabyte_chunked_body_is_cut_off_early(prod: httpx.AsyncClient) -> None:
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(160):  # 160 x 64 KiB = 10 MiB, with no Content-Length
            sent += 65536
            yield b" " * 65536

    r = await prod.post("/graphql", content=body(), headers={**READ, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert sent <= 3 * 65536  # stopped reading just past the limit, not after 10 MiB
    assert CALLS == []


def _body_of_size(size: int) -> bytes:
    """A valid JSON operation padded with spaces to exactly `size` bytes."""
    core = b'{"query": "{ echo(text: \\"a\\") }"}'
    return core[:-1] + b" " * (size - len(core)) + b"}"


async def test_body_limit_is_exact(prod: httpx.AsyncClient) -> None:
    """64 KiB (max_body_bytes) is accepted, one byte more is 413, with and without a Content-Length."""
    limit = 64 * 1024
    for size, status in ((limit, 200), (limit + 1, 413)):
        raw = _body_of_size(size)
        assert len(raw) == size

        async def chunked(data: bytes = raw) -> AsyncIterator[bytes]:
            for i in range(0, len(data), 1000):
                yield data[i:i + 1000]

        for content in (raw, chunked()):
            r = await prod.post("/graphql", content=content, headers={**READ, "Content-Type": "application/json"})
            assert r.status_code == status, (size, type(content))
            if status == 200:
                assert r.json() == {"data": {"echo": "a"}}
            else:
                assert r.json()["errors"][0] == {"message": f"request body larger than {limit} bytes",
                                                 "extensions": {"code": "PAYLOAD_TOO_LARGE"}}
    assert CALLS == ["echo", "echo"]


async def test_declared_ten_megabytes_refused_from_the_header(prod: httpx.AsyncClient) -> None:
    r = await prod.post("/graphql", content=b" " * (10 * 1024 * 1024),
                        headers={**READ, "Content-Type": "application/json"})
    assert r.status_code == 413


# ---- S4 / F21: keys before parsing, scopes ----

async def test_no_key_is_401_before_the_body_is_parsed(prod: httpx.AsyncClient) -> None:
    r = await prod.post("/graphql", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_wrong_key_is_401(prod: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": "Bearer r2"}, {"X-API-Key": "r"}, {"Authorization": "Basic r1"},
                    {"Authorization": "Bearer r1x"}, {"X-API-Key": ""}):
        r = await prod.post("/graphql", json=gql("{ echo(text: \"a\") }"), headers=headers)
        assert r.status_code == 401, headers
    assert CALLS == []


async def test_key_in_query_string_is_refused_even_with_a_valid_header(prod: httpx.AsyncClient) -> None:
    for qs in ("api_key=r1", "key=r1", "access_token=r1", "apikey=o1"):
        r = await prod.post(f"/graphql?{qs}", json=gql("{ echo(text: \"a\") }"), headers=READ)
        assert r.status_code == 401 and "URL" in r.json()["errors"][0]["message"], qs
    assert CALLS == []


async def test_both_header_forms_accepted(prod: httpx.AsyncClient) -> None:
    for headers in (READ, {"X-API-Key": "r1"}, {"authorization": "bearer r1"}):
        r = await prod.post("/graphql", json=gql("{ echo(text: \"ok\") }"), headers=headers)
        assert r.json() == {"data": {"echo": "ok"}}


async def test_query_without_read_scope_is_forbidden(prod: httpx.AsyncClient) -> None:
    r = await prod.post("/graphql", json=gql("{ echo(text: \"a\") }"), headers=INGEST)
    body = r.json()
    assert r.status_code == 200 and body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    assert CALLS == []


async def test_mutation_scopes(prod: httpx.AsyncClient) -> None:
    r = await prod.post("/graphql", json=gql("mutation { refreshRollups }"), headers=READ)
    assert r.json()["errors"][0]["extensions"] == {"code": "FORBIDDEN"} and r.json()["data"] is None
    r = await prod.post("/graphql", json=gql("mutation { refreshRollups }"), headers=INGEST)
    assert r.json()["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    r = await prod.post("/graphql", json=gql("mutation { recordViews(n: 3) }"), headers=READ)
    assert r.json()["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    assert CALLS == []
    r = await prod.post("/graphql", json=gql("mutation { recordViews(n: 3) }"), headers=INGEST)
    assert r.json() == {"data": {"recordViews": 3}}
    r = await prod.post("/graphql", json=gql("mutation { refreshRollups recordViews(n: 4) }"), headers=ADMIN)
    assert r.json() == {"data": {"refreshRollups": True, "recordViews": 4}}  # admin implies ingest
    r = await prod.post("/graphql", json=gql("{ echo(text: \"a\") }"), headers=ADMIN)  # and read
    assert r.json() == {"data": {"echo": "a"}}


async def test_open_when_no_keys_configured(dev: httpx.AsyncClient) -> None:
    r = await dev.post("/graphql", json=gql("mutation { refreshRollups }"))
    assert r.json() == {"data": {"refreshRollups": True}}


async def test_ingest_route_needs_key_and_scope(prod: httpx.AsyncClient) -> None:
    line = b'{"id": "a1", "name": "A"}\n'
    ndjson = {"Content-Type": "application/x-ndjson"}
    r = await prod.post("/ingest/authors", content=line, headers=ndjson)
    assert r.status_code == 401
    r = await prod.post("/ingest/authors", content=line, headers={**ndjson, "Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await prod.post("/ingest/authors", content=line, headers={**ndjson, **READ})
    assert r.status_code == 403 and r.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_get_queries_refused(dev: httpx.AsyncClient) -> None:
    r = await dev.get("/graphql", params={"query": "{ echo(text: \"a\") }"})
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await dev.get("/graphql", params={"query": "{ echo(text: \"a\") }"}, headers={"Accept": "text/html"})
    assert r.status_code == 405
    assert CALLS == []


async def test_graphiql_off_in_production(prod: httpx.AsyncClient, dev: httpx.AsyncClient) -> None:
    r = await prod.get("/graphql", headers={"Accept": "text/html"})
    assert r.status_code == 405
    assert (await prod.get("/static/graphiql/init.js")).status_code == 404
    r = await dev.get("/graphql", headers={"Accept": "text/html"})
    assert r.status_code == 200 and "graphiql-config" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]


async def test_dashboard_can_be_switched_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async for off in client_for(make_settings(tmp_path, dashboard=False)):
        assert (await off.get("/dashboard")).status_code == 404
        assert (await off.get("/static/dashboard/dashboard.js")).status_code == 404
        assert (await off.get("/static/graphiql/init.js")).status_code == 200  # GraphiQL stays
    async for on in client_for(make_settings(tmp_path, graphiql=False)):
        r = await on.get("/dashboard")
        assert r.status_code == 200 and "dashboard-config" in r.text
        assert r.headers["content-security-policy"] == (await on.get("/dashboard")).headers[
            "content-security-policy"] and "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert (await on.get("/static/dashboard/uPlot.iife.min.js")).status_code == 200
        assert (await on.get("/static/graphiql/init.js")).status_code == 404


# ---- F18: introspection and suggestions ----

async def test_introspection_off_in_production(prod: httpx.AsyncClient, dev: httpx.AsyncClient) -> None:
    for query in ("{ __schema { types { name } } }", '{ __type(name: "Query") { fields { name } } }'):
        body = (await prod.post("/graphql", json=gql(query), headers=READ)).json()
        assert body["data"] is None and "introspection" in body["errors"][0]["message"].lower(), query
        body = (await dev.post("/graphql", json=gql(query))).json()
        assert "errors" not in body and body["data"], query
    # __typename is not introspection of the schema and stays allowed.
    body = (await prod.post("/graphql", json=gql("{ __typename }"), headers=READ)).json()
    assert body == {"data": {"__typename": "Query"}}


async def test_no_suggestions_in_production(prod: httpx.AsyncClient, dev: httpx.AsyncClient) -> None:
    cases = ['{ ech(text: "a") }', "{ top(dimension: BLG) }", "{ top(dimenson: BLOG) }", "{ node { chil { name } } }"]
    for query in cases:
        shown = (await dev.post("/graphql", json=gql(query))).json()["errors"][0]["message"]
        assert "Did you mean" in shown, query  # the test can fail: suggestions exist in development
        hidden = (await prod.post("/graphql", json=gql(query), headers=READ)).json()["errors"]
        assert all("Did you mean" not in e["message"] for e in hidden), (query, hidden)
        assert all(e["extensions"]["code"] == "BAD_USER_INPUT" for e in hidden)
    assert CALLS == []


# ---- error codes ----

async def test_user_errors_and_bad_input_codes(dev: httpx.AsyncClient) -> None:
    body = (await dev.post("/graphql", json=gql("{ top(dimension: BLOG, limit: 5000) }"))).json()
    assert body["errors"][0]["message"] == "limit must be between 1 and 1000, got 5000"
    assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT"}
    body = (await dev.post("/graphql", json=gql("query($d: Dimension!) { top(dimension: $d) }", {"d": "NOPE"}))).json()
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    body = (await dev.post("/graphql", json=gql("query($n: Int!) { top(dimension: BLOG, limit: $n) }",
                                                {"n": 2**31}))).json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    body = (await dev.post("/graphql", json=gql("{ top(dimension: BLOG"))).json()
    assert "Syntax Error" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    r = await dev.post("/graphql", json={"query": "query A { __typename } query B { __typename }",
                                         "operationName": "C"})
    assert r.status_code in (200, 400) and r.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert CALLS == ["top"]


# ---- F19: database errors are masked, with a request id ----

async def test_database_error_masked_with_request_id(dev: httpx.AsyncClient, caplog) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.ERROR, logger="analytics_gql.api"):
        r = await dev.post("/graphql", json=gql('{ boom echo(text: "still here") }'))
    body = r.json()
    rid = r.headers["x-request-id"]
    assert r.status_code == 200
    assert body["data"] is None  # `boom` is non-null: its error nulls the whole result
    assert body["errors"] == [{"message": "Internal server error", "locations": [{"line": 1, "column": 3}],
                               "path": ["boom"], "extensions": {"code": "INTERNAL", "requestId": rid}}]
    for leak in ("SELECT", "view_events", "postgresql", "psycopg", "OperationalError", "Traceback", "/var/"):
        assert leak not in r.text
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert isinstance(logged[0].exc_info[1], sqlalchemy.exc.OperationalError)


async def test_request_id_on_every_response(prod: httpx.AsyncClient) -> None:
    ids = set()
    for method, path in (("GET", "/healthz"), ("POST", "/graphql"), ("GET", "/nowhere"), ("GET", "/metrics")):
        r = await prod.request(method, path)
        ids.add(r.headers["x-request-id"])
    assert len(ids) == 4
    r = await prod.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    r = await prod.get("/healthz", headers={"X-Request-ID": "bad id\twith <html>"})
    assert r.headers["x-request-id"] != "bad id\twith <html>" and len(r.headers["x-request-id"]) == 32


# ---- F20: hostile strings travel intact ----

INJECTIONS = [
    "' OR 1=1 --", "'; DROP TABLE view_events; --", '" OR ""="', "\\", "%", "_", "\x00", "a\x00b",
    "${jndi:ldap://x}", "<script>alert(1)</script>", "😀" * 10, "\u202e", "x" * 10_000,
]


async def test_injection_strings_round_trip_exactly(dev: httpx.AsyncClient) -> None:
    for s in INJECTIONS:
        r = await dev.post("/graphql", json=gql("query($t: String!) { echo(text: $t) }", {"t": s}))
        assert r.status_code == 200 and r.json() == {"data": {"echo": s}}, repr(s[:20])


async def test_nul_inside_the_document_round_trips(dev: httpx.AsyncClient) -> None:
    # GraphQL allows any Unicode scalar in a string literal, NUL included: it must arrive intact, not crash.
    r = await dev.post("/graphql", json=gql("{ echo(text: \"a\x00b\") }"))
    assert r.status_code == 200 and r.json() == {"data": {"echo": "a\x00b"}}


# ---- F22: cross-origin ----

async def test_no_cors_headers_for_cross_origin_requests(dev: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://evil.example"}
    r = await dev.post("/graphql", json=gql('{ echo(text: "a") }'), headers=origin)
    assert r.status_code == 200
    assert not any(h.lower().startswith("access-control-") for h in r.headers)
    r = await dev.options("/graphql", headers={**origin, "Access-Control-Request-Method": "POST",
                                               "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 405
    assert not any(h.lower().startswith("access-control-") for h in r.headers)


async def test_simple_cross_site_posts_are_refused(dev: httpx.AsyncClient) -> None:
    # What an HTML form or a no-cors fetch can send without a preflight: never executed.
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = await dev.post("/graphql", content=b'{"query": "mutation { refreshRollups }"}',
                           headers={"Content-Type": ctype, "Origin": "https://evil.example"})
        assert r.status_code == 415, ctype
        r = await dev.post("/ingest/authors", content=b'{"id": "a1", "name": "A"}',
                           headers={"Content-Type": ctype})
        assert r.status_code == 415, ctype
    assert CALLS == []


async def test_concurrent_requests_share_the_app(dev: httpx.AsyncClient) -> None:
    results: list[dict] = []  # type: ignore[type-arg]

    async def one(i: int) -> None:
        r = await dev.post("/graphql", json=gql("query($t: String!) { echo(text: $t) }", {"t": str(i)}))
        results.append(r.json())

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(one, i)
    assert sorted(r["data"]["echo"] for r in results) == sorted(str(i) for i in range(50))


# ---- F23: 500 concurrent connections on loopback, against the real uvicorn configuration ----

async def _wait_healthy(base: str) -> None:
    """Until the server process at `base` answers /healthz (10 s at most)."""
    async with httpx.AsyncClient(base_url=base, timeout=2) as probe:
        for _ in range(100):
            try:
                if (await probe.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await anyio.sleep(0.1)


SERVER_CODE = """
import sys, strawberry, uvicorn
from analytics_gql.api.app import create_app
from analytics_gql.api.extensions import schema_extensions
from analytics_gql.api.server import uvicorn_config
from analytics_gql.settings import Settings

@strawberry.type
class Query:
    @strawberry.field
    async def echo(self, text: str) -> str:
        return text

settings = Settings(database_url=sys.argv[2])
app = create_app(settings, schema=strawberry.Schema(query=Query, extensions=schema_extensions(settings)))
uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=int(sys.argv[1]))).run()
"""


@pytest.mark.timeout(120)
async def test_500_concurrent_connections_do_not_crash_the_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(port), f"sqlite:///{tmp_path / 'c.db'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(base)
        def request(i: int) -> bytes:
            body = b'{"query": "{ echo(text: \\"c%d\\") }"}' % i
            return (f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

        statuses: list[int] = []
        failures: list[str] = []
        wrong: list[bytes] = []

        async def one(i: int) -> None:
            try:
                with anyio.fail_after(60):
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                    async with stream:
                        await stream.send(request(i))
                        data = b""
                        try:
                            while True:
                                data += await stream.receive()
                        except (anyio.EndOfStream, anyio.BrokenResourceError):
                            pass
                statuses.append(int(data.split(b" ", 2)[1]))
                if statuses[-1] == 200 and data.split(b"\r\n\r\n", 1)[1] != b'{"data":{"echo":"c%d"}}' % i:
                    wrong.append(data[-80:])  # each connection gets its own answer, whole
            except Exception as e:  # noqa: BLE001 - counted: a refused or reset connection is a failure here
                failures.append(type(e).__name__)

        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(one, i)
        assert proc.poll() is None, "the server died"
        assert failures == [], failures[:5]
        assert len(statuses) == 500 and set(statuses) <= {200, 503}
        assert wrong == [], wrong[:5]
        # Under the connection limit every request is served; over it uvicorn would answer 503, never crash.
        assert statuses.count(200) == (500 if LIMIT_CONCURRENCY > 500 else statuses.count(200)) > 0
        async with httpx.AsyncClient(base_url=base, timeout=5) as after:
            r = await after.post("/graphql", json={"query": '{ echo(text: "after") }'})
            assert r.json() == {"data": {"echo": "after"}}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


SILENT_SERVER_CODE = SERVER_CODE.replace(
    "from analytics_gql.api.server import uvicorn_config",
    "from analytics_gql.api import server\nserver.HEADER_TIMEOUT_S = 1.0\nserver.LIMIT_CONCURRENCY = 20\n"
    "from analytics_gql.api.server import uvicorn_config")


@pytest.mark.timeout(60)
async def test_silent_connections_are_closed_and_do_not_starve_the_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Connections that send nothing, or half a request head, are closed after HEADER_TIMEOUT_S (1 s here).

    Before, uvicorn kept them open forever: LIMIT_CONCURRENCY (20 here) of them and every real request got 503.
    """
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SILENT_SERVER_CODE, str(port), f"sqlite:///{tmp_path / 'c.db'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    query = {"query": '{ echo(text: "x") }'}
    silent: list[socket.socket] = []
    try:
        await _wait_healthy(base)
        for i in range(25):
            sock = socket.create_connection(("127.0.0.1", port))
            if i % 2:
                sock.sendall(b"POST /graphql HTTP/1.1\r\nHost: x\r\n")  # half a head, then silence
            silent.append(sock)
        await anyio.sleep(0.3)
        async with httpx.AsyncClient(base_url=base, timeout=5) as c:
            assert (await c.post("/graphql", json=query)).status_code == 503  # bounded: full, refused at once
        t0 = time.monotonic()
        for sock in silent:
            sock.settimeout(10)
            assert sock.recv(100) == b""  # closed by the server
        assert time.monotonic() - t0 < 5
        async with httpx.AsyncClient(base_url=base, timeout=5) as c:
            r = await c.post("/graphql", json=query)
            assert (r.status_code, r.json()) == (200, {"data": {"echo": "x"}})
    finally:
        for sock in silent:
            sock.close()
        proc.terminate()
        proc.wait(timeout=20)
