"""Long loading work shows a progress bar on a terminal (issue 2: seed and import), and its one-line summary."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from analytics_gql import loading
from analytics_gql.storage import ingest
from analytics_gql.storage.engine import Database


def _final_bar(err: str, unit: str) -> str:
    frames = [f for f in re.split(r"[\r\n]", err) if unit in f and "%" in f]
    assert frames, err
    return frames[-1]


def test_seed_shows_a_bar_that_reaches_every_view(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    result = loading.seed(db, authors=5, blogs=20, views=3_000, days=30, seed=7, progress=True)
    assert result.accepted == 3_000
    last = _final_bar(capsys.readouterr().err, "views")
    assert last.startswith("seed: 100%") and "3.00k/3.00k" in last, last
    with db.read() as conn:
        assert ingest.count_views(conn) == 3_000


def test_import_shows_a_bar_over_the_file(db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "authors.ndjson"
    path.write_bytes(b"".join(orjson.dumps({"id": f"a{i}", "name": f"N{i}"}) + b"\n" for i in range(500)))
    result = loading.import_path(db, "authors", str(path), progress=True)
    assert (result.accepted, result.rejected) == (500, 0)
    captured = capsys.readouterr()
    last = _final_bar(captured.err, "B/")
    assert last.startswith("import authors: 100%"), last
    assert "authors: 500 accepted, 0 duplicates, 0 rejected" in captured.out + captured.err
