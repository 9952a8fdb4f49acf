"""Engine and transactions: SQLite (WAL, explicit BEGIN [IMMEDIATE]) or PostgreSQL through psycopg 3."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event

from analytics_gql.errors import UserError
from analytics_gql.settings import Settings
from analytics_gql.storage.query_cache import QueryCache

log = logging.getLogger(__name__)
READ_LATER_DELAY = 0.05  # seconds a background read waits before it starts
SQLITE_PROGRESS_STEPS = 1_000_000  # SQLite VM steps between two deadline checks (~50 ms of a GROUP BY here)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for a bare postgresql:// URL."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(settings: Settings, *, pool_size: int = 5) -> Engine:
    """A pooled engine for the configured database; nothing connects until first use."""
    url = normalise_url(settings.db_url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _sqlite_events(engine)
        return engine
    # No JIT: the API's statements are short, and PostgreSQL's cost estimates for them (a join of a few plan windows
    # with view_events by time) can be far above jit_above_cost: a 1.5 ms read of the last hour's raw events then
    # spent 70 ms compiling (docs/BENCHMARKS-HISTORY.md,
    # "Session close, 10M views on PostgreSQL"). The rollup pass turned it off already (slower with it).
    options = "-c jit=off"
    if settings.statement_timeout_ms:
        options += f" -c statement_timeout={settings.statement_timeout_ms}"
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_pre_ping=True,
        connect_args={"options": options, "connect_timeout": 5, "application_name": "analytics-gql"},
    )


def _sqlite_events(engine: Engine) -> None:
    """pysqlite's own transaction handling defers BEGIN; take control so a write pass can BEGIN IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # The default page cache is 2 MB: too small for the indexes a bulk import or a rollup pass maintains.
        cur.execute("PRAGMA cache_size=-65536")  # KiB: 64 MB per connection, allocated as used
        cur.execute("PRAGMA temp_store=MEMORY")  # the pass's delta tables and sorts stay off disk
        cur.close()
        # SQLite has no statement_timeout: while a read statement runs, a progress handler interrupts it past its
        # deadline (_deadline below). Writes (passes, imports) run without the handler: each call takes the GIL,
        # which a busy server thread may hold for a few milliseconds.
        deadline: list[Any] = [0.0, None]
        deadline[1] = lambda: time.monotonic() > deadline[0]
        _record.info["sqlite_deadline"] = deadline

    def _set(dbapi_conn: Any, deadline: list[Any], until: float) -> None:
        if (deadline[0] != 0.0) != (until != 0.0):
            if until:
                dbapi_conn.set_progress_handler(deadline[1], SQLITE_PROGRESS_STEPS)
            else:
                dbapi_conn.set_progress_handler(None, 0)
        deadline[0] = until

    @event.listens_for(engine, "checkin")
    def _no_deadline(dbapi_conn: Any, record: Any) -> None:
        # A read's deadline must not outlive its checkout: the next user may run driver-level statements (bulk
        # import PRAGMAs) before any statement of its own resets it.
        deadline = record.info.get("sqlite_deadline") if record is not None else None
        if deadline is not None and dbapi_conn is not None:
            with contextlib.suppress(Exception):  # a connection closed or invalidated meanwhile: nothing to clear
                _set(dbapi_conn, deadline, 0.0)

    @event.listens_for(engine, "before_cursor_execute")
    def _deadline(conn: Connection, _cursor: Any, _stmt: str, _params: Any, _context: Any, _many: bool) -> None:
        deadline = conn.info.get("sqlite_deadline")
        if deadline is not None:
            ms = conn.get_execution_options().get("sqlite_statement_ms") or 0
            _set(conn.connection.dbapi_connection, deadline, time.monotonic() + ms / 1000 if ms else 0.0)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A writer takes the lock at BEGIN, so max(id) read inside it is final (SQLite's single writer).
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def is_sqlite(conn_or_engine: Connection | Engine) -> bool:
    """True when talking to SQLite."""
    return conn_or_engine.dialect.name == "sqlite"


class Database:
    """An engine plus the two kinds of transaction the application opens."""

    def __init__(self, settings: Settings, *, pool_size: int = 5) -> None:
        self.settings = settings
        self.engine = make_engine(settings, pool_size=pool_size)
        # One per Database (so per process and per database): storage/queries.py finds it on read connections.
        self.query_cache: QueryCache | None = (
            QueryCache(settings.query_cache_entries, settings.query_cache_rows) if settings.query_cache else None)
        # One background thread re-reads cached parts after a pass (storage/queries.py), one read at a time.
        self._later_lock = threading.Lock()
        self._later_pending: set[Hashable] = set()
        self._later_pool: ThreadPoolExecutor | None = None
        self._later_closed = False

    @contextmanager
    def read(self, *, quick: bool = False, statement_timeout_ms: int | None = None) -> Iterator[Connection]:
        """A read transaction on one snapshot (REPEATABLE READ on PostgreSQL; a WAL snapshot on SQLite).

        One snapshot matters: the watermark, the rollups and the raw tail must be read as of the same commit,
        or a pass committing between two statements would count its events twice or not at all.
        `quick`: the read may run only its read context and answer from the query cache (storage/queries.py raises
        NeedsThread before any other statement), so an event loop can run it without waiting on SQL.
        `statement_timeout_ms`: a tighter bound than the setting's for this transaction's statements (health probes
        and metric scrapes, which must answer within a probe's timeout). On SQLite, which has no statement_timeout,
        read statements are interrupted past either bound (sqlite3.OperationalError "interrupted"); writes are not.
        """
        with self.engine.connect() as conn:
            if not self.sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            else:
                ms = statement_timeout_ms if statement_timeout_ms is not None else self.settings.statement_timeout_ms
                conn = conn.execution_options(sqlite_statement_ms=max(1, int(ms)) if ms else 0)
            conn = conn.execution_options(query_cache=self.query_cache, quick=quick, read_later=self.read_later)
            with conn.begin():
                if statement_timeout_ms is not None and not self.sqlite:
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(statement_timeout_ms))}")
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed on success; on SQLite it holds the writer lock from BEGIN."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(write=True)
            with conn.begin():
                yield conn

    def read_later(self, key: Hashable, job: Callable[[Connection], None]) -> None:
        """Run `job` in its own read transaction on the background thread, unless one for `key` is pending.

        For work no request waits for (refreshing a cached part); a failure is logged, never raised.
        """
        with self._later_lock:
            if self._later_closed or key in self._later_pending:
                return
            if self._later_pool is None:
                self._later_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analytics-read-later")
            self._later_pending.add(key)
            pool = self._later_pool

        queued = time.monotonic()

        def run() -> None:
            try:
                # Let the request that queued this finish first: under the GIL this thread would slow it down. From
                # when it was queued: after a pass, hundreds of parts queued together run one after another, not
                # 50 ms apart (their requests read larger tails meanwhile).
                time.sleep(max(0.0, queued + READ_LATER_DELAY - time.monotonic()))
                with self.read() as conn:
                    job(conn)
            except Exception:
                log.warning("background read failed (the next request reads it instead)", exc_info=True)
            finally:
                with self._later_lock:
                    self._later_pending.discard(key)

        try:
            pool.submit(run)
        except RuntimeError:  # the pool was shut down meanwhile (dispose): nothing to refresh any more
            with self._later_lock:
                self._later_pending.discard(key)

    def settle(self) -> None:
        """Wait until the background reads queued so far are done (tests and benchmarks)."""
        with self._later_lock:
            pool = self._later_pool
        if pool is not None:
            pool.submit(lambda: None).result()

    def idle_connection(self) -> bool:
        """True when the pool holds an idle connection (a checkout will not wait for one)."""
        checkedin = getattr(self.engine.pool, "checkedin", None)
        return bool(checkedin()) if callable(checkedin) else False

    @property
    def sqlite(self) -> bool:
        """True on the embedded default."""
        return self.engine.dialect.name == "sqlite"

    def dispose(self) -> None:
        """Stop the background reads (waiting for a running one), close pooled connections."""
        with self._later_lock:
            self._later_closed = True
            pool, self._later_pool = self._later_pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self.engine.dispose()


def check_url(db_url: str) -> URL:
    """Refuse an ANALYTICS_DATABASE_URL no dialect can use, or whose driver is not installed (UserError)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    unsupported = UserError("ANALYTICS_DATABASE_URL: not a supported database URL "
                            "(use sqlite:///PATH or postgresql+psycopg://...)")
    try:
        url = make_url(normalise_url(db_url))
        dialect = url.get_dialect()
    except ArgumentError:
        raise unsupported from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise unsupported
    try:
        dialect.import_dbapi()
    except ImportError:
        raise UserError(f"ANALYTICS_DATABASE_URL: the driver {url.get_driver_name()!r} is not installed "
                        "(use sqlite:///PATH or postgresql+psycopg://...)") from None
    return url


def check_sqlite_file(url: URL) -> None:
    """On SQLite, refuse a path with no file: connecting would create an empty one (a mistyped path then leaves
    litter behind and serves nothing); only `migrate` and `demo` create the database."""
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not path.startswith("file:") and not os.path.exists(path):
        raise UserError(f"no database at {path}: run `analytics-gql migrate` first (it creates it), "
                        "or check ANALYTICS_DATABASE_URL")
