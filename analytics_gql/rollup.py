"""The rollup use case, owning transactions: incremental passes, catch-up, rebuild, compaction and audit."""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from pyroaring import BitMap
from sqlalchemy import Connection

from analytics_gql.domain.calendar import DAY_US, GRAINS, Grain, bucket_interval, bucket_key, from_us
from analytics_gql.errors import RebuildRequired, UserError
from analytics_gql.settings import Settings
from analytics_gql.storage import passes, reader_sets
from analytics_gql.storage import rollups as store
from analytics_gql.storage import statistics as stats
from analytics_gql.storage import status as operator
from analytics_gql.storage.engine import Database
from analytics_gql.storage.tables import SHAPE_KEYS, grain_tables, reader_tables, rollup_tables

log = logging.getLogger(__name__)

def chunk_size(db: Database, settings: Settings) -> int:
    """Raw ids per pass transaction: ANALYTICS_ROLLUP_CHUNK, else the database's default (storage/passes.py)."""
    if settings.rollup_chunk is not None:
        return settings.rollup_chunk
    return passes.of(db).default_chunk


@dataclass
class PassResult:
    """What one refresh did: events folded, chunks committed, the watermark reached, or why it skipped."""

    events: int = 0
    chunks: int = 0
    watermark: int = 0
    target: int = 0
    skipped: str | None = None
    seconds: float = 0.0
    longest_lock_s: float = 0.0  # the longest a chunk held the pass lock (on SQLite, the write lock writers wait for)

    @property
    def caught_up(self) -> bool:
        """True when the watermark reached the pass's safe_high."""
        return self.skipped is None and self.watermark >= self.target

    def summary(self) -> str:
        """One line for logs and the CLI."""
        if self.skipped:
            return f"rollup pass skipped: {self.skipped}"
        rate = f", {self.events / self.seconds:,.0f} events/s" if self.seconds > 0 and self.events else ""
        return (f"folded {self.events:,} events in {self.chunks} chunk(s), watermark id {self.watermark:,} "
                f"({self.seconds:.2f} s{rate})")


def _zone_check(conn: Connection, state: store.State, settings: Settings) -> None:
    """Refuse to mix zones: local grains built in another zone need an explicit rebuild."""
    if state.timezone == settings.timezone:
        return
    if store.rollups_empty(conn):
        store.set_timezone(conn, settings.timezone)
        return
    raise RebuildRequired(
        f"the rollups were built in time zone {state.timezone!r} but ANALYTICS_TIMEZONE is {settings.timezone!r}: "
        "run `analytics-gql rollup --rebuild` to recompute them in the new zone (or restore the old setting)"
    )


@contextmanager
def _locked(db: Database, *, wait: bool) -> Iterator[Connection | None]:
    """A write transaction holding the pass lock (None when `wait` is False and another pass holds it)."""
    with db.engine.connect() as conn, passes.of(db).begin_locked(conn, wait=wait) as locked:
        yield conn if locked else None


def refresh(db: Database, settings: Settings, *, wait: bool = False, progress: object = None,
            analyze: bool = True) -> PassResult:
    """One incremental pass (DESIGN 3): fold (watermark, safe_high] in bounded chunks, each its own transaction.

    `wait=False` (jobs) skips when another pass holds the lock, since that pass does the same work; `wait=True`
    (CLI) queues behind it. `progress` may be a tqdm bar (its `total`/`update` are used). A pass that folded many
    events (storage/statistics.pass_needs_analyze) analyses the raw and rollup tables after it, unless `analyze`
    is False (catch_up analyses once at its end). What differs per database is in storage/passes.py.
    """
    run = _Pass(db, settings, passes.of(db), ZoneInfo(settings.timezone), chunk_size(db, settings), wait, progress)
    result = run.result
    try:
        target = run.dialect.fixed_target()
    except passes.WritersBusy:
        result.skipped = "writers busy (lock_timeout); the next round will fold their events"
        log.info(result.summary())
        return result
    while True:
        target, done = run.chunk(target)
        if done:
            break
    if analyze and result.events and stats.pass_needs_analyze(result.events, result.watermark - result.events):
        _analyze_after_pass(db)
    result.seconds = time.monotonic() - run.t0
    # A scheduled pass with nothing to fold is routine: keep it out of the INFO log (one line every interval).
    log.log(logging.INFO if result.events or result.skipped else logging.DEBUG, result.summary())
    return result


