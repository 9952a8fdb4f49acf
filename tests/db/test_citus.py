"""The same service on a Citus cluster (issue 15): layout, exact passes under concurrency, statements pushed down to
the workers, a worker stopped during a pass, the CLI.

Runs when ANALYTICS_TEST_CITUS_URL points at a coordinator's admin database (tests/conftest.py); skips otherwise,
also under CI (Citus is not in this machine's package registries). The property tests of tests/api run there too
(marked `citus`). The worker-stop test starts a cluster of its own from ANALYTICS_TEST_CITUS_PG_BIN (default
/usr/lib/postgresql/15/bin, which must have the citus extension installed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import citus_cluster
import pytest
from conftest import CITUS_ADMIN_URL, citus_database
from rollup_helpers import assert_exact, assert_readers_exact, raw_events, stored, writers_and_passes
from sqlalchemy import event as sa_event
from sqlalchemy import text
from starlette.testclient import TestClient

from analytics_gql import rollup
from analytics_gql.api.app import create_app
from analytics_gql.settings import Settings
from analytics_gql.storage import citus, fold
from analytics_gql.storage import rollups as store
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import Shape

pytestmark = pytest.mark.skipif(not CITUS_ADMIN_URL, reason="ANALYTICS_TEST_CITUS_URL is not set (no Citus cluster)")
LO = 788_918_400_000_000  # 1995-01-01
CLI = str(Path(sys.executable).with_name("analytics-gql"))
PG_BIN = Path(os.environ.get("ANALYTICS_TEST_CITUS_PG_BIN", "/usr/lib/postgresql/15/bin"))
OWN_PORT = 9810  # the clusters the tests start themselves: coordinator 9810, workers 9811-9813


@pytest.fixture
def cdb() -> Iterator[Database]:
    """A migrated database of our own on the cluster."""
    for url in citus_database():
        d = Database(Settings(database_url=url), pool_size=8)
        try:
            yield d
        finally:
            d.dispose()


def test_migrate_distributes_by_blog_and_colocates(cdb: Database) -> None:
    """pg_dist_partition: raw events and every blog-keyed table distributed by blog_id in one co-location group;
    the dimensions and the dictionary are reference tables; the blog-less shapes stay on the coordinator."""
    with cdb.read() as conn:
        rows = conn.execute(text(
            "SELECT logicalrelid::regclass::text, partmethod, column_to_column_name(logicalrelid, partkey), "
            "colocationid FROM pg_dist_partition")).all()
        pk = conn.execute(text(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_view_events'")).scalar()
    by_name = {r[0]: r for r in rows}
    assert by_name["view_events"][1:3] == ("h", "blog_id")
    assert {n for n, m, *_ in rows if m == "h"} == {"view_events", *citus.BLOG_TABLES}
    assert len({r[3] for r in rows if r[1] == "h"}) == 1, "blog tables not co-located with view_events"
    assert {n for n, m, *_ in rows if m == "n"} == set(citus.REFERENCE_TABLES)
    assert not set(citus.LOCAL_TABLES) & set(by_name)
    assert pk == "PRIMARY KEY (id, blog_id)"
    assert "views_month_by_blog" in citus.BLOG_TABLES and "views_day_total" in citus.LOCAL_TABLES


def test_concurrent_writers_and_passes_are_exact(cdb: Database) -> None:
    """4 writers x 250 transactions of 10 views while 2 threads run passes: every rollup cell and reader set exact."""
    folded = writers_and_passes(cdb, cdb.settings, writers=4, transactions=250, blogs=40, lo=LO)
    assert sum(1 for n in folded if n) >= 2, "passes must have run while writers were writing"
    rollup.catch_up(cdb, cdb.settings, progress=False, quiet=True)
    with cdb.read() as conn:
        assert len(raw_events(conn)) == 10_000
        assert sum(stored(conn)[(store.Grain.DAY, Shape.TOTAL)].values()) == 10_000
    assert_exact(cdb, "UTC")
    assert_readers_exact(cdb, "UTC")


def test_duplicate_event_ids_count_once_per_blog(cdb: Database) -> None:
    """CONTRACT 1 on a deployment distributed by blog: an eventId is unique per blog."""
    with TestClient(create_app(cdb.settings, cdb)) as client:
        ingest(client, "authors", [{"id": "a1", "name": "A"}])
        ingest(client, "blogs", [{"id": f"b{i}", "title": "T", "authorId": "a1", "createdAt": "2024-01-01T00:00:00Z"}
                                 for i in (1, 2)])
        views = [{"eventId": "e1", "blogId": b} for b in ("b1", "b1", "b2")]
        first = ingest(client, "views", views)
        again = ingest(client, "views", views)
    assert (first["accepted"], first["duplicates"]) == (2, 1)
    assert (again["accepted"], again["duplicates"]) == (0, 3)


def ingest(client: TestClient, kind: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    body = "\n".join(json.dumps(r) for r in records)
    r = client.post(f"/ingest/{kind}", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _seed(cdb: Database, views: int = 20_000, seed: int = 3) -> None:
    env = {**os.environ, "ANALYTICS_DATABASE_URL": cdb.settings.db_url}
    subprocess.run([CLI, "seed", "--authors", "20", "--blogs", "200", "--views", str(views), "--days", "400",
                    "--seed", str(seed)], env=env, check=True, capture_output=True)


def _remote_plans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The worker plans of every Citus scan in an EXPLAIN (FORMAT JSON) plan."""
    if plan.get("Custom Plan Provider") == "Citus Adaptive":
        for job in plan.get("Distributed Query", {}).get("Job", {}).get("Tasks", []) or []:
            for remote in job.get("Remote Plan", []):
                yield remote[0]["Plan"] if isinstance(remote, list) else remote["Plan"]
    for child in plan.get("Plans", []):
        yield from _remote_plans(child)
    for sub in plan.get("Distributed Query", {}).get("Subplans", []) or []:
        for p in sub.get("PlannedStmt", []):
            yield from _remote_plans(p["Plan"])


