"""Starting `analytics-gql serve` for a benchmark, and the percentile helper: no DuckDB here, so bench/traffic.py
(and its smoke test, which runs with the test dependencies only) can use it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

CLI = str(Path(sys.executable).with_name("analytics-gql"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(url: str, log: Path, env: dict[str, str | None], *,
          probe: str = "/healthz") -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`analytics-gql serve` (one uvicorn worker) on a free loopback port with `env` over ours (None: unset),
    waited for until `probe` answers 200; yields (port, process), stops it afterwards."""
    port = free_port()
    full = {**os.environ, "ANALYTICS_DATABASE_URL": url, "ANALYTICS_TIMEZONE": "UTC"}
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    with open(log, "ab") as out:
        proc = subprocess.Popen([CLI, "serve", "--host", "127.0.0.1", "--port", str(port)], env=full,
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + probe, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {log}")
            time.sleep(0.2)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def server(url: str, log: Path, *, cache: bool = True) -> Iterator[str]:
    """`analytics-gql serve` with no pass during the measurement and no keys; yields its base URL."""
    env: dict[str, str | None] = {"ANALYTICS_ROLLUP_INTERVAL": "3600",
                                  "ANALYTICS_QUERY_CACHE": "true" if cache else "false",
                                  "ANALYTICS_API_KEYS": None, "ANALYTICS_REDIS_URL": None}
    with serve(url, log, env) as (port, _proc):
        yield f"http://127.0.0.1:{port}"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]
