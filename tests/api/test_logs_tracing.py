"""Logs and tracing (issue 13 item 8): JSON lines off a terminal and readable lines on one, one line per request
with its id, key name (never the key), operation name, duration and status; OpenTelemetry spans of operations and
root fields when ANALYTICS_TRACING is on, and the same answers as without."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from analytics_gql import loading, logs, rollup
from analytics_gql.api.app import create_app
from analytics_gql.errors import UserError
from analytics_gql.settings import Settings
from analytics_gql.storage import schema
from analytics_gql.storage.engine import Database

READ_KEY, INGEST_KEY = "read-key-1f2e3d4c", "ingest-key-5a6b7c8d"
KEYS = f"{READ_KEY}:read;{INGEST_KEY}:ingest"
TOP = "query TopBlogs { top(dimension: BLOG, limit: 2) { totalViews nodes { key views } } }"


def fingerprint(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(Settings(database_url=f"sqlite:///{tmp_path / 'logs.db'}"))
    schema.upgrade(db)
    loading.seed(db, authors=2, blogs=3, views=30, days=5, seed=1, progress=False)
    rollup.refresh(db, db.settings)
    yield db
    db.dispose()


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record of the request logger at DEBUG, formatted as JSON lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("analytics_gql.requests")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_formats_json_off_a_terminal_and_text_on_one() -> None:
    assert isinstance(logs.formatter("auto", io.StringIO()), logs.JsonFormatter)
    assert isinstance(logs.formatter("auto", Tty()), logs.TextFormatter)
    assert isinstance(logs.formatter("json", Tty()), logs.JsonFormatter)
    assert isinstance(logs.formatter("text", io.StringIO()), logs.TextFormatter)
    with pytest.raises(ValueError, match="use one of auto, json, text"):
        logs.formatter("xml")
    record = logging.LogRecord("analytics_gql.requests", logging.INFO, __file__, 1, "POST %s %d", ("/graphql", 200),
                               None)
    record.created = 1_764_720_000.1234
    record.request_id, record.status, record.key, record.operation = "r-1", 200, "key-00aa11bb", "TopBlogs"
    assert json.loads(logs.JsonFormatter().format(record)) == {
        "time": "2025-12-03T00:00:00.123Z", "level": "INFO", "logger": "analytics_gql.requests",
        "message": "POST /graphql 200", "request_id": "r-1", "status": 200, "key": "key-00aa11bb",
        "operation": "TopBlogs"}
    text = logs.TextFormatter().format(record)
    assert text.endswith("INFO analytics_gql.requests: POST /graphql 200 request_id=r-1 status=200 key=key-00aa11bb "
                         "operation=TopBlogs")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = logging.LogRecord("analytics_gql.api", logging.ERROR, __file__, 1, "internal error", (),
                                   sys.exc_info())
    doc = json.loads(logs.JsonFormatter().format(failed))
    assert doc["message"] == "internal error" and "RuntimeError: boom" in doc["exception"]


def test_one_line_per_request_with_id_key_name_operation_duration_status(database: Database,
                                                                           captured: io.StringIO) -> None:
    settings = Settings(database_url=database.settings.db_url, api_keys=KEYS)
    read = {"Authorization": f"Bearer {READ_KEY}"}
    with TestClient(create_app(settings, database)) as client:
        ok = client.post("/graphql", json={"query": TOP, "operationName": "TopBlogs"},
                         headers={**read, "X-Request-Id": "dash-42"})
        bad = client.post("/graphql", json={"query": '{ top(dimension: BLOG, timeZone: "Mars/Base") { totalViews } }'},
                          headers=read)
        odd = client.post("/graphql", json={"query": "query Q { top(dimension: BLOG) { totalViews } }",
                                            "operationName": "x y\nINJECTED"}, headers=read)
        anonymous = client.post("/graphql", json={"query": TOP})
        ingest = client.post("/ingest/views", content=b'{"blogId": "nope"}\n',
                             headers={"Authorization": f"Bearer {INGEST_KEY}", "Content-Type": "application/x-ndjson"})
        client.get("/healthz")
    assert [r.status_code for r in (ok, bad, odd, anonymous, ingest)] == [200, 200, 400, 401, 400]
    assert ok.json()["data"]["top"]["totalViews"] == 30 and ok.headers["x-request-id"] == "dash-42"
    lines = captured.getvalue().splitlines()
    docs: list[dict[str, Any]] = [json.loads(line) for line in lines]
    assert all(READ_KEY not in line and INGEST_KEY not in line and "Bearer" not in line for line in lines)
    by_id = {d["request_id"]: d for d in docs}
    assert len(by_id) == len(docs) == 6
    first = by_id["dash-42"]
    assert {k: first[k] for k in ("level", "method", "route", "status", "key", "operation")} == {
        "level": "INFO", "method": "POST", "route": "/graphql", "status": 200, "key": fingerprint(READ_KEY),
        "operation": "TopBlogs"}
    assert first["duration_ms"] > 0 and "errors" not in first
    assert by_id[bad.headers["x-request-id"]]["errors"] == ["BAD_USER_INPUT"]
    assert "operation" not in by_id[odd.headers["x-request-id"]]  # a name that is no GraphQL name is left out
    assert "INJECTED" not in "".join(lines)
    unauth = by_id[anonymous.headers["x-request-id"]]
    assert (unauth["status"], "key" in unauth) == (401, False)
    assert {k: by_id[ingest.headers["x-request-id"]][k] for k in ("route", "status", "key")} == {
        "route": "/ingest", "status": 400, "key": fingerprint(INGEST_KEY)}
    assert [d["level"] for d in docs if d["route"] == "/healthz"] == ["DEBUG"]


def test_tracing_spans_operations_and_root_fields_with_the_same_answers(database: Database) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process: OpenTelemetry refuses to replace it later
    answers = []
    for tracing in (False, True):
        settings = Settings(database_url=database.settings.db_url, tracing=tracing)
        with TestClient(create_app(settings, database)) as client:
            r = client.post("/graphql", json={"query": TOP, "operationName": "TopBlogs"})
            answers.append(r.json())
        if not tracing:
            assert exporter.get_finished_spans() == ()
    assert answers[0] == answers[1] and answers[1]["data"]["top"]["totalViews"] == 30
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["GraphQL Parsing", "GraphQL Query: TopBlogs", "GraphQL Resolving: top", "GraphQL Validation"]
    (root,) = [s for s in exporter.get_finished_spans() if s.name == "GraphQL Resolving: top"]
    assert root.attributes is not None and root.attributes["graphql.param.limit"] == 2


def test_tracing_without_opentelemetry_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "strawberry.extensions.tracing", None)  # as if the extra were not installed
    from analytics_gql.api.schema import build_schema

    with pytest.raises(UserError, match=r"pip install 'analytics-gql\[otel\]'"):
        build_schema(Settings(database_url=f"sqlite:///{tmp_path}/x.db", tracing=True))
