"""Issue 4 acceptance 2: every ```graphql block of README.md, GraphiQL's saved examples and the CONTRACT's
examples (its NDJSON lines, and the contract-check queries with their required answers) run through
POST /graphql without errors, on SQLite and PostgreSQL.

The shared folder (../shared next to the repository) holds CONTRACT.md and contract-check; without it these tests
skip locally and fail under CI=true.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from graphql import OperationDefinitionNode, parse
from starlette.testclient import TestClient

from analytics_gql.api import graphiql
from analytics_gql.api.app import create_app
from analytics_gql.rollup import catch_up
from analytics_gql.settings import Settings
from analytics_gql.storage.engine import Database

REPO = Path(__file__).resolve().parents[2]
# .ci/run reads ANALYTICS_SHARED_DIR the same way (a clone elsewhere than beside ../shared).
SHARED = Path(os.environ["ANALYTICS_SHARED_DIR"]) if os.environ.get("ANALYTICS_SHARED_DIR") else REPO.parent / "shared"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NDJSON = {"Content-Type": "application/x-ndjson"}
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def need(path: Path) -> Path:
    """The path, or a skip (locally) / failure (CI) naming what is missing."""
    if not path.exists():
        why = f"{path} is missing (the shared folder sits next to the repository: {SHARED})"
        if CI:
            pytest.fail(why)
        pytest.skip(why)
    return path


def blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, text) of every fenced code block, in order."""
    return [(m.group(1).lower(), m.group(2)) for m in FENCE.finditer(markdown)]


def readme_operations() -> list[tuple[str, str | None, dict[str, Any] | None]]:
    """(document, operationName, variables) for every operation of every ```graphql block in README.md;
    a ```json block right after a graphql block holds its variables."""
    found = blocks((REPO / "README.md").read_text(encoding="utf-8"))
    out = []
    for i, (lang, text) in enumerate(found):
        if lang not in ("graphql", "gql"):
            continue
        variables = json.loads(found[i + 1][1]) if i + 1 < len(found) and found[i + 1][0] == "json" else None
        ops = [d for d in parse(text).definitions if isinstance(d, OperationDefinitionNode)]
        assert ops, f"README graphql block {text[:60]!r} holds no operation"
        for op in ops:
            out.append((text, op.name.value if op.name else None, variables))
    return out


def contract_check() -> ModuleType:
    """../shared/contract-check/check.py, for its comparison of answers with the contract's."""
    path = need(SHARED / "contract-check" / "check.py")
    spec = importlib.util.spec_from_file_location("contract_check", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gql(client: TestClient, query: str, variables: dict[str, Any] | None = None,
        operation: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query, "variables": variables}
    if operation is not None:
        body["operationName"] = operation
    r = client.post("/graphql", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert not got.get("errors"), (operation or query[:80], got["errors"])
    assert got["data"] is not None
    return got  # type: ignore[no-any-return]


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=db.settings.db_url), db)) as c:
        yield c


def ingest(client: TestClient, kind: str, body: bytes) -> None:
    r = client.post(f"/ingest/{kind}", content=body, headers=NDJSON)
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == 0, r.text


def run_case(check: ModuleType, client: TestClient, case: dict[str, Any]) -> str:
    """One contract-check case through POST /graphql (all pages), compared by check.py's own rule."""
    if case["kind"] != "blogViews":
        return str(check.compare(case["kind"], gql(client, case["query"], case["variables"])["data"],
                                 case["expected"]))
    rows: list[dict[str, Any]] = []
    after = None
    for _ in range(50):
        page = gql(client, case["query"], {**case["variables"], "after": after})["data"]["blogViews"]
        rows += page["nodes"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    return str(check.compare("blogViews", {"rows": rows, "totalCount": page["totalCount"]}, case["expected"]))


def test_contract_examples_and_readme_and_graphiql_examples(db: Database, client: TestClient) -> None:
    check = contract_check()
    data = need(SHARED / "contract-check" / "data")
    cases = json.loads(need(SHARED / "contract-check" / "cases.json").read_text(encoding="utf-8"))
    for kind in ("authors", "blogs", "views"):
        ingest(client, kind, (data / f"{kind}.ndjson").read_bytes())
    # The contract's queries, before and after a rollup pass: no errors, and the answers it requires.
    for stage in ("raw", "rolled"):
        failures = [f"{stage} case {i} ({c['kind']}): {why}" for i, c in enumerate(cases)
                    if (why := run_case(check, client, c))]
        assert not failures, "\n".join(failures)
        catch_up(db, Settings(database_url=db.settings.db_url), progress=False, quiet=True)

    # CONTRACT section 2's NDJSON example lines load as they are (authors, blogs, views, in that order).
    contract = need(SHARED / "CONTRACT.md").read_text(encoding="utf-8")
    lines = [line for lang, text in blocks(contract) if lang in ("", "json", "ndjson")
             for line in text.splitlines() if line.startswith("{")]
    assert len(lines) >= 3, "CONTRACT.md's NDJSON example went missing"
    by_kind: dict[str, list[str]] = {"authors": [], "blogs": [], "views": []}
    for line in lines:
        keys = json.loads(line).keys()
        by_kind["views" if "blogId" in keys else "blogs" if "authorId" in keys else "authors"].append(line)
    for kind, kind_lines in by_kind.items():
        ingest(client, kind, "\n".join(kind_lines).encode() + b"\n")
    example = gql(client, '{ top(dimension: VIEWER_COUNTRY, filter: {blog: {eq: "b1"}}) '
                          "{ totalViews nodes { key label views } } }")["data"]["top"]
    assert example["totalViews"] == len(by_kind["views"])

    # README.md: every operation of every ```graphql block.
    ops = readme_operations()
    if CI:
        assert ops, "README.md has no ```graphql example"
    for document, name, variables in ops:
        gql(client, document, variables, name)

    # GraphiQL's saved examples, with their variables.
    for ex in graphiql.examples():
        gql(client, ex.query, ex.variables)