@dataclass
class _Pass:
    """One refresh: its settings, the per-database steps, and the result it accumulates chunk by chunk."""

    db: Database
    settings: Settings
    dialect: passes.PassDialect
    zone: ZoneInfo
    chunk_ids: int
    wait: bool
    progress: object
    result: PassResult = field(default_factory=PassResult)
    t0: float = field(default_factory=time.monotonic)
    started: int = field(default_factory=store.now_us)

    def chunk(self, target: int | None) -> tuple[int | None, bool]:
        """Fold the next chunk in its own transaction; the target, and True once caught up or skipped."""
        result = self.result
        low = high = 0
        with self.db.engine.connect() as conn:
            prepared: tuple[int, int, int] | None = None  # (low, high, events) computed before the lock
            deltas = False  # temp delta tables may be on this connection (where they outlive transactions)
            try:
                if self.dialect.deltas_before_lock:
                    deltas = True
                    target, prepared = self._prepare_unlocked(conn, target)
                    deltas = prepared is not None
                with self.dialect.begin_locked(conn, wait=self.wait) as locked:
                    if not locked:
                        result.skipped = "another pass is running"
                        return target, True
                    lock_t0 = time.monotonic()
                    state = store.ensure_state(conn, self.settings.timezone)
                    _zone_check(conn, state, self.settings)
                    if target is None:
                        # We hold the pass lock and PostgreSQL's target came from pg_safe_high; SQLite set it above.
                        target = store.max_event_id(conn)
                    result.target = target
                    low = state.watermark
                    high = min(target, low + self.chunk_ids)
                    if high > low:
                        if prepared is None or prepared[:2] != (low, high):
                            deltas = deltas or self.dialect.temps_outlive_transactions
                        self._fold_locked(conn, low, high, prepared, target)
                    elif deltas:
                        store.drop_deltas(conn)
                    result.watermark = max(high, low)
                    if result.watermark >= target:
                        # Everything committed before `started` is now folded: that instant is the public watermark.
                        result.seconds = time.monotonic() - self.t0
                        store.record_run(conn, started_at=self.started, events=result.events,
                                         ms=int(result.seconds * 1000))
                    result.longest_lock_s = max(result.longest_lock_s, time.monotonic() - lock_t0)
                deltas = False  # committed: the deltas were added and dropped (a rollback would have restored them)
            finally:
                if deltas:  # a failure, or deltas never used: free them (best effort; the next prepare replaces them)
                    conn.execution_options(write=False)  # temp tables only: no need to wait for the write lock
                    with contextlib.suppress(Exception), conn.begin():
                        store.drop_deltas(conn)
        if self.progress is not None and high > low:
            _progress_update(self.progress, high - low)
        return target, result.watermark >= target

    def _prepare_unlocked(self, conn: Connection, target: int | None) -> tuple[int, tuple[int, int, int] | None]:
        """SQLite: the target (max id, safe outside the lock) and the next chunk's deltas, computed in a read
        transaction into this connection's temp tables while writers go on (storage/passes.py)."""
        with conn.begin():
            state = store.read_state(conn)
            low = state.watermark if state else 0
            if target is None:
                target = store.max_event_id(conn)
            high = min(target, low + self.chunk_ids)
            if high > low and (state is None or state.timezone == self.settings.timezone):
                return target, (low, high, store.fold_prepare(conn, self.zone, low, high))
        return target, None

    def _fold_locked(self, conn: Connection, low: int, high: int, prepared: tuple[int, int, int] | None,
                     target: int) -> None:
        """Fold (low, high] under the pass lock (with the deltas computed before it when they start at `low`)
        and move the watermark, in the caller's transaction."""
        self.dialect.tune(conn)
        if self.progress is not None and self.result.chunks == 0:
            _progress_total(self.progress, target - low)
        if prepared is not None and prepared[:2] == (low, high):
            events = prepared[2]
        else:  # another pass got there first (or nothing was prepared): recompute under the lock
            events = store.fold_prepare(conn, self.zone, low, high)
        if events:
            store.fold_apply(conn)
        self.result.events += events
        store.advance_watermark(conn, high)
        self.result.chunks += 1


