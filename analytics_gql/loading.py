"""Loading use cases (API ingest, CLI import and seed): parse, validate, resolve, store; each batch one transaction."""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
from sqlalchemy import Connection

from analytics_gql.domain.records import RecordError, parse_author, parse_blog, parse_views
from analytics_gql.domain.synthetic import Synthetic
from analytics_gql.errors import BadInput
from analytics_gql.storage import ingest
from analytics_gql.storage.engine import Database

KINDS = ("authors", "blogs", "views")
API_CHUNK = 10_000
IMPORT_BATCH = 50_000
SEED_BATCH = 100_000
MAX_KEPT_ERRORS = 10_000  # a file of a million bad lines reports the first ones, and counts them all
MAX_PRINTED_ERRORS = 1_000


@dataclass
class LineError:
    """A rejected item: its index (line number for files and NDJSON) and why."""

    index: int
    message: str


@dataclass
class IngestResult:
    """What happened to a list of items: stored, already stored (same eventId), rejected (with reasons)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[LineError] = field(default_factory=list)

    def summary(self) -> str:
        """One line: accepted / duplicates / rejected."""
        return f"{self.accepted:,} accepted, {self.duplicates:,} duplicates, {self.rejected:,} rejected"

    def to_dict(self) -> dict[str, Any]:
        """The HTTP ingest reply body."""
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "errors": [{"index": e.index, "message": e.message} for e in self.errors],
        }

    def merge(self, other: IngestResult, *, max_errors: int | None = None) -> None:
        """Add another batch's counts and errors (keeping at most `max_errors` errors)."""
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        room = len(other.errors) if max_errors is None else max(0, max_errors - len(self.errors))
        self.errors.extend(other.errors[:room])


def now_us() -> int:
    """The current instant in microseconds since the epoch."""
    return time.time_ns() // 1_000


