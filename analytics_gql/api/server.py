"""`analytics-gql serve`: uvicorn on one worker, plus the in-process jobs on the embedded default."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import uvicorn

from analytics_gql import logs
from analytics_gql.api.app import create_app
from analytics_gql.api.context import JOBS_RUNTIME, jobs_runtime
from analytics_gql.settings import Settings

log = logging.getLogger("analytics_gql.api")

# Beyond this many open connections (idle keep-alives included) uvicorn answers 503 at once instead of queueing
# work without bound (F23); below common 1024-descriptor limits, above the 500 concurrent clients we test with.
LIMIT_CONCURRENCY = 800
BACKLOG = 2048


def _start_jobs(settings: Settings) -> Any:
    """Start the embedded scheduler and worker; None (with a warning) when the jobs module is not available."""
    try:
        start_embedded = jobs_runtime().start_embedded
    except ModuleNotFoundError as e:
        if e.name not in (JOBS_RUNTIME, "analytics_gql.jobs"):
            raise  # a real import error inside the jobs package must not be hidden
        log.warning("analytics_gql.jobs.runtime is not available: serving without scheduled rollups")
        return None
    return start_embedded(settings)


def _stop_jobs(handle: Any) -> None:
    """Stop what _start_jobs started, whatever shape of handle it returned."""
    if handle is None:
        return
    for name in ("stop", "shutdown", "close"):
        method = getattr(handle, name, None)
        if callable(method):
            method()
            return
    if callable(handle):
        handle()


def uvicorn_config(app: Any, *, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration `serve` uses: one worker, bounded concurrency, no server banner."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,
        limit_concurrency=LIMIT_CONCURRENCY,
        backlog=BACKLOG,
        timeout_keep_alive=5,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_config=None,
    )


class _Terminated(Exception):
    """SIGTERM arrived: unwind through the `finally` that stops the in-process jobs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM while the jobs stop must not cut that short (SIGKILL is there for the impatient).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Terminated


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API until SIGINT or SIGTERM (loopback by default: pass --host 0.0.0.0 to expose it).

    uvicorn shuts down gracefully on SIGTERM, then restores the previous handler and raises the signal again; with
    the default handler that killed the process there and then, before the in-process worker and scheduler were
    stopped (and with exit status -15). Ours unwinds instead: the jobs stop, and `serve` exits 0.
    """
    logs.configure()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    jobs = None
    try:
        config = uvicorn_config(create_app(settings), host=host, port=port)
        server = uvicorn.Server(config)
        jobs = _start_jobs(settings) if settings.redis_url is None else None
        server.run()
    except _Terminated:
        log.info("stopped on SIGTERM")
    finally:
        _stop_jobs(jobs)