def _analyze_after_pass(db: Database) -> None:
    """Planner statistics of the tables a pass wrote, and of the raw events it read (they grew as much)."""
    with db.write() as conn:
        stats.analyze(conn, stats.RAW_TABLES + stats.ROLLUP_TABLES)


def _progress_total(bar: object, total: int) -> None:
    if hasattr(bar, "total"):
        bar.total = total
        if hasattr(bar, "refresh"):
            bar.refresh()


def _progress_update(bar: object, n: int) -> None:
    update = getattr(bar, "update", None)
    if callable(update):
        update(n)


def _bar(progress: bool | None, desc: str) -> object | None:
    """A tqdm bar on a terminal (progress=None), always (True) or never (False)."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    bar: object = tqdm(total=0, desc=desc, unit="ev", unit_scale=True, file=sys.stderr)
    return bar


def catch_up(db: Database, settings: Settings, progress: bool | None = None, *, quiet: bool = False,
             patience_s: float = 600.0) -> PassResult:
    """Run passes until the rollups hold every committed event, retrying rounds skipped for busy writers for up to
    `patience_s` seconds (then `skipped` says so)."""
    bar = _bar(progress, "rollup")
    total = PassResult()
    t0 = time.monotonic()
    try:
        for attempt in itertools.count():
            r = refresh(db, settings, wait=True, progress=bar, analyze=False)
            total.events += r.events
            total.chunks += r.chunks
            total.watermark, total.target = r.watermark, r.target
            total.longest_lock_s = max(total.longest_lock_s, r.longest_lock_s)
            if r.caught_up:
                break
            if time.monotonic() - t0 >= patience_s:
                total.skipped = f"writers kept the raw table busy for {patience_s:g} s; try again"
                break
            time.sleep(min(0.05 * (attempt + 1), 1.0, max(0.0, patience_s - (time.monotonic() - t0))))
    finally:
        if bar is not None:
            bar.close()  # type: ignore[attr-defined]
    if total.events:
        _analyze_after_pass(db)  # `rollup` and `rollup --rebuild` leave statistics the planner can rely on
    total.seconds = time.monotonic() - t0
    if not quiet:
        print(total.summary())
    return total


def rebuild(db: Database, settings: Settings, progress: bool | None = None, *, patience_s: float = 600.0) -> PassResult:
    """Drop every grain and recompute it from raw in the configured zone (after a zone change)."""
    with _locked(db, wait=True) as conn:
        assert conn is not None
        store.ensure_state(conn, settings.timezone)
        raw_from = store.horizons(conn)[store.RAW]
        if raw_from:
            # Rebuilding from compacted raw would silently lose the history only the rollups still hold.
            raise UserError(
                f"raw events before {from_us(raw_from).isoformat()} were compacted away, so the rollups cannot be "
                "rebuilt from raw without losing that history; restore the previous ANALYTICS_TIMEZONE instead"
            )
        store.truncate_rollups(conn)
        store.advance_watermark(conn, 0)
        store.set_timezone(conn, settings.timezone)
    if progress is None or progress:
        print(f"rollups emptied; rebuilding in {settings.timezone}")
    return catch_up(db, settings, progress=progress, patience_s=patience_s)


@dataclass
class CompactReport:
    """Rows deleted per grain by one compaction and the horizons recorded."""

    deleted: dict[str, int] = field(default_factory=dict)
    horizons: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        if not self.deleted:
            return "compaction: no retention policy set (ANALYTICS_RETENTION), nothing deleted"
        parts = [f"{g}: {n:,} rows deleted, complete from {from_us(self.horizons[g]).isoformat()}"
                 for g, n in self.deleted.items()]
        return "compaction: " + "; ".join(parts)


def compact(db: Database, settings: Settings, *, now_us: int | None = None) -> CompactReport:
    """Apply the retention policy: delete what is folded in and past its horizon, record the horizons."""
    # Opt-in (ANALYTICS_RETENTION unset keeps everything). A production example:
    # ANALYTICS_RETENTION="raw=400d,hour=1095d": raw events 400 days, hours 3 years, day and coarser forever.
    report = CompactReport()
    policy = settings.retention_days
    now = store.now_us() if now_us is None else now_us
    with _locked(db, wait=True) as conn:
        assert conn is not None
        state = store.ensure_state(conn, settings.timezone)
        zone = ZoneInfo(state.timezone)
        if "raw" in policy:
            # Only id <= watermark: a raw row not yet folded in is kept whatever its age.
            report.deleted["raw"] = store.compact_raw(conn, now - policy["raw"] * DAY_US, state.watermark)
        for g in GRAINS:
            if g.value in policy:
                report.deleted[g.value] = store.compact_grain(conn, g, now - policy[g.value] * DAY_US, zone)
        store.record_compaction(conn, now)
        report.horizons = store.horizons(conn)
        changed = [t.name for g in GRAINS if report.deleted.get(g.value) for t in grain_tables(g)]
        stats.analyze(conn, (stats.RAW_TABLES if report.deleted.get("raw") else ()) + tuple(changed))
    log.info(report.summary())
    return report


@dataclass
class AuditReport:
    """Cells recomputed from raw, the ones that had drifted (grain, key, stored, raw) and whether repaired."""

    checked: int = 0
    # (grain/shape, bucket, blog_id or None, reader country or None, stored, raw)
    drift: list[tuple[str, int, int | None, str | None, int, int]] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        """True when no checked cell had drifted."""
        return not self.drift

    def summary(self) -> str:
        """One line for logs and the CLI."""
        if self.ok:
            return f"audit: {self.checked} cells recomputed from raw, no drift"
        what = "repaired" if self.repaired else "NOT repaired (--no-repair)"
        sample = ", ".join(f"{g}[{','.join(str(k) for k in (b, blog, c) if k is not None)}] {s}->{r}"
                           for g, b, blog, c, s, r in self.drift[:5])
        return f"audit: {len(self.drift)} of {self.checked} cells drifted, {what}: {sample}"


# Week, month and year cells of blog-less shapes recomputed per table and audit (each costs its raw events).
_COARSE_BLOGLESS_CELLS = 8


def audit(db: Database, settings: Settings, sample: int = 200, repair: bool = True, *,
          seed: int | None = None) -> AuditReport:
    """Recompute sampled cells (half stored, half around random raw events) from raw and repair drift."""
    rng = random.Random(seed)
    report = AuditReport()
    with _locked(db, wait=True) as conn:
        assert conn is not None
        state = store.ensure_state(conn, settings.timezone)
        zone = ZoneInfo(state.timezone)
        wm = state.watermark
        kept = store.horizons(conn)
        # Random raw ids (gaps simply miss): catches cells missing from a grain, which stored samples cannot.
        ids = sorted(rng.sample(range(1, wm + 1), min(wm, max(1, sample // 2)))) if wm else []
        events = store.sample_raw_events(conn, ids)
        cells: list[store.Cell] = []
        for (g, shape), _table in rollup_tables.items():
            keys = set(store.sample_stored_cells(conn, g, shape, max(1, sample - sample // 2)))
            # The raw side's buckets come from the Python reference maths, independent of the fold's SQL.
            keys |= {store.project(shape, bucket_key(g, at, zone), blog, c) for at, blog, c in events}
            chosen = sorted(keys, key=lambda k: (k[0], k[1] or 0, k[2] or ""))
            if "blog_id" not in SHAPE_KEYS[shape] and g not in (Grain.HOUR, Grain.DAY):
                # Counted through the viewed_at index over each cell's interval: a blog-less cell of a coarse
                # grain spans a large share of all events, so a few of them per table and audit.
                chosen = sorted(rng.sample(chosen, min(len(chosen), _COARSE_BLOGLESS_CELLS)))
            stored = store.stored_views(conn, g, shape, chosen)
            for key in chosen:
                b, blog, c = key
                lo, hi = bucket_interval(g, b, zone)
                if lo >= kept[store.RAW] and lo >= kept[g.value]:  # raw is complete for this cell
                    cells.append(store.Cell(g, shape, b, blog, c, lo, hi, stored.get(key, 0)))
        counts = store.raw_counts(conn, cells, wm)
        report.checked = len(cells)
        for cell, raw in zip(cells, counts, strict=True):
            if raw != cell.stored:
                report.drift.append((f"{cell.grain.value}/{cell.shape.value}", cell.bucket, cell.blog_id,
                                     cell.viewer_country, cell.stored, raw))
                if repair:
                    store.set_cell(conn, cell, raw)
        _audit_readers(conn, report, rng, zone, wm, kept, events, sample, repair)
        report.repaired = repair and bool(report.drift)
        store.record_audit(conn, store.now_us())
    if report.drift:
        log.warning(report.summary())
    return report


# Reader-set cells recomputed per table and audit: a blog-less cell of a coarse grain costs a scan of its raw events.
_READER_CELLS_BLOGLESS = 2


def _audit_readers(conn: Connection, report: AuditReport, rng: random.Random, zone: ZoneInfo, wm: int,
                   kept: dict[str, int], events: list[tuple[int, int, str]], sample: int, repair: bool) -> None:
    """Recompute sampled reader-set cells (stored ones and those of the sampled raw events) from raw; the drift
    is reported as (table, key, stored size, raw size) and repaired by overwriting the set."""
    per_table = max(4, sample // 20)
    for (g, shape) in reader_tables:
        keys = set(reader_sets.sample_cells(conn, g, shape, per_table))
        keys |= {tuple(k for k in store.project(shape, bucket_key(g, at, zone), blog, c) if k is not None)
                 for at, blog, c in events[:per_table]}
        chosen = sorted(keys)
        limit = per_table if "blog_id" in SHAPE_KEYS[shape] else _READER_CELLS_BLOGLESS
        chosen = sorted(rng.sample(chosen, min(len(chosen), limit)))
        stored = reader_sets.stored_sets(conn, g, shape, chosen)
        for key in chosen:
            lo, hi = bucket_interval(g, int(key[0]), zone)
            if lo < kept[store.RAW] or lo < kept[g.value]:
                continue  # raw no longer complete for this cell
            raw = reader_sets.raw_set(conn, shape, key, lo, hi, wm)
            have = stored.get(key, BitMap())
            if not raw and not have:
                continue  # no reader on either side (views without viewerId): not a cell of the table
            report.checked += 1
            if raw != have:
                blog = key[1] if "blog_id" in SHAPE_KEYS[shape] else None
                country = key[-1] if "viewer_country" in SHAPE_KEYS[shape] else None
                report.drift.append((f"{g.value}/{shape.value} readers", int(key[0]), blog, country, len(have),
                                     len(raw)))
                if repair:
                    reader_sets.set_cell(conn, g, shape, key, raw)


def status(db: Database, settings: Settings) -> store.RollupStatus:
    """The rollupStatus data, read in one snapshot."""
    with db.read() as conn:
        return store.status(conn, settings.retention_days)


def operator_status(db: Database, settings: Settings) -> operator.OperatorStatus:
    """What `analytics-gql status` prints, read in one snapshot (rollupStatus's data and more)."""
    with db.read() as conn:
        return operator.read(conn, settings.retention_days, store.now_us())


__all__ = ["AuditReport", "CompactReport", "PassResult", "audit", "catch_up", "chunk_size", "compact",
           "operator_status", "rebuild", "refresh", "status", "Grain"]
