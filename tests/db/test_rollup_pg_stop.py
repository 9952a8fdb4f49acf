"""F11: a private PostgreSQL cluster stopped with `-m immediate` during ingest and a rollup pass, then restarted."""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import missing_service
from rollup_helpers import add_events, assert_exact, bulk_events, stored

from analytics_gql import rollup
from analytics_gql.domain.calendar import DAY_US, Grain
from analytics_gql.settings import Settings
from analytics_gql.storage import rollups as store
from analytics_gql.storage import schema
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import Shape

LO = 788_918_400_000_000


class Cluster:
    """A throw-away cluster of our own (the shared server is never stopped), run as the `postgres` user."""

    def __init__(self, root: Path) -> None:
        self.bin = Path(shutil.which("pg_ctl") or "/nonexistent").parent
        self.data = root / "data"
        self.port = _free_port()
        self.root = root

    def _run(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        pw = pwd.getpwnam("postgres")
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.root / "log"), "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on", "start")

    def stop(self, mode: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if not shutil.which("pg_ctl") or not shutil.which("runuser"):
        missing_service("pg_ctl/initdb and runuser (to run a private PostgreSQL cluster)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        missing_service("a `postgres` OS user (to run a private PostgreSQL cluster)")
    c = Cluster(Path("/tmp") / f"ag_f11_{os.getpid()}_{random.randrange(10**6)}")
    c.init()
    c.start()
    try:
        yield c
    finally:
        try:
            c.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(c.root, ignore_errors=True)


def test_postgres_stopped_immediately_during_ingest_and_rollup(cluster: Cluster) -> None:
    """F11: crash-stop PostgreSQL mid-pass while writers insert; after restart the rollups are exact."""
    s = Settings(database_url=cluster.url, rollup_chunk=10_000)
    db = Database(s)
    schema.upgrade(db)
    bulk_events(db, 60_000)
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        r = random.Random(1)
        while not stop.is_set():
            try:
                add_events(db, [(r.randint(1, 9), "US", LO + r.randrange(90 * DAY_US)) for _ in range(20)])
            except Exception as e:  # noqa: BLE001 - expected while the server is down
                errors.append(type(e).__name__)
                time.sleep(0.05)

    def passes() -> None:
        try:
            rollup.catch_up(db, s, progress=False, quiet=True)
        except Exception as e:  # noqa: BLE001 - expected: the server goes away mid-pass
            errors.append(type(e).__name__)

    w, p = threading.Thread(target=writer), threading.Thread(target=passes)
    w.start()
    p.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with db.read() as conn:
            if store.watermark(conn):
                break
        time.sleep(0.005)
    cluster.stop("immediate")
    p.join(60)
    time.sleep(0.5)
    cluster.start()
    time.sleep(0.5)
    stop.set()
    w.join(60)
    assert errors, "the crash must have interrupted something"
    db.dispose()
    assert_exact(db, "UTC")  # what survived the crash is consistent: watermark and upserts share one commit
    rollup.catch_up(db, s, progress=False, quiet=True)
    assert_exact(db, "UTC")
    with db.read() as conn:
        n = conn.execute(store.select(store.func.count()).select_from(store.view_events)).scalar()
        assert sum(stored(conn)[(Grain.YEAR, Shape.TOTAL)].values()) == n
    db.dispose()
