"""S3: fuzzing the HTTP surface (QUALITY S3, issue 13 item 5).

GraphQL documents generated from `schema.graphql` by hypothesis-graphql (every query and mutation field, arbitrary
arguments; valid documents and, in NEGATIVE mode, documents that break the schema's rules), arbitrary bodies for
POST /graphql and POST /export, and arbitrary NDJSON bodies for POST /ingest/{kind} mixing known-good lines with
junk. Each answer must be
- never a 5xx, and never a masked INTERNAL error (an input a client can send is answered, not crashed on);
- free of what an attacker could learn from: a traceback, SQL, the driver's or the database's name, a file path
  (unless the client sent that very text, which error messages may quote back);
- within 2 s;
and, for ingest, every known-good line is stored exactly once and never reported as rejected.

Examples per test: the counts in the decorators, scaled by ANALYTICS_FUZZ_EXAMPLES (default 1): 2,550 on SQLite
and 1,350 on PostgreSQL per run (`--hypothesis-show-statistics` prints "Stopped because settings.max_examples=N"
for each), derandomized under CI like every Hypothesis test here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import hypothesis_graphql as hg
import orjson
import pytest
from graphql import StringValueNode, build_schema
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select
from starlette.testclient import TestClient

from analytics_gql.api.app import create_app
from analytics_gql.loading import ingest_records
from analytics_gql.rollup import catch_up
from analytics_gql.settings import Settings
from analytics_gql.storage import tables as T
from analytics_gql.storage.engine import Database

SCALE = float(os.environ.get("ANALYTICS_FUZZ_EXAMPLES", "1"))
SDL = (Path(__file__).resolve().parents[2] / "schema.graphql").read_text(encoding="utf-8")
SCHEMA = build_schema(SDL)
QUERY_FIELDS = sorted(SCHEMA.query_type.fields) if SCHEMA.query_type else []
MUTATION_FIELDS = sorted(SCHEMA.mutation_type.fields) if SCHEMA.mutation_type else []
KEYS = "fr:read;fi:ingest;fa:admin"
ADMIN = {"Authorization": "Bearer fa"}
SLOW_S = 2.0

# What no answer may contain unless the request itself did (messages quote a client's bad value back).
LEAKS = [re.compile(p, re.IGNORECASE) for p in (
    r"traceback", r"sqlalchemy", r"psycopg", r"sqlite", r"postgres", r"\bselect\b.*\bfrom\b", r"\binsert into\b",
    r"\bwhere\b.*=", r"File \"", r"/site-packages/", r"/work/", r"\.py\b", r"analytics_gql\.", r"Error\(",
    r"sqlstate", r"OperationalError", r"IntegrityError")]


def n(examples: int) -> int:
    """Examples for one test, scaled."""
    return max(1, round(examples * SCALE))


def fuzz_settings(examples: int) -> Any:
    return settings(max_examples=n(examples), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much, HealthCheck.data_too_large])


def _instant_text() -> st.SearchStrategy[str]:
    """Mostly plausible date-times and dates (so resolvers run), with edges, junk and huge years."""
    datetimes = st.datetimes(min_value=dt.datetime(1, 1, 1),
                             max_value=dt.datetime(9999, 12, 31),
                             timezones=st.sampled_from([None, dt.UTC]) | st.timezones())
    return st.one_of(datetimes.map(lambda d: d.isoformat()), st.dates().map(str),
                     st.sampled_from(["", "now", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
                                      "2025-02-29", "2024-02-29T23:59:59.999999Z", "2025-13-01", "T", "-1"]),
                     st.text(max_size=30))


CUSTOM_SCALARS = {"DateTime": _instant_text().map(lambda s: StringValueNode(value=s))}


def check_answer(request_text: str, status: int, body: bytes, seconds: float) -> None:
    """S3's rules for one answer."""
    text = body.decode("utf-8", "replace")
    assert status < 500, (status, text[:2000], request_text[:2000])
    assert seconds < SLOW_S, (seconds, request_text[:2000])
    assert '"INTERNAL"' not in text, (text[:2000], request_text[:2000])
    for leak in LEAKS:
        m = leak.search(text)
        if m is not None and not leak.search(request_text):
            raise AssertionError(f"answer leaks {m.group(0)!r}: {text[:2000]} (request {request_text[:2000]})")


