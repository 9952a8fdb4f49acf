"""The per-request GraphQL context: settings, database, the caller's scopes and request id, thread offloading."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.to_thread

from analytics_gql.api import metrics
from analytics_gql.errors import Forbidden, Unauthenticated
from analytics_gql.settings import SCOPES, Settings
from analytics_gql.storage.engine import Database
from analytics_gql.storage.queries import NeedsThread

if TYPE_CHECKING:
    from analytics_gql.domain.intake import IngestResult

T = TypeVar("T")

ALL_SCOPES = frozenset(SCOPES)
# Database work runs in worker threads; bound them so a burst cannot exhaust the connection pool or memory.
DEFAULT_THREADS = 16


def make_limiter(threads: int = DEFAULT_THREADS) -> anyio.CapacityLimiter:
    """A thread limiter shared by every request of one app."""
    return anyio.CapacityLimiter(threads)


@dataclass
class Context:
    """What resolvers see as `info.context`."""

    settings: Settings
    db: Database
    scopes: frozenset[str] = ALL_SCOPES
    request_id: str = "-"
    authenticated: bool = True
    limiter: anyio.CapacityLimiter | None = field(default=None, repr=False)
    # An export walking every page of blogViews: its pages are read once, so no cache keeps them.
    transient_pages: bool = False
    # How refreshRollups enqueues a pass (jobs/runtime.enqueue_refresh, given by the composition root,
    # analytics_gql/serving.py); None: nothing is wired to run jobs, so nothing is enqueued.
    enqueue: Callable[[Settings], bool] | None = field(default=None, repr=False)

    async def read(self, fn: Callable[..., T], /, *args: Any, quick: bool = False, **kw: Any) -> T:
        """Run `fn(conn, *args, **kw)` in a read transaction and return its result (on a worker thread).

        `quick=True` (report functions of storage/queries.py only) first tries it on the event loop when the
        operator opted in (ANALYTICS_QUICK_READS), see below.
        """
        if quick and self.settings.quick_reads and self.db.query_cache is not None and self.db.idle_connection():
            # Quick path on the event loop: the read context (one short statement) and the query cache answer
            # most repeated questions; a worker thread costs ~1 ms of hand-offs on this machine. Anything that
            # needs more SQL (a cache miss, a live tail, labels) raises NeedsThread before running it.
            try:
                with self.db.read(quick=True) as conn:
                    return fn(conn, *args, **kw)
            except NeedsThread:
                pass

        def run() -> T:
            with self.db.read() as conn:
                return fn(conn, *args, **kw)

        return await anyio.to_thread.run_sync(run, limiter=self.limiter)

    def require(self, scope: str) -> None:
        """Raise Unauthenticated (no valid key) or Forbidden (key lacks `scope`)."""
        if not self.authenticated:
            raise Unauthenticated("an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
        if scope not in self.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")

    async def ingest(self, kind: str, records: list[dict[str, Any]]) -> IngestResult:
        """Load authors, blogs or views (scope `ingest`) through the shared loading code."""
        self.require("ingest")
        from analytics_gql.loading import ingest_records  # built in parallel; imported when first used

        job = partial(ingest_records, self.db, kind, cast(list[Any], records), index_base=0)
        result = await anyio.to_thread.run_sync(job, limiter=self.limiter)
        metrics.observe_ingest(kind, result)
        return result

    async def enqueue_refresh(self) -> bool:
        """Enqueue a rollup pass (scope `admin`); True when it was enqueued."""
        self.require("admin")
        if self.enqueue is None:
            return False
        # Enqueueing may talk to Redis (with its own timeouts): keep it off the event loop.
        return bool(await anyio.to_thread.run_sync(self.enqueue, self.settings, limiter=self.limiter))
