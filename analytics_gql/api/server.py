"""Serving an app with uvicorn on one worker (bounded, head timeouts, SIGTERM handled), and what runs beside it.

What the app and the jobs are is decided by the composition root, analytics_gql/serving.py."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("analytics_gql.api")

# Beyond this many open connections (idle keep-alives included) uvicorn answers 503 at once instead of queueing
# work without bound (F23); below common 1024-descriptor limits, above the 500 concurrent clients we test with.
LIMIT_CONCURRENCY = 800
BACKLOG = 2048


# A connection must send a whole request head within this many seconds of opening. uvicorn times out idle
# keep-alive connections only after a first response: a client that connects and sends nothing (or half a head)
# held a slot forever, and LIMIT_CONCURRENCY of them made the server answer 503 to everyone.
HEADER_TIMEOUT_S = 10.0


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection that has not sent a complete request head in time."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and self.cycle is not None:  # a request head was parsed
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()


def _stop_jobs(handle: Any) -> None:
    """Stop what the `jobs` callable of run() started, whatever shape of handle it returned."""
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
        http=HeadTimeoutProtocol,
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


def run(app: Any, *, host: str = "127.0.0.1", port: int = 8000, jobs: Callable[[], Any] | None = None) -> None:
    """Serve `app` until SIGINT or SIGTERM (loopback by default: pass --host 0.0.0.0 to expose it); `jobs()`, when
    given, starts what runs beside it once the server is configured, and its handle is stopped on the way out.

    uvicorn shuts down gracefully on SIGTERM, then restores the previous handler and raises the signal again; with
    the default handler that killed the process there and then, before the in-process worker and scheduler were
    stopped (and with exit status -15). Ours unwinds instead: the jobs stop, and `serve` exits 0.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    handle = None
    try:
        server = uvicorn.Server(uvicorn_config(app, host=host, port=port))
        handle = jobs() if jobs is not None else None
        server.run()
    except _Terminated:
        log.info("stopped on SIGTERM")
    finally:
        _stop_jobs(handle)
