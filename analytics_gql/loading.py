"""Loading use cases (API ingest, CLI import and seed): parse, validate, resolve, store; each batch one transaction."""

from __future__ import annotations

import marshal
import multiprocessing
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from sqlalchemy import Connection

from analytics_gql.domain.intake import (
    IngestResult,
    LineError,
    csv_batches,
    decode,
    ndjson_batches,
    split_csv_errors,
)
from analytics_gql.domain.records import RecordError, parse_author, parse_blog, parse_views
from analytics_gql.domain.synthetic import Synthetic
from analytics_gql.errors import BadInput
from analytics_gql.storage import ingest, statistics
from analytics_gql.storage.engine import Database

KINDS = ("authors", "blogs", "views")
API_CHUNK = 10_000
SEED_BATCH = 100_000
MAX_KEPT_ERRORS = 10_000  # a file of a million bad lines reports the first ones, and counts them all
MAX_PRINTED_ERRORS = 1_000
PARSE_IN_CHILD = True  # import views: parse in a forked child process while this one writes


def now_us() -> int:
    """The current instant in microseconds since the epoch."""
    return time.time_ns() // 1_000


def ingest_records(
    db: Database, kind: str, records: list[dict[str, Any] | str], *, index_base: int = 0
) -> IngestResult:
    """Validate and store authors, blogs or views (dicts or NDJSON lines); good items are kept when others fail.

    One transaction for the whole list (parsed and stored API_CHUNK items at a time): a request that fails stores
    nothing, so a client may retry it whole even without eventIds.
    """
    _check_kind(kind)
    result = IngestResult()
    now = now_us()
    blog_cache: dict[str, int] = {}
    with db.write() as conn:
        for start in range(0, len(records), API_CHUNK):
            chunk = records[start : start + API_CHUNK]
            items = zip(range(index_base + start, index_base + start + len(chunk)), chunk, strict=True)
            result.merge(_store(conn, kind, items, now, blog_cache))
    result.errors.sort(key=lambda e: e.index)
    return result