def _raw_scans_without_aggregate(plan: dict[str, Any], grouped: bool = False) -> list[str]:
    """view_events shard scans in a worker plan with no aggregate, DISTINCT or LIMIT (max(id)'s index probe) above
    them."""
    grouped = grouped or plan["Node Type"] in ("Aggregate", "Group", "Unique", "Limit")
    found = []
    if str(plan.get("Relation Name", "")).startswith("view_events") and not grouped:
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found += _raw_scans_without_aggregate(child, grouped)
    return found


def _explain(cdb: Database, statement: str, params: Any) -> dict[str, Any]:
    raw = cdb.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("EXPLAIN (FORMAT JSON) " + statement, params)
        return cur.fetchone()[0][0]["Plan"]  # type: ignore[no-any-return, index]
    finally:
        raw.close()


DISTRIBUTED_NAME = re.compile(r"\b(" + "|".join(("view_events", *citus.BLOG_TABLES)) + r")\b")


def _check_pushed_down(cdb: Database, statements: list[tuple[str, Any]]) -> int:
    """Every captured statement that reads a distributed table runs on the workers (a Citus scan) and returns
    grouped rows: no raw-event scan without an aggregate above it. Returns how many were checked."""
    checked = 0
    for statement, params in statements:
        if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
            continue
        if not DISTRIBUTED_NAME.search(statement):
            continue
        plan = _explain(cdb, statement, params)
        remotes = list(_remote_plans(plan))
        assert remotes, f"not run on the workers: {statement[:300]}"
        for remote in remotes:
            assert not _raw_scans_without_aggregate(remote), f"raw events sent ungrouped: {statement[:300]}"
        checked += 1
    return checked


