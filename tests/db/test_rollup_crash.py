"""A rollup process killed with SIGKILL mid-pass (CLI `analytics-gql rollup`) leaves exact, resumable rollups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from rollup_helpers import assert_exact, bulk_events, stored

from analytics_gql import rollup
from analytics_gql.domain.calendar import Grain
from analytics_gql.storage import rollups as store
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import Shape

N = 80_000


def test_sigkill_mid_pass_then_exact(db: Database) -> None:
    """Acceptance 3: kill -9 the rollup process after its first chunk committed, while the next is in flight."""
    bulk_events(db, N)
    env = {**os.environ, "ANALYTICS_DATABASE_URL": db.settings.db_url, "ANALYTICS_ROLLUP_CHUNK": "10000"}
    proc = subprocess.Popen([sys.executable, "-m", "analytics_gql.cli", "rollup"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wm = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            with db.read() as conn:
                wm = store.watermark(conn)
            if wm:
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    with db.read() as conn:
        wm = store.watermark(conn)
    assert 0 < wm < N, "the kill must land mid-way"
    assert_exact(db, "UTC")  # what was committed is exact: chunks are atomic
    rollup.catch_up(db, db.settings, progress=False, quiet=True)
    assert_exact(db, "UTC")
    with db.read() as conn:
        assert sum(stored(conn)[(Grain.WEEK, Shape.TOTAL)].values()) == N
