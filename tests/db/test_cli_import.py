"""`analytics-gql migrate` then `import` as a subprocess, on SQLite and PostgreSQL: counts, line numbers, re-import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
from sqlalchemy import select

from analytics_gql.settings import Settings
from analytics_gql.storage import ingest
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import view_events

CLI = str(Path(sys.executable).with_name("analytics-gql"))
BAD_LINES = {10: "unknown blog 'ghost'", 500: "invalid JSON", 1000: "viewedAt: '2025-13-01T00:00:00Z' is not"}


def run(url: str, cwd: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANALYTICS_DATABASE_URL": url}
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=env, input=stdin.decode() if stdin else None, capture_output=True, text=True,
        timeout=120,
    )


def write_ndjson(path: Path, items: list[dict[str, object]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(i) + b"\n" for i in items))


def views_file(path: Path) -> None:
    lines = []
    for n in range(1, 1001):
        item = {"eventId": f"e{n}", "blogId": "b1" if n % 2 else "b2", "viewerId": f"u{n % 7}",
                "viewerCountry": "KE" if n % 3 else None, "viewedAt": f"2025-02-01T12:{n % 60:02d}:00Z"}
        if n == 10:
            item["blogId"] = "ghost"
        if n == 1000:
            item["viewedAt"] = "2025-13-01T00:00:00Z"
        line = orjson.dumps(item)
        lines.append(line[:-5] if n == 500 else line)
    path.write_bytes(b"\n".join(lines) + b"\n")


def count(url: str) -> int:
    db = Database(Settings(database_url=url))
    try:
        with db.read() as conn:
            return ingest.count_views(conn)
    finally:
        db.dispose()


def test_migrate_import_and_reimport(db_url: str, tmp_path: Path) -> None:
    assert run(db_url, tmp_path, "migrate").returncode == 0
    write_ndjson(tmp_path / "authors.ndjson", [{"id": "a1", "name": "Abebe", "country": "ET"}])
    write_ndjson(tmp_path / "blogs.ndjson", [
        {"id": "b1", "title": "Hello", "authorId": "a1", "country": "ET", "createdAt": "2025-01-03T10:00:00Z"},
        {"id": "b2", "title": "Again", "authorId": "a1", "createdAt": "2025-01-04T10:00:00Z"},
    ])
    for kind in ("authors", "blogs"):
        done = run(db_url, tmp_path, "import", kind, str(tmp_path / f"{kind}.ndjson"))
        assert done.returncode == 0, done.stderr
    views_file(tmp_path / "views.ndjson")

    first = run(db_url, tmp_path, "import", "views", str(tmp_path / "views.ndjson"))
    assert first.returncode == 2
    assert "views: 997 accepted, 0 duplicates, 3 rejected in " in first.stdout
    bad = [line for line in first.stderr.splitlines() if line.startswith("line ")]
    assert [int(line.split(":")[0].split()[1]) for line in bad] == sorted(BAD_LINES)
    for line, (n, reason) in zip(bad, sorted(BAD_LINES.items()), strict=True):
        assert line.startswith(f"line {n}: {reason}")
    assert count(db_url) == 997

    again = run(db_url, tmp_path, "import", "views", str(tmp_path / "views.ndjson"), "--no-progress")
    assert again.returncode == 2
    assert "views: 0 accepted, 997 duplicates, 3 rejected in " in again.stdout
    assert count(db_url) == 997


def test_csv_and_stdin(db_url: str, tmp_path: Path) -> None:
    assert run(db_url, tmp_path, "migrate").returncode == 0
    (tmp_path / "authors.csv").write_text("id,name,country\na1,Abebe,ET\na2,Mei,\n")
    (tmp_path / "blogs.csv").write_text("id,title,authorId,country,createdAt\nb1,\"Hello, world\",a2,,2025-01-03\n")
    (tmp_path / "views.csv").write_text(
        "eventId,blogId,viewerId,viewerCountry,viewedAt\n"
        "c1,b1,,KE,2025-02-01T12:00:00Z\n"
        ",b1,u1,,2025-02-01T13:00:00+01:00\n"
        "c3,b1,u1,KE,2025-02-01,extra\n"
        "c1,b1,,,2025-02-01T12:00:00Z\n"
    )
    for kind in ("authors", "blogs"):
        assert run(db_url, tmp_path, "import", kind, str(tmp_path / f"{kind}.csv")).returncode == 0
    done = run(db_url, tmp_path, "import", "views", str(tmp_path / "views.csv"))
    assert done.returncode == 2
    assert "views: 2 accepted, 1 duplicates, 1 rejected" in done.stdout
    assert "line 4: 6 cells but the header has 5 columns" in done.stderr

    piped = run(db_url, tmp_path, "import", "views", "-",
                stdin=b'{"eventId": "s1", "blogId": "b1", "viewedAt": "2025-02-02T00:00:00Z"}\n\n{"blogId": "b1"}\n')
    assert piped.returncode == 0, piped.stderr
    assert "views: 2 accepted, 0 duplicates, 0 rejected" in piped.stdout
    db = Database(Settings(database_url=db_url))
    try:
        with db.read() as conn:
            rows = conn.execute(select(view_events.c.event_id, view_events.c.viewer_id, view_events.c.viewer_country,
                                       view_events.c.viewed_at).order_by(view_events.c.id).limit(3)).all()
    finally:
        db.dispose()
    assert [tuple(r) for r in rows] == [
        ("c1", None, "KE", 1_738_411_200_000_000),
        (None, "u1", None, 1_738_411_200_000_000),
        ("s1", None, None, 1_738_454_400_000_000),
    ]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert run(url, tmp_path, "migrate").returncode == 0
    done = run(url, tmp_path, "import", "views", str(tmp_path / "nope.ndjson"))
    assert done.returncode == 2
    assert "error: cannot read" in done.stderr and "No such file or directory" in done.stderr