def test_pass_and_reads_push_down_to_the_workers(cdb: Database) -> None:
    """EXPLAIN of the pass's raw aggregates and of top(BLOG), blogViews(COUNTRY) and performance reads (with and
    without readers, across the rollups and the live raw edges): executed on the workers, grouped there."""
    _seed(cdb)
    settings = Settings(database_url=cdb.settings.db_url, timezone="UTC")
    with cdb.read() as conn:
        lo, hi = conn.execute(text("SELECT min(viewed_at), max(viewed_at) FROM view_events")).one()
    raw = [(sql.replace(":low", "%(low)s").replace(":high", "%(high)s"), {"low": 0, "high": 10_000})
           for sql in fold.raw_deltas(ZoneInfo("UTC"), lo, hi).values()]
    assert _check_pushed_down(cdb, raw) == 3
    statements: list[tuple[str, Any]] = []

    def log(_conn: Any, _cursor: Any, statement: str, params: Any, *_args: Any) -> None:
        statements.append((statement, params))

    sa_event.listen(cdb.engine, "before_cursor_execute", log)
    try:
        rollup.catch_up(cdb, settings, progress=False, quiet=True)
    finally:
        sa_event.remove(cdb.engine, "before_cursor_execute", log)
    # The blog-keyed rollups: co-located INSERT .. SELECT from raw, run shard by shard on the workers.
    inserts = [(s, p) for s, p in statements if re.match(r"INSERT INTO views_\w+ \(bucket, blog_id", s)]
    assert {re.match(r"INSERT INTO (\w+)", s).group(1) for s, _ in inserts} == {  # type: ignore[union-attr]
        n for n in citus.BLOG_TABLES if n.startswith("views_")}
    for statement, params in inserts:
        plan = _explain(cdb, statement, params)
        assert plan.get("Custom Plan Provider") == "Citus Adaptive", plan
        assert "INSERT/SELECT method" not in plan, plan  # not pulled to the coordinator nor repartitioned
        assert "FROM view_events" in statement
    statements.clear()

    queries = [
        "query { top(dimension: BLOG, range: {start: \"2025-01-01T00:00:00.123Z\"}) { nodes { key views } } }",
        "query { top(dimension: BLOG, orderBy: READERS, range: {start: \"2025-01-01T00:00:00.123Z\"}) "
        "{ totalReaders nodes { key readers } } }",
        "query { blogViews(groupBy: COUNTRY, granularity: MONTH, range: {start: \"2025-01-01T00:00:00.5Z\"}) "
        "{ nodes { key views readers } } }",
        "query { performance(granularity: DAY, range: {start: \"2025-06-01T00:00:00.5Z\"}) "
        "{ points { views readers } } }",
    ]
    sa_event.listen(cdb.engine, "before_cursor_execute", log)
    try:
        with TestClient(create_app(settings, cdb)) as client:
            for q in queries:
                r = client.post("/graphql", json={"query": q})
                assert r.status_code == 200 and not r.json().get("errors"), r.text
    finally:
        sa_event.remove(cdb.engine, "before_cursor_execute", log)
    assert _check_pushed_down(cdb, statements) >= 4


