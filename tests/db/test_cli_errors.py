"""Operators' mistakes on the command line: a short `error:` line and a documented exit status, never a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from analytics_gql.settings import Settings
from analytics_gql.storage import schema
from analytics_gql.storage.engine import Database

CLI = str(Path(sys.executable).with_name("analytics-gql"))


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    full.update({f"ANALYTICS_{k.upper()}": v for k, v in env.items()})
    return subprocess.run([CLI, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("env", "message"), [
    ({"timezone": "Mars/Base"}, "error: ANALYTICS_TIMEZONE: unknown IANA time zone 'Mars/Base'\n"),
    ({"retention": "raw=0d"}, "error: ANALYTICS_RETENTION: retention entry 'raw=0d': days must be a positive whole "
                              "number\n"),
    ({"api_keys": "k1:root"}, "error: ANALYTICS_API_KEYS: API key entry 1: unknown scope(s) ['root']; use read, "
                              "ingest, admin\n"),
    ({"rollup_interval": "0"}, "error: ANALYTICS_ROLLUP_INTERVAL: Input should be greater than or equal to 1\n"),
    ({"database_url": "nonsense://x"}, "error: ANALYTICS_DATABASE_URL: not a supported database URL "
                                       "(use sqlite:///PATH or postgresql+psycopg://...)\n"),
    ({"database_url": "not a url"}, "error: ANALYTICS_DATABASE_URL: not a supported database URL "
                                    "(use sqlite:///PATH or postgresql+psycopg://...)\n"),
    ({"database_url": "mysql://u@127.0.0.1/db"}, "error: ANALYTICS_DATABASE_URL: not a supported database URL "
                                                 "(use sqlite:///PATH or postgresql+psycopg://...)\n"),
    ({"database_url": "postgresql+asyncpg://u@127.0.0.1/db"},
     "error: ANALYTICS_DATABASE_URL: the driver 'asyncpg' is not installed "
     "(use sqlite:///PATH or postgresql+psycopg://...)\n"),
    ({"timezone": "Europe"}, "error: ANALYTICS_TIMEZONE: unknown IANA time zone 'Europe'\n"),
    ({"rate_limit": "20 per second"}, "error: ANALYTICS_RATE_LIMIT: rate limit '20 per second': use RATE/s or "
                                      "RATE/min with RATE > 0, optionally followed by ', burst N' with N >= 1 "
                                      "(e.g. '20/s, burst 40')\n"),
])
def test_bad_settings(tmp_path: Path, env: dict[str, str], message: str) -> None:
    done = run(tmp_path, "migrate", **env)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message)
    assert not (tmp_path / "analytics.db").exists()


def test_unreachable_database(tmp_path: Path) -> None:
    done = run(tmp_path, "migrate", database_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: cannot reach the database: ")
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize("command", [["rollup"], ["compact"], ["audit"], ["seed", "--views", "10"],
                                     ["import", "views", "-"]])
def test_commands_refuse_an_unmigrated_database(tmp_path: Path, command: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    db = Database(Settings(database_url=url))
    head = schema.head_revision(db)
    db.dispose()
    # No file at the path (a typo, or migrate never ran): refused, and no empty file is left behind.
    done = run(tmp_path, *command, database_url=url)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"error: no database at {tmp_path / 'fresh.db'}: run `analytics-gql migrate` first (it creates it), "
               "or check ANALYTICS_DATABASE_URL\n")
    assert not (tmp_path / "fresh.db").exists()
    sqlite3.connect(tmp_path / "fresh.db").close()  # an empty database file
    done = run(tmp_path, *command, database_url=url)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"error: the database is not migrated (at revision None, head is {head}): "
               "run `analytics-gql migrate` first\n")


def test_migrate_is_idempotent(db_url: str, tmp_path: Path) -> None:
    db = Database(Settings(database_url=db_url))
    head = schema.head_revision(db)
    db.dispose()
    for _ in range(2):
        done = run(tmp_path, "migrate", database_url=db_url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.endswith(f" to {head}\n")
    done = run(tmp_path, "rollup", database_url=db_url)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("command", ["serve", "worker", "scheduler"])
def test_long_running_commands_refuse_a_bad_url_at_start(tmp_path: Path, command: str) -> None:
    done = run(tmp_path, command, database_url="nonsense://x", redis_url="redis://127.0.0.1:1/0")
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", "error: ANALYTICS_DATABASE_URL: not a supported database URL "
               "(use sqlite:///PATH or postgresql+psycopg://...)\n")


@pytest.mark.parametrize(("args", "message"), [
    (["audit", "--sample", "0"], "argument --sample: must be at least 1, not 0"),
    (["audit", "--sample", "-3"], "argument --sample: must be at least 1, not -3"),
    (["rollup", "--wait", "-1"], "argument --wait: must be 0 or more, not -1"),
    (["rollup", "--wait", "nan"], "argument --wait: must be 0 or more, not nan"),
])
def test_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    """An audit of no cell reported 'no drift' (exit 0); argparse now refuses such values (exit 2)."""
    done = run(tmp_path, *args, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.endswith(f"error: {message}\n"), done.stderr
    assert not (tmp_path / "x.db").exists()


def test_concurrent_migrates_on_postgres(empty_db_url: str, tmp_path: Path) -> None:
    """Two replicas' init containers run `migrate` at the same moment: both succeed, the schema is applied once."""
    import sqlalchemy

    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env["ANALYTICS_DATABASE_URL"] = empty_db_url
    for _ in range(2):  # from an empty database, then from one revision behind head
        procs = [subprocess.Popen([CLI, "migrate"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
        for p in procs:
            for stream in (p.stdout, p.stderr):
                if stream is not None:
                    stream.close()
        assert [code for code, _ in results] == [0, 0, 0, 0], [err[-1500:] for _, err in results]
        db = Database(Settings(database_url=empty_db_url))
        try:
            with db.read() as conn:
                assert schema.current_revision(conn) == schema.head_revision(db)
                versions = conn.execute(sqlalchemy.text("SELECT count(*) FROM alembic_version")).scalar_one()
                assert versions == 1
            schema.downgrade(db, "-1")
        finally:
            db.dispose()


def test_commands_refuse_a_database_one_revision_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(Settings(database_url=url))
    schema.upgrade(db, "head-1")
    with db.read() as conn:
        behind = schema.current_revision(conn)
    head = schema.head_revision(db)
    db.dispose()
    assert behind is not None and behind != head
    done = run(tmp_path, "rollup", database_url=url)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"error: the database is not migrated (at revision {behind}, head is {head}): "
               "run `analytics-gql migrate` first\n")


def test_serve_refuses_a_sqlite_path_with_no_file(tmp_path: Path) -> None:
    """A mistyped path must not start a server on a new, empty database file (which it would then leave behind)."""
    missing = tmp_path / "typo" / "analytics.db"
    done = run(tmp_path, "serve", "--port", "0", database_url=f"sqlite:///{missing}")
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"error: no database at {missing}: run `analytics-gql migrate` first (it creates it), "
               "or check ANALYTICS_DATABASE_URL\n")
    assert not missing.exists() and not missing.parent.exists()