def post(client: TestClient, path: str, content: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    t0 = time.perf_counter()
    r = client.post(path, content=content, headers=headers)
    body = r.content
    check_answer(content.decode("utf-8", "replace"), r.status_code, body, time.perf_counter() - t0)
    return r.status_code, body


def load_small(db: Database) -> None:
    """A few authors, blogs and views (a rolled-up part and a live tail), so queries read real data."""
    assert ingest_records(db, "authors", [{"id": f"a{i}", "name": f"Author {i}", "country": c}
                                          for i, c in enumerate(["ET", "KE", "US"])]).rejected == 0
    assert ingest_records(db, "blogs", [{"id": f"b{i}", "title": f"Blog {i}", "authorId": f"a{i % 3}",
                                         "createdAt": f"2025-01-{1 + i:02d}T00:00:00Z"}
                                        for i in range(6)]).rejected == 0
    views = [{"blogId": f"b{i % 6}", "viewerId": f"v{i % 17}", "viewerCountry": ["US", "DE", "IN"][i % 3],
              "viewedAt": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:30:00Z", "eventId": f"e{i}"}
             for i in range(300)]
    assert ingest_records(db, "views", views).rejected == 0  # type: ignore[arg-type]
    catch_up(db, Settings(database_url=db.settings.db_url), progress=False, quiet=True)
    assert ingest_records(db, "views", [{"blogId": "b1", "viewedAt": "2025-06-01T00:00:00Z"}]).rejected == 0


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:
    load_small(db)
    settings_ = Settings(database_url=db.settings.db_url, api_keys=KEYS)
    with TestClient(create_app(settings_, db), raise_server_exceptions=False) as c:
        yield c


def graphql_body(doc: str) -> bytes:
    return orjson.dumps({"query": doc})


@fuzz_settings(900)
@given(doc=hg.queries(SCHEMA, fields=QUERY_FIELDS, custom_scalars=CUSTOM_SCALARS))
def test_generated_queries(client: TestClient, doc: str) -> None:
    post(client, "/graphql", graphql_body(doc), {"content-type": "application/json", **ADMIN})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@fuzz_settings(400)
@given(doc=hg.queries(SCHEMA, fields=QUERY_FIELDS, custom_scalars=CUSTOM_SCALARS, mode=hg.Mode.NEGATIVE))
def test_generated_invalid_queries(client: TestClient, doc: str) -> None:
    """Documents that break the schema (wrong types, missing required arguments): errors a client can read (200
    with BAD_USER_INPUT, or a 4xx), never a crash."""
    status, body = post(client, "/graphql", graphql_body(doc), {"content-type": "application/json", **ADMIN})
    answer = orjson.loads(body)
    assert answer.get("errors") or answer.get("data") is not None, answer


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@fuzz_settings(300)
@given(doc=hg.mutations(SCHEMA, fields=MUTATION_FIELDS, custom_scalars=CUSTOM_SCALARS))
def test_generated_mutations(client: TestClient, doc: str) -> None:
    post(client, "/graphql", graphql_body(doc), {"content-type": "application/json", **ADMIN})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@fuzz_settings(300)
@given(doc=hg.queries(SCHEMA, fields=["blogViews", "top", "performance"], custom_scalars=CUSTOM_SCALARS))
def test_generated_exports(client: TestClient, doc: str) -> None:
    status, body = post(client, "/export", graphql_body(doc), {"content-type": "application/json", **ADMIN})
    if status == 200 and not body.startswith(b"{"):
        assert body.endswith(b"\r\n")  # a whole CSV (at least its header)


def dumps(value: Any) -> bytes:
    """JSON of any value, integers beyond 64 bits and NaN included (the stdlib writes what orjson refuses)."""
    return json.dumps(value).encode()


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                          max_size=4),
                           max_leaves=12)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@fuzz_settings(200)
@given(body=st.one_of(st.binary(max_size=400),
                      JSON_VALUES.map(dumps),
                      st.dictionaries(st.sampled_from(["query", "variables", "operationName", "extensions"]),
                                      JSON_VALUES, max_size=4).map(dumps)),
       path=st.sampled_from(["/graphql", "/export"]))
