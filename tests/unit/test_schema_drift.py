"""DESIGN 7.6: schema.graphql is what `analytics-gql export-schema` prints; a test fails when it drifts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from analytics_gql.api.schema import sdl
from analytics_gql.cli import main

COMMITTED = Path(__file__).resolve().parents[2] / "schema.graphql"
FIX = "run `analytics-gql export-schema -o schema.graphql` and commit the result"


def test_sdl_equals_the_committed_schema() -> None:
    assert sdl() == COMMITTED.read_text(encoding="utf-8"), f"schema.graphql is stale: {FIX}"


def test_export_schema_command_prints_it(tmp_path: Path) -> None:
    out = tmp_path / "schema.graphql"
    assert main(["export-schema", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8"), FIX
    # The console script itself, as CI and developers run it (stdout).
    script = Path(sys.executable).parent / "analytics-gql"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "analytics_gql.cli"]
    done = subprocess.run([*cmd, "export-schema"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == COMMITTED.read_text(encoding="utf-8"), FIX


def test_the_schema_holds_the_contract_names() -> None:
    text = COMMITTED.read_text(encoding="utf-8")
    for name in ("blogViews(groupBy: Dimension!", "top(dimension: Dimension!", "limit: Int = 10",
                 "performance(granularity: Granularity!, range: TimeRange!", "first: Int = 100",
                 "rollupStatus", "refreshRollups", "upsertAuthors", "upsertBlogs", "recordViews",
                 "VIEWER_COUNTRY", "AUTO", "otherViews", "blogsCreated", "periodLabel", "endCursor"):
        assert name in text, name