def import_path(db: Database, kind: str, path: str, *, progress: bool | None = None) -> IngestResult:
    """Import an NDJSON (or .csv) file, or '-' for stdin, in batches; print bad lines and a summary."""
    _check_kind(kind)
    if progress is None:
        progress = sys.stderr.isatty()
    started = time.perf_counter()
    result = IngestResult()
    printed = 0
    blog_cache: dict[str, int] = {}  # client id -> stored id; stable, since blogs are never deleted
    is_csv = path.lower().endswith(".csv")  # views.CSV too
    try:
        stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from e
    size = os.fstat(stream.fileno()).st_size if path != "-" else 0
    bar = _bar(progress, total=size or None, unit="B", desc=f"import {kind}")
    lines = 0
    through = 0  # the last line of the last committed batch
    try:
        if kind == "views":
            parts = _import_views(db, stream, is_csv, blog_cache)
        else:
            parts = _import_dimension(db, kind, stream, is_csv)
        for part, nbytes, last_line in parts:
            through = last_line  # committed: counted before anything else can fail
            lines += part.accepted + part.duplicates + part.rejected
            result.merge(part, max_errors=MAX_KEPT_ERRORS)
            for err in part.errors:
                if printed < MAX_PRINTED_ERRORS:
                    print(f"line {err.index}: {err.message}", file=sys.stderr)
                    printed += 1
            if bar is not None:
                bar.update(nbytes)
    except BaseException:
        # Batches before the error are committed: say where to resume, since a rerun of the whole file would store
        # its lines without eventId a second time.
        stored = (f"lines 1-{through:,} are stored ({result.summary()}); lines after {through:,} are not"
                  if through else "nothing was stored")
        print(f"{kind}: import stopped by an error: {stored}", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    if result.rejected > printed:
        print(f"... {result.rejected - printed:,} more bad lines not shown", file=sys.stderr)
    if result.accepted:
        _analyze(db, statistics.RAW_TABLES if kind == "views" else (kind,))
    elapsed = time.perf_counter() - started
    print(f"{kind}: {result.summary()} in {elapsed:.1f} s ({lines / max(elapsed, 1e-9):,.0f} lines/s)")
    return result


def _import_dimension(
    db: Database, kind: str, stream: IO[bytes], is_csv: bool
) -> Iterator[tuple[IngestResult, int, int]]:
    """Authors or blogs, one transaction a batch: (result, bytes read, last line read)."""
    for batch, nbytes, last_line in csv_batches(stream) if is_csv else ndjson_batches(stream):
        with db.write() as conn:
            part = _store(conn, kind, batch, now_us(), {})
        yield part, nbytes, last_line


def _import_views(
    db: Database, stream: IO[bytes], is_csv: bool, blog_cache: dict[str, int]
) -> Iterator[tuple[IngestResult, int, int]]:
    """Views: parsed one batch ahead in a child process (2 cores) while this one stores, one transaction a batch."""
    direct = True  # PostgreSQL: try a plain COPY while batches bring no duplicates (ingest.insert_views)
    with db.engine.connect() as base:
        conn = base.execution_options(write=True)  # as Database.write: SQLite takes the writer lock at BEGIN
        with ingest.bulk_loading(conn):
            for batch in _parsed_view_batches(db, stream, is_csv):
                with conn.begin():
                    part = _store_resolved_views(conn, batch, blog_cache, direct=direct)
                direct = part.duplicates == 0
                yield part, batch[3], batch[4]


ParsedView = tuple[int, str | None, str, str | None, str | None, int]  # (index, *ViewRecord)
# A batch ready to store: rows with stored blog ids, in line order; (position in rows, parsed view) for the few
# whose blog the parser did not find (the writer looks again inside its transaction); (index, reason); bytes read;
# the last line read.
ResolvedViews = tuple[list[ingest.ViewRow], list[tuple[int, ParsedView]], list[tuple[int, str]], int, int]


def _resolved_view_batches(
    stream: IO[bytes], is_csv: bool, lookup: Callable[[list[str]], dict[str, int]]
) -> Iterator[ResolvedViews]:
    """Read, parse and validate batches of views, and map their blog ids through `lookup` (once per blog)."""
    cache: dict[str, int] = {}  # client id -> stored id; stable, since blogs are never deleted
    for batch, nbytes, last_line in csv_batches(stream) if is_csv else ndjson_batches(stream):
        plain, errors = split_csv_errors(batch) if is_csv else (batch, [])
        good, bad = parse_views(plain, now_us())
        errors.extend(bad)
        missing = {r[2] for r in good if r[2] not in cache}
        if missing:
            cache.update(lookup(sorted(missing)))
        rows: list[ingest.ViewRow] = []
        add = rows.append
        pending: list[tuple[int, ParsedView]] = []
        get = cache.get
        for r in good:
            blog_id = get(r[2])
            if blog_id is None:
                pending.append((len(rows), r))
            else:
                add((r[1], blog_id, r[3], r[4], r[5]))
        yield rows, pending, errors, nbytes, last_line


def _blog_lookup(db: Database) -> Callable[[list[str]], dict[str, int]]:
    """Blog ids read in a read transaction of their own."""

    def lookup(external_ids: list[str]) -> dict[str, int]:
        with db.read() as conn:
            return ingest.blog_ids(conn, external_ids)

    return lookup


def _parsed_view_batches(db: Database, stream: IO[bytes], is_csv: bool) -> Iterator[ResolvedViews]:
    """`_resolved_view_batches` run in a forked child process, so parsing overlaps the database writes.

    Batches come back in order over a pipe (marshal: ~1 us a row to load); the pipe's small buffer keeps the
    child at most about one batch ahead. The child touches no database and no lock: a process with threads (the
    test suite, an embedded server) may fork while another thread holds SQLite's or a driver's mutex, which the
    child would then wait for forever. So it asks this process for the blog ids it has not seen yet, and ends with
    os._exit, without flushing standard streams another thread may have held. Without fork, parse here, in turn.
    """
    lookup = _blog_lookup(db)
    if not PARSE_IN_CHILD or "fork" not in multiprocessing.get_all_start_methods():
        yield from _resolved_view_batches(stream, is_csv, lookup)
        return
    ctx = multiprocessing.get_context("fork")
    # multiprocessing closes stdin in a child: hand it a copy of the descriptor instead (closed here once forked)
    copy = os.fdopen(os.dup(stream.fileno()), "rb") if stream is sys.stdin.buffer else None
    parent_end, child_end = ctx.Pipe(duplex=True)
    child = ctx.Process(
        target=_view_parser, args=(child_end, copy or stream, is_csv), name="analytics-gql-parse", daemon=True
    )
    try:
        child.start()
    finally:
        child_end.close()
        if copy is not None:
            copy.close()
    try:
        while True:
            try:
                message = parent_end.recv_bytes()
            except EOFError:
                child.join(5)  # its pipe closed as it ended: wait for its exit code, which says why
                raise RuntimeError(f"the parser process ended unexpectedly (exit code {child.exitcode})") from None
            tag, body = message[:1], memoryview(message)[1:]
            if tag == b"B":
                yield marshal.loads(body)
            elif tag == b"Q":  # blog ids the child has not seen yet
                parent_end.send_bytes(marshal.dumps(lookup(marshal.loads(body))))
            elif tag == b"E":
                raise pickle.loads(body)
            else:
                break
    finally:
        parent_end.close()
        if child.is_alive():
            child.terminate()  # the consumer stopped early (an error while storing): no one reads the rest
        child.join()


def _view_parser(pipe: Any, stream: IO[bytes], is_csv: bool) -> None:
    """The child process: parse batches and send them; an exception travels back to be raised in the parent."""

    def lookup(external_ids: list[str]) -> dict[str, int]:
        pipe.send_bytes(b"Q" + marshal.dumps(external_ids))
        found: dict[str, int] = marshal.loads(pipe.recv_bytes())
        return found

    code = 0
    try:
        for batch in _resolved_view_batches(stream, is_csv, lookup):
            pipe.send_bytes(b"B" + marshal.dumps(batch))
        pipe.send_bytes(b"D")
    except BaseException as e:  # noqa: BLE001 - anything, including decoding errors, belongs to the parent
        code = 1
        try:
            payload = pickle.dumps(e)
        except Exception:  # noqa: BLE001 - an unpicklable exception still has a message
            payload = pickle.dumps(RuntimeError(f"{type(e).__name__}: {e}"))
        try:
            pipe.send_bytes(b"E" + payload)
        except OSError:
            pass  # the parent is gone
    finally:
        pipe.close()
        os._exit(code)


def seed(
    db: Database,
    *,
    authors: int,
    blogs: int,
    views: int,
    days: int,
    seed: int | None = None,
    progress: bool | None = None,
    viewers: int | None = None,
) -> IngestResult:
    """Generate realistic authors, blogs and views (deterministic with `seed`) and store them in batches.

    `viewers`: distinct viewer ids the views come from (domain/synthetic.py `Readers`: returning readers with
    favourite blogs and one-time visitors); default one per 10 views, at least 1,000."""
    if min(authors, blogs, views) < 0 or days < 1:
        raise BadInput("seed sizes must be >= 0 and --days >= 1")
    if viewers is not None and viewers < 1:
        raise BadInput("--viewers must be at least 1")
    if blogs and not authors:
        raise BadInput("--blogs needs at least one author (--authors)")
    if views and not blogs:
        raise BadInput("--views needs at least one blog (--blogs)")
    if progress is None:
        progress = sys.stderr.isatty()
    started = time.perf_counter()
    gen = Synthetic(days=days, now_us=now_us(), seed=seed)
    author_recs = gen.authors(authors)
    blog_recs = gen.blogs(blogs, author_recs)
    with db.write() as conn:
        ingest.upsert_authors(conn, author_recs)
        amap = ingest.author_ids(conn, (a.external_id for a in author_recs))
        ingest.upsert_blogs(
            conn, [(b.external_id, b.title, amap[b.author_external_id], b.country, b.created_at) for b in blog_recs]
        )
        bmap = ingest.blog_ids(conn, (b.external_id for b in blog_recs))
    result = IngestResult()
    bar = _bar(progress, total=views, unit="views", desc="seed")
    try:
        ids = [bmap[b.external_id] for b in blog_recs]
        for rows in gen.views(views, ids, [b.created_at for b in blog_recs], batch=SEED_BATCH, viewers=viewers):
            with db.write() as conn:
                stored = ingest.insert_views(conn, rows)
            result.accepted += stored
            result.duplicates += len(rows) - stored
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    _analyze(db, statistics.DIMENSION_TABLES + (statistics.RAW_TABLES if result.accepted else ()))
    elapsed = time.perf_counter() - started
    print(
        f"seeded {authors:,} authors, {blogs:,} blogs, {result.accepted:,} views over {days} days"
        f" in {elapsed:.1f} s ({result.accepted / max(elapsed, 1e-9):,.0f} views/s)"
    )
    return result


def _analyze(db: Database, tables: tuple[str, ...]) -> None:
    """Planner statistics for the tables a bulk load changed (storage/statistics.py says why)."""
    with db.write() as conn:
        statistics.analyze(conn, tables)


def is_empty(db: Database) -> bool:
    """True when no view event is stored yet."""
    with db.read() as conn:
        return not ingest.has_views(conn)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise BadInput(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")


def _bar(enabled: bool, **kwargs: Any) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(unit_scale=True, file=sys.stderr, **kwargs)


def _store(
    conn: Connection, kind: str, items: Iterable[tuple[int, Any]], now: int, blog_cache: dict[str, int]
) -> IngestResult:
    """Parse, resolve and store one batch inside the caller's transaction."""
    if kind == "views":
        return _store_views(conn, items, now, blog_cache)
    result = IngestResult()
    good: list[tuple[int, Any]] = []
    for index, item in items:
        try:
            d = decode(item)
            good.append((index, parse_author(d) if kind == "authors" else parse_blog(d)))
        except RecordError as e:
            result.errors.append(LineError(index, e.message))
    if kind == "authors":
        ingest.upsert_authors(conn, [r for _, r in good])
        result.accepted = len(good)
    else:
        amap = ingest.author_ids(conn, (r.author_external_id for _, r in good))
        rows = []
        for index, r in good:
            author_id = amap.get(r.author_external_id)
            if author_id is None:
                result.errors.append(LineError(index, f"unknown author {r.author_external_id!r}: load it first"))
            else:
                rows.append((r.external_id, r.title, author_id, r.country, r.created_at))
        ingest.upsert_blogs(conn, rows)
        result.accepted = len(rows)
    result.rejected = len(result.errors)
    result.errors.sort(key=lambda e: e.index)
    return result


def _store_views(
    conn: Connection, items: Iterable[tuple[int, Any]], now: int, blog_cache: dict[str, int]
) -> IngestResult:
    """Parse views (JSON text or dicts) and store them."""
    plain, csv_errors = split_csv_errors(items)
    good, bad = parse_views(plain, now)
    return _store_parsed_views(conn, good, csv_errors + bad, blog_cache)


def _store_parsed_views(
    conn: Connection,
    good: list[ParsedView],
    bad: list[tuple[int, str]],
    blog_cache: dict[str, int],
) -> IngestResult:
    """Resolve blog ids with one query, append the rows in arrival order, count the rest."""
    return _store_resolved_views(conn, ([], list(enumerate(good)), bad, 0, 0), blog_cache)


def _store_resolved_views(
    conn: Connection, batch: ResolvedViews, blog_cache: dict[str, int], *, direct: bool = True
) -> IngestResult:
    """The hot path: look up the blogs still unknown inside this transaction, then append the rows in order."""
    rows, pending, bad, _, _ = batch
    result = IngestResult()
    errors = result.errors
    errors.extend(LineError(index, message) for index, message in bad)
    if pending:
        missing = {r[2] for _, r in pending if r[2] not in blog_cache}
        if missing:
            blog_cache.update(ingest.blog_ids(conn, missing))
        found: list[tuple[int, ingest.ViewRow]] = []
        get = blog_cache.get
        for position, (index, event, blog, viewer, country, at) in pending:
            blog_id = get(blog)
            if blog_id is None:
                errors.append(LineError(index, f"unknown blog {blog!r}: load the blog first"))
            else:
                found.append((position, (event, blog_id, viewer, country, at)))
        if found:  # rare: a blog stored after the parser looked; put each row back in its place in line order
            merged: list[ingest.ViewRow] = []
            last = 0
            for position, row in found:
                merged.extend(rows[last:position])
                merged.append(row)
                last = position
            merged.extend(rows[last:])
            rows = merged
    stored = ingest.insert_views(conn, rows, direct=direct)
    result.accepted = stored
    result.duplicates = len(rows) - stored
    result.rejected = len(errors)
    errors.sort(key=lambda e: e.index)
    return result