def test_arbitrary_request_bodies(client: TestClient, body: bytes, path: str) -> None:
    post(client, path, body, {"content-type": "application/json", **ADMIN})


# ---------------------------------------------------------------- NDJSON ingest

IDENT = st.text(alphabet=string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=20)
FIELD_VALUES = st.one_of(JSON_VALUES, IDENT, _instant_text(),
                         st.sampled_from(["US", "us", "XX", "", "b1", "a1", "\x00", "x" * 10_000]))
JUNK_LINE = st.one_of(
    st.binary(max_size=200).filter(lambda b: b"\n" not in b),
    JSON_VALUES.map(dumps),
    st.dictionaries(st.sampled_from(["id", "name", "country", "title", "authorId", "createdAt", "eventId",
                                     "blogId", "viewerId", "viewerCountry", "viewedAt", "extra"]),
                    FIELD_VALUES, max_size=7).map(dumps),
)


NAMES = st.text(min_size=1, max_size=50).filter(lambda s: "\x00" not in s)


@st.composite
def ndjson_batches(draw: st.DrawFn, kind: str) -> tuple[bytes, list[int], list[str]]:
    """An NDJSON body; the line numbers of its known-good lines and their ids (eventIds, or author/blog ids)."""
    lines: list[bytes] = []
    good_lines: list[int] = []
    good_ids: list[str] = []
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.booleans()):
            ident = f"fz-{draw(st.uuids()).hex}"
            when = draw(st.datetimes(min_value=dt.datetime(1971, 1, 1),
                                     max_value=dt.datetime(2199, 1, 1),
                                     timezones=st.just(dt.UTC)))
            record: dict[str, Any] = {
                "views": {"eventId": ident, "blogId": draw(st.sampled_from([f"b{j}" for j in range(6)])),
                          "viewedAt": when.isoformat(), "viewerId": draw(IDENT),
                          **({"viewerCountry": draw(st.sampled_from(["US", "KE", "ET"]))}
                             if draw(st.booleans()) else {})},
                "authors": {"id": ident, "name": draw(NAMES)},
                "blogs": {"id": ident, "title": draw(NAMES),
                          "authorId": "a1", "createdAt": when.isoformat()},
            }[kind]
            lines.append(orjson.dumps(record))
            good_lines.append(len(lines))
            good_ids.append(ident)
        else:
            lines.append(draw(JUNK_LINE))
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from([b"", b"   ", b"\r"])))
    sep = draw(st.sampled_from([b"\n", b"\r\n"]))
    return sep.join(lines), good_lines, good_ids


def stored(db: Database, kind: str, ids: list[str]) -> dict[str, int]:
    """How many rows hold each of `ids` (eventId for views)."""
    if not ids:
        return {}
    table, column = {"views": (T.view_events, "event_id"), "authors": (T.authors, "external_id"),
                     "blogs": (T.blogs, "external_id")}[kind]
    col = table.c[column]
    with db.engine.connect() as c:
        rows = c.execute(select(col, func.count()).where(col.in_(ids)).group_by(col)).all()
    return {str(k): int(v) for k, v in rows}


@pytest.mark.parametrize("kind", ["views", "authors", "blogs"])
@fuzz_settings(150)
@given(data=st.data())
def test_arbitrary_ndjson_keeps_every_good_line(client: TestClient, db: Database, kind: str,
                                                data: st.DataObject) -> None:
    body, good_lines, good_ids = data.draw(ndjson_batches(kind))
    status, answer = post(client, f"/ingest/{kind}", body,
                          {"content-type": "application/x-ndjson", "Authorization": "Bearer fi"})
    reply = orjson.loads(answer)
    assert status in (200, 400), reply
    rejected = {e["line"] for e in reply["errors"]}
    assert not rejected & set(good_lines), (reply, good_lines)  # a good line is never refused
    assert (status == 400) == bool(rejected)
    assert stored(db, kind, good_ids) == dict.fromkeys(good_ids, 1)  # every good line stored, once
    # Sending the same body again stores nothing twice: views by eventId, authors and blogs by id.
    status2, answer2 = post(client, f"/ingest/{kind}", body,
                            {"content-type": "application/x-ndjson", "Authorization": "Bearer fi"})
    assert stored(db, kind, good_ids) == dict.fromkeys(good_ids, 1)