def test_cli_commands_on_the_cluster(cdb: Database, tmp_path: Path) -> None:
    """seed, rollup, compact, audit and import through the CLI; `top` over HTTP equals the raw GROUP BY."""
    env = {**os.environ, "ANALYTICS_DATABASE_URL": cdb.settings.db_url}
    _seed(cdb, 5_000)
    for args in (["rollup"], ["compact"], ["audit"], ["status"]):
        done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    views = tmp_path / "views.ndjson"
    views.write_text("".join(json.dumps({"eventId": f"x{i}", "blogId": blog, "viewerId": "v1"})
                             + "\n" for i, blog in enumerate(_blog_ids(cdb)[:3])))
    done = subprocess.run([CLI, "import", "views", str(views)], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "3 accepted" in done.stdout + done.stderr, done
    with cdb.read() as conn:
        want = {ext: n for ext, n in conn.execute(text(
            "SELECT b.external_id, count(*) FROM view_events v JOIN blogs b ON b.id = v.blog_id GROUP BY 1"))}
    with TestClient(create_app(cdb.settings, cdb)) as client:
        r = client.post("/graphql", json={"query": "{ top(dimension: BLOG, limit: 1000) { nodes { key views } } }"})
    got = {n["key"]: n["views"] for n in r.json()["data"]["top"]["nodes"]}
    assert got == want


def _blog_ids(cdb: Database) -> list[str]:
    with cdb.read() as conn:
        return [r[0] for r in conn.execute(text("SELECT external_id FROM blogs ORDER BY id"))]


@pytest.fixture
def own_cluster() -> Iterator[tuple[Path, str]]:
    """A coordinator and 2 workers of our own (ports 9810-9812), so that one worker can be stopped. Their folder
    is outside pytest's (root-only) tmp folder: the servers run as the postgres user."""
    if not (PG_BIN / "pg_ctl").exists():
        pytest.fail(f"ANALYTICS_TEST_CITUS_PG_BIN: no pg_ctl in {PG_BIN}")
    base = Path(tempfile.mkdtemp(prefix="ag_citus_"))
    base.chmod(0o755)
    try:
        admin = citus_cluster.start_cluster(PG_BIN, base / "cluster", port=OWN_PORT)
        yield base / "cluster", admin
    finally:
        citus_cluster.stop_cluster(PG_BIN, base / "cluster")
        shutil.rmtree(base, ignore_errors=True)


def test_worker_stopped_during_a_pass_loses_and_doubles_nothing(own_cluster: tuple[Path, str]) -> None:
    """A worker stops while the pass writes the blog rollups: the pass fails and changes nothing (one distributed
    transaction with the watermark, two-phase commit); once the worker is back, a pass folds every event once."""
    base, admin = own_cluster
    url = citus_cluster.create_database(admin, "ag_citus_stop")
    db = Database(Settings(database_url=url))
    try:
        from analytics_gql.storage import schema

        schema.upgrade(db)
        _seed(db, 20_000)
        stopped: list[bool] = []

        def stop_worker(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if not stopped and statement.startswith("INSERT INTO views_month_by_blog"):
                stopped.append(True)
                citus_cluster.stop_node(PG_BIN, base, 2, port=OWN_PORT)

        sa_event.listen(db.engine, "before_cursor_execute", stop_worker)
        try:
            with pytest.raises(Exception):  # noqa: B017 - whichever error the lost worker gives
                rollup.refresh(db, db.settings)
        finally:
            sa_event.remove(db.engine, "before_cursor_execute", stop_worker)
        assert stopped
        with db.read() as conn:
            assert store.watermark(conn) == 0
        citus_cluster.start_node(PG_BIN, base, 2, port=OWN_PORT)
        db.engine.dispose()
        rollup.catch_up(db, db.settings, progress=False, quiet=True)
        with db.read() as conn:
            assert store.watermark(conn) == 20_000
            assert sum(stored(conn)[(store.Grain.MONTH, Shape.BY_BLOG)].values()) == 20_000
        assert_exact(db, "UTC")
        assert_readers_exact(db, "UTC")
    finally:
        db.dispose()
        citus_cluster.drop_database(admin, "ag_citus_stop")


def test_adding_a_worker_and_rebalancing_keeps_every_answer(own_cluster: tuple[Path, str]) -> None:
    """docs/SCALING.md "Adding a worker and rebalancing": a third worker added, shards moved online with their
    co-located rollup shards; the answers are the same before and after, and a pass after the move is exact."""
    base, admin = own_cluster
    url = citus_cluster.create_database(admin, "ag_citus_grow")
    citus_cluster.psql(PG_BIN, OWN_PORT, "ALTER DATABASE ag_citus_grow SET citus.shard_count = 6")  # small moves
    db = Database(Settings(database_url=url))
    ask = "{ top(dimension: BLOG, limit: 1000) { nodes { key views readers } totalReaders } }"
    try:
        from analytics_gql.storage import schema

        schema.upgrade(db)
        _seed(db, 20_000)
        rollup.catch_up(db, db.settings, progress=False, quiet=True)
        with TestClient(create_app(db.settings, db)) as client:
            before = client.post("/graphql", json={"query": ask}).json()
        citus_cluster.add_worker(PG_BIN, base, 3, ["postgres", "ag_citus_grow"], port=OWN_PORT)
        with db.engine.connect() as conn:
            conn.execute(text("SET statement_timeout = 0"))  # a shard move outlasts the service's 30 s
            # The synchronous form of citus_rebalance_start(): moves co-located shard groups in this session.
            conn.execute(text("SELECT rebalance_table_shards(shard_transfer_mode => 'block_writes')"))
            conn.commit()
            placed = dict(conn.execute(text(
                "SELECT nodeport, count(*) FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) "
                "JOIN pg_dist_shard s USING (shardid) WHERE s.logicalrelid = 'view_events'::regclass "
                "GROUP BY 1")).all())
        assert set(placed) == {OWN_PORT + 1, OWN_PORT + 2, OWN_PORT + 3} and placed[OWN_PORT + 3] > 0, placed
        db.engine.dispose()
        with TestClient(create_app(db.settings, db)) as client:
            assert client.post("/graphql", json={"query": ask}).json() == before
        _seed(db, 5_000, seed=4)  # more blogs and views after the move, folded by a pass on the grown cluster
        rollup.catch_up(db, db.settings, progress=False, quiet=True)
        assert_exact(db, "UTC")
        assert_readers_exact(db, "UTC")
    finally:
        db.dispose()
        citus_cluster.drop_database(admin, "ag_citus_grow")

