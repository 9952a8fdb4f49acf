"""`analytics-gql status` run from the venv on both databases (issue 13 item 2, CONTRACT 6): the lag rises while
events arrive and no pass runs, falls back to 0 after a pass, exit 3 past `--max-lag`; `--json` agrees with the
`rollupStatus` query field for field, and its tables' rows with an independent count; colours only on a terminal."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rollup_helpers import Event, add_events
from sqlalchemy import func, select, text
from starlette.testclient import TestClient

from analytics_gql import rollup
from analytics_gql.api.app import create_app
from analytics_gql.settings import Settings
from analytics_gql.storage import rollups as store
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import rollup_tables, view_events

CLI = str(Path(sys.executable).with_name("analytics-gql"))
HOUR = 3_600_000_000
T0 = 1_741_487_400_000_000  # 2025-03-09T02:30:00Z
STATUS = "{ rollupStatus { watermark pendingEvents lastRunAt grains { grain rows oldest newest retainedFor } } }"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def env(db: Database, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_") and k != "NO_COLOR"}
    out["ANALYTICS_DATABASE_URL"] = db.settings.db_url
    out.update({f"ANALYTICS_{k.upper()}": v for k, v in extra.items()})
    return out


def status(db: Database, cwd: Path, *args: str, **extra: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([CLI, "status", "--json", *args], cwd=cwd, env=env(db, **extra), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode in (0, 3), done.stderr
    assert done.stderr == ""
    return done.returncode, json.loads(done.stdout)


def iso(us: int) -> str:
    return (_EPOCH + dt.timedelta(microseconds=us)).isoformat()


def test_lag_rises_while_events_wait_and_is_0_after_a_pass(db: Database, tmp_path: Path) -> None:
    rc, doc = status(db, tmp_path, "--max-lag", "0")
    assert rc == 0 and (doc["pendingEvents"], doc["lagSeconds"], doc["watermark"], doc["lastPass"]) == (0, 0, None,
                                                                                                        None)
    first: list[Event] = [(1, "US", T0), (2, None, T0 + HOUR)]
    add_events(db, first)
    # Before any pass: the lag is the age of the oldest pending event.
    rc, doc = status(db, tmp_path)
    assert rc == 0 and doc["pendingEvents"] == 2 and doc["oldestPending"]["viewedAt"] == iso(T0)
    assert doc["lagSeconds"] == doc["oldestPending"]["ageSeconds"] >= (time.time() * 1e6 - T0) / 1e6 - 60

    t_before = store.now_us()
    assert rollup.refresh(db, db.settings).events == 2
    rc, doc = status(db, tmp_path, "--max-lag", "0")
    assert rc == 0 and (doc["pendingEvents"], doc["lagSeconds"], doc["oldestPending"]) == (0, 0, None)
    assert doc["lastPass"]["events"] == 2 and doc["watermarkId"] == 2
    assert t_before <= int((dt.datetime.fromisoformat(doc["watermark"]) - _EPOCH) / dt.timedelta(microseconds=1))

    # Events arrive and no pass runs: the lag (time since the watermark instant) grows with each look.
    add_events(db, [(3, "IN", T0 - 400 * 24 * HOUR)])  # a late event: its old viewedAt does not make the lag
    rc, one = status(db, tmp_path)
    time.sleep(0.3)
    add_events(db, [(1, "KE", T0 + 2 * HOUR)])
    rc2, two = status(db, tmp_path, "--max-lag", "3600")
    assert (rc, rc2) == (0, 0)
    assert (one["pendingEvents"], two["pendingEvents"]) == (1, 2)
    assert 0 < one["lagSeconds"] < two["lagSeconds"] < 120
    assert two["lagSeconds"] - one["lagSeconds"] >= 0.3
    assert two["oldestPending"]["id"] == 3 and two["oldestPending"]["viewedAt"] == iso(T0 - 400 * 24 * HOUR)
    rc, over = status(db, tmp_path, "--max-lag", "0.1")
    assert rc == 3 and over["lagExceeded"] is True and over["maxLag"] == 0.1

    assert rollup.refresh(db, db.settings).events == 2
    rc, back = status(db, tmp_path, "--max-lag", "0")
    assert rc == 0 and (back["pendingEvents"], back["lagSeconds"], back["lagExceeded"]) == (0, 0, False)


def test_json_agrees_with_rollup_status_and_an_independent_count(db: Database, tmp_path: Path) -> None:
    evs: list[Event] = [(1 + i % 4, ("US", None, "IN")[i % 3], T0 + (i * 7919 % 900) * HOUR + i) for i in range(60)]
    add_events(db, evs)
    rollup.refresh(db, db.settings)
    add_events(db, [(2, "FR", T0 + 5)])  # one pending
    settings = Settings(database_url=db.settings.db_url, retention="hour=30d")
    with TestClient(create_app(settings, db)) as client:
        api = client.post("/graphql", json={"query": STATUS}).json()["data"]["rollupStatus"]
    rc, doc = status(db, tmp_path, retention="hour=30d")
    assert rc == 0
    assert {k: doc[k] for k in ("watermark", "pendingEvents", "lastRunAt")} == {k: api[k] for k in api if k != "grains"}
    assert [{k: g[k] for k in ("grain", "rows", "oldest", "newest", "retainedFor")} for g in doc["grains"]] \
        == api["grains"]
    assert doc["pendingEvents"] == 1 and doc["timezone"] == "UTC"
    assert [g["retainedFor"] for g in doc["grains"]] == [None, 30, None, None, None, None]

    with db.read() as conn:
        counted = {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
                   for t in (view_events, *rollup_tables.values())}
        sizes = None if db.sqlite else {
            name: int(conn.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": name}).scalar())
            for name in counted}
    assert {t["name"]: t["rows"] for t in doc["tables"]} == counted
    assert counted["view_events"] == 61 and counted["views_hour_total"] > 0
    if db.sqlite:
        assert {t["bytes"] for t in doc["tables"]} == {None}
    else:
        assert {t["name"]: t["bytes"] for t in doc["tables"]} == sizes
        assert all(b > 0 for b in sizes.values())


def test_readable_report_colours_only_on_a_terminal(db: Database, tmp_path: Path) -> None:
    add_events(db, [(1, "US", T0)])
    plain = subprocess.run([CLI, "status", "--max-lag", "0"], cwd=tmp_path, env=env(db), capture_output=True,
                           text=True, timeout=120)
    assert plain.returncode == 3 and "\033[" not in plain.stdout
    lines = plain.stdout.splitlines()
    assert lines[0] == "watermark   never (raw id 0)"
    assert lines[1].startswith("pending     1 event(s), lag ") and lines[1].endswith(" > --max-lag 0 s")
    assert any(line.split()[:4] == ["view_events", "raw", "-", "1"] for line in lines)

    rc, shown = on_terminal(db, tmp_path, {})
    assert rc == 3 and "\033[1;31mlag " in shown  # red past --max-lag
    uncoloured = shown.replace("\033[1;31m", "").replace("\033[0m", "").replace("\r\n", "\n")
    assert seconds_masked(uncoloured) == seconds_masked(plain.stdout)  # the same report, seconds later
    rc, shown = on_terminal(db, tmp_path, {"NO_COLOR": "1"})
    assert rc == 3 and "\033[" not in shown


def seconds_masked(report: str) -> str:
    return re.sub(r"[\d,]+\.\d{3} s", "N s", report)


def on_terminal(db: Database, cwd: Path, extra: dict[str, str]) -> tuple[int, str]:
    """`status --max-lag 0` with its stdout on a pseudo-terminal: exit status and what the terminal got."""
    leader, follower = pty.openpty()
    with subprocess.Popen([CLI, "status", "--max-lag", "0"], cwd=cwd, env={**env(db), **extra}, stdout=follower,
                          stderr=subprocess.PIPE) as proc:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        rc = proc.wait(timeout=120)
    os.close(leader)
    return rc, b"".join(chunks).decode()