def ingest_records(
    db: Database, kind: str, records: list[dict[str, Any] | str], *, index_base: int = 0
) -> IngestResult:
    """Validate and store authors, blogs or views (dicts or NDJSON lines); good items are kept when others fail."""
    _check_kind(kind)
    result = IngestResult()
    now = now_us()
    for start in range(0, len(records), API_CHUNK):
        chunk = records[start : start + API_CHUNK]
        items = zip(range(index_base + start, index_base + start + len(chunk)), chunk, strict=True)
        with db.write() as conn:
            result.merge(_store(conn, kind, items, now, {}))
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
    is_csv = path.endswith(".csv")
    try:
        stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from e
    size = os.fstat(stream.fileno()).st_size if path != "-" else 0
    bar = _bar(progress, total=size or None, unit="B", desc=f"import {kind}")
    lines = 0
    direct = True  # PostgreSQL: try a plain COPY while batches bring no duplicates (ingest.insert_views)
    try:
        batches = _csv_batches(stream) if is_csv else _ndjson_batches(stream)
        for batch, nbytes in batches:
            with db.write() as conn:
                part = _store(conn, kind, batch, now_us(), blog_cache, direct=direct)
            direct = part.duplicates == 0
            for err in part.errors:
                if printed < MAX_PRINTED_ERRORS:
                    print(f"line {err.index}: {err.message}", file=sys.stderr)
                    printed += 1
            lines += part.accepted + part.duplicates + part.rejected
            result.merge(part, max_errors=MAX_KEPT_ERRORS)
            if bar is not None:
                bar.update(nbytes)
    finally:
        if bar is not None:
            bar.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    if result.rejected > printed:
        print(f"... {result.rejected - printed:,} more bad lines not shown", file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(f"{kind}: {result.summary()} in {elapsed:.1f} s ({lines / max(elapsed, 1e-9):,.0f} lines/s)")
    return result


def seed(
    db: Database,
    *,
    authors: int,
    blogs: int,
    views: int,
    days: int,
    seed: int | None = None,
    progress: bool | None = None,
) -> IngestResult:
    """Generate realistic authors, blogs and views (deterministic with `seed`) and store them in batches."""
    if min(authors, blogs, views) < 0 or days < 1:
        raise BadInput("seed sizes must be >= 0 and --days >= 1")
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
        for rows in gen.views(views, ids, [b.created_at for b in blog_recs], batch=SEED_BATCH):
            with db.write() as conn:
                stored = ingest.insert_views(conn, rows)
            result.accepted += stored
            result.duplicates += len(rows) - stored
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    print(
        f"seeded {authors:,} authors, {blogs:,} blogs, {result.accepted:,} views over {days} days"
        f" in {elapsed:.1f} s ({result.accepted / max(elapsed, 1e-9):,.0f} views/s)"
    )
    return result


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


def _ndjson_batches(stream: IO[bytes]) -> Iterator[tuple[list[tuple[int, Any]], int]]:
    """Batches of (line number, raw line) and their size in bytes; blank lines are skipped but counted."""
    batch: list[tuple[int, Any]] = []
    nbytes = 0
    for n, line in enumerate(stream, 1):
        nbytes += len(line)
        if n == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if line.isspace() or not line:
            continue
        batch.append((n, line))
        if len(batch) >= IMPORT_BATCH:
            yield batch, nbytes
            batch, nbytes = [], 0
    if batch or nbytes:
        yield batch, nbytes


class _CsvRowError(dict[str, Any]):
    """A CSV row that cannot become a record (more cells than columns): carries its message instead."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message


def _csv_batches(stream: IO[bytes]) -> Iterator[tuple[list[tuple[int, Any]], int]]:
    """Batches of (line number, dict) from a CSV file with a header row; empty cells are absent fields."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.DictReader(text)
    batch: list[tuple[int, Any]] = []
    for row in reader:
        if None in row:
            cells = len(row[None]) + len(row) - 1
            columns = len(reader.fieldnames or ())
            item: dict[str, Any] = _CsvRowError(f"{cells} cells but the header has {columns} columns")
        else:
            item = {k: v for k, v in row.items() if v != "" and v is not None}
        batch.append((reader.line_num, item))
        if len(batch) >= IMPORT_BATCH:
            yield batch, 0
            batch = []
    if batch:
        yield batch, 0
    text.detach()


def _decode(item: Any) -> Any:
    """The dict of one item: parsed from JSON text, or as given."""
    if isinstance(item, _CsvRowError):
        raise RecordError(item.message)
    if isinstance(item, str | bytes):
        try:
            return orjson.loads(item)
        except orjson.JSONDecodeError as e:
            raise RecordError(f"invalid JSON: {e}") from None
    return item


def _store(
    conn: Connection,
    kind: str,
    items: Iterable[tuple[int, Any]],
    now: int,
    blog_cache: dict[str, int],
    *,
    direct: bool = True,
) -> IngestResult:
    """Parse, resolve and store one batch inside the caller's transaction."""
    if kind == "views":
        return _store_views(conn, items, now, blog_cache, direct=direct)
    result = IngestResult()
    good: list[tuple[int, Any]] = []
    for index, item in items:
        try:
            d = _decode(item)
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
    conn: Connection,
    items: Iterable[tuple[int, Any]],
    now: int,
    blog_cache: dict[str, int],
    *,
    direct: bool = True,
) -> IngestResult:
    """The hot path: parse every view, resolve blog ids with one query, append the rows in arrival order."""
    result = IngestResult()
    errors = result.errors
    plain: list[tuple[int, Any]] = []
    for index, item in items:
        if isinstance(item, _CsvRowError):
            errors.append(LineError(index, item.message))
        else:
            plain.append((index, item))
    good, bad = parse_views(plain, now)
    errors.extend(LineError(index, message) for index, message in bad)
    missing = {r[2] for r in good if r[2] not in blog_cache}
    if missing:
        blog_cache.update(ingest.blog_ids(conn, missing))
    rows: list[ingest.ViewRow] = []
    add = rows.append
    get = blog_cache.get
    for index, event, blog, viewer, country, at in good:
        blog_id = get(blog)
        if blog_id is None:
            errors.append(LineError(index, f"unknown blog {blog!r}: load the blog first"))
        else:
            add((event, blog_id, viewer, country, at))
    stored = ingest.insert_views(conn, rows, direct=direct)
    result.accepted = stored
    result.duplicates = len(rows) - stored
    result.rejected = len(errors)
    errors.sort(key=lambda e: e.index)
    return result
