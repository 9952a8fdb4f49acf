"""docs/API.md (issue 13 item 9): every example of the page, in order, against a live `analytics-gql serve`
started with the page's own settings, on SQLite and PostgreSQL; every answer exactly as the page shows it."""

from __future__ import annotations

import datetime as dt
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import doc_examples
import httpx
from graphql import build_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from jobs_helpers import cli, free_port  # noqa: E402

from analytics_gql.storage.engine import Database  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
API_DOC = REPO / "docs" / "API.md"


def _serve(url: str, settings: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """`serve` on a free port with the page's settings; back once it is ready and its first pass has run."""
    port = free_port()
    proc = cli(["serve", "--port", str(port)], {**settings, "ANALYTICS_DATABASE_URL": url})
    base = f"http://127.0.0.1:{port}"
    key = {"Authorization": f"Bearer {settings_key(settings, 'read')}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            # The page's rollupStatus answers assume the first pass (at start, on the empty database) is done.
            r = httpx.post(f"{base}/graphql", json={"query": "{ rollupStatus { lastRunAt } }"}, headers=key,
                           timeout=2)
            if r.status_code == 200 and r.json()["data"]["rollupStatus"]["lastRunAt"] is not None:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.stderr.read().decode()[-2000:] if proc.stderr else "serve did not start")


def settings_key(settings: dict[str, str], scope: str) -> str:
    """The first key of the page's ANALYTICS_API_KEYS that has `scope`."""
    for entry in settings["ANALYTICS_API_KEYS"].split(";"):
        key, _, scopes = entry.partition(":")
        if scope in scopes.split(","):
            return key
    raise AssertionError(f"the page's ANALYTICS_API_KEYS has no {scope} key")


def test_every_api_doc_example_answers_as_shown(db: Database, tmp_path: Path) -> None:
    doc = doc_examples.parse(API_DOC.read_text(encoding="utf-8"))
    # The page's own setup: a rollup interval long enough that only refreshRollups starts a pass.
    assert int(doc.settings["ANALYTICS_ROLLUP_INTERVAL"]) >= 3600
    for name, text in doc.files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    settings = {k: v for k, v in doc.settings.items() if k != "ANALYTICS_DATABASE_URL"}
    since = dt.datetime.now(dt.UTC)
    proc, base = _serve(db.settings.db_url, settings)
    try:
        problems = [p for ex in doc.examples for p in doc_examples.check(ex, base, tmp_path, since)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(40)
    assert not problems, "\n".join(problems)


def test_api_doc_has_an_example_of_every_query_mutation_and_endpoint() -> None:
    doc = doc_examples.parse(API_DOC.read_text(encoding="utf-8"))
    graphql = "\n".join(ex.text for ex in doc.examples if ex.kind == "graphql")
    shell = "\n".join(ex.text for ex in doc.examples if ex.kind == "sh")
    schema = build_schema((REPO / "schema.graphql").read_text(encoding="utf-8"))
    assert schema.query_type is not None and schema.mutation_type is not None
    fields = [*schema.query_type.fields, *schema.mutation_type.fields]
    missing = [name for name in fields if not re.search(rf"\b{name}\s*[({{]", graphql)]
    endpoints = ["/ingest/authors", "/ingest/blogs", "/ingest/views", "/graphql", "/export", "/healthz", "/readyz",
                 "/metrics"]
    missing += [path for path in endpoints if f"127.0.0.1:8000{path}" not in shell]
    assert not missing, f"docs/API.md has no example of {missing}"


def test_the_now_placeholder_accepts_only_instants_of_the_run() -> None:
    since = dt.datetime.now(dt.UTC)
    now = since.isoformat()
    assert doc_examples.match({"a": "<now>"}, {"a": now}, since) == []
    assert doc_examples.match({"a": "<now>"}, {"a": "2020-01-01T00:00:00+00:00"}, since) != []
    assert doc_examples.match({"a": "<now>"}, {"a": now.replace("+00:00", "")}, since) != []  # no offset
    assert doc_examples.match({"a": 1}, {"a": 1.0}, since) != []  # 1 and 1.0 are different answers
    assert doc_examples.match({"a": [1, 2]}, {"a": [2, 1]}, since) != []
