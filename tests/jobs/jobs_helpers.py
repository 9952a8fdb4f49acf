"""Helpers for job tests: wait for the rollups to catch up, start a private redis-server, run CLI subprocesses."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from analytics_gql.storage import rollups as store
from analytics_gql.storage.engine import Database

ROOT = Path(__file__).resolve().parents[2]


def caught_up(db: Database) -> bool:
    """True when the watermark is the newest raw id (and something was ingested)."""
    with db.read() as conn:
        top = store.max_event_id(conn)
        return top > 0 and store.watermark(conn) == top


def wait_caught_up(db: Database, timeout: float) -> float:
    """Seconds until the rollups caught up; AssertionError after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if caught_up(db):
            return time.monotonic() - t0
        time.sleep(0.1)
    with db.read() as conn:
        raise AssertionError(f"not caught up after {timeout} s: watermark {store.watermark(conn)}, "
                             f"max id {store.max_event_id(conn)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own (never the shared one) that tests may kill, freeze and restart."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server binary not found"
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `analytics-gql ARGS` as a subprocess with ANALYTICS_* overrides."""
    return subprocess.Popen([sys.executable, "-m", "analytics_gql.cli", *args], cwd=ROOT,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, then SIGKILL what is left."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(40)  # a loaded 2-core CI machine can take a while to drain a worker
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
