"""`analytics-gql serve` as an operator runs it: the embedded scheduler only without Redis, SIGTERM exits cleanly."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from jobs_helpers import cli, free_port, wait_caught_up

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "db"))
from rollup_helpers import add_events, assert_exact  # noqa: E402

from analytics_gql.domain.calendar import DAY_US  # noqa: E402
from analytics_gql.settings import Settings  # noqa: E402
from analytics_gql.storage import rollups as store  # noqa: E402
from analytics_gql.storage import schema  # noqa: E402
from analytics_gql.storage.engine import Database  # noqa: E402

LO = 788_918_400_000_000


def _events(n: int) -> list[tuple[int, str | None, int]]:
    r = random.Random(11)
    return [(r.randint(1, 20), r.choice([None, "US"]), LO + r.randrange(30 * DAY_US)) for _ in range(n)]


def _serve(url: str, port: int, **extra: str) -> subprocess.Popen[bytes]:
    env = {"ANALYTICS_DATABASE_URL": url, "ANALYTICS_ROLLUP_INTERVAL": "1", **extra}
    proc = cli(["serve", "--port", str(port)], env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.stderr.read().decode() if proc.stderr else "serve did not start")


def _terminate(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError("serve did not stop on SIGTERM") from None
    return proc.returncode, proc.stderr.read().decode() if proc.stderr else ""


def test_serve_embedded_runs_the_scheduler_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    db = Database(Settings(database_url=url))
    schema.upgrade(db)
    try:
        port = free_port()
        proc = _serve(url, port)
        add_events(db, _events(300))
        wait_caught_up(db, 30)  # the in-process scheduler and worker folded them
        add_events(db, _events(200))
        code, err = _terminate(proc)
        assert code == 0, err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        assert_exact(db, "UTC")  # whatever the last pass had done when SIGTERM came, nothing half-done
    finally:
        db.dispose()


def test_serve_with_redis_does_not_run_a_scheduler(tmp_path: Path) -> None:
    """With ANALYTICS_REDIS_URL set the scheduler is its own process: serve must not fold anything itself."""
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    db = Database(Settings(database_url=url))
    schema.upgrade(db)
    try:
        port = free_port()
        proc = _serve(url, port, ANALYTICS_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
        add_events(db, _events(50))
        time.sleep(3)  # three rollup intervals
        with db.read() as conn:
            assert (store.watermark(conn), store.max_event_id(conn)) == (0, 50)
        code, err = _terminate(proc)
        assert code == 0, err[-2000:]
    finally:
        db.dispose()
