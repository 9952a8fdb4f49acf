"""What arrives to be loaded: files and bodies cut into numbered batches (NDJSON lines, CSV rows), one item's dict,
and the account of what happened to a list of items (accepted, duplicates, rejected with reasons). Pure: no
database; `loading` stores what these give."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from analytics_gql.domain.records import RecordError

IMPORT_BATCH = 50_000  # items per batch of an imported file


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


def ndjson_batches(stream: IO[bytes]) -> Iterator[tuple[list[tuple[int, Any]], int, int]]:
    """Batches of (line number, raw line), their size in bytes and last line; blank lines are skipped but counted."""
    first = 1
    while True:
        # islice + a comprehension instead of a Python loop with a branch per line (the import's hot path)
        chunk = list(itertools.islice(stream, IMPORT_BATCH))
        if not chunk:
            return
        nbytes = sum(map(len, chunk))
        if first == 1 and chunk[0].startswith(b"\xef\xbb\xbf"):
            chunk[0] = chunk[0][3:]
        items = [(n, line) for n, line in enumerate(chunk, first) if line and not line.isspace()]
        yield items, nbytes, first + len(chunk) - 1
        first += len(chunk)


class CsvRowError(dict[str, Any]):
    """A CSV row that cannot become a record (more or fewer cells than columns): carries its message instead."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message


def csv_batches(stream: IO[bytes]) -> Iterator[tuple[list[tuple[int, Any]], int, int]]:
    """Batches of (line number, dict) from a CSV file with a header row; empty cells are absent fields.

    A record is numbered by the line it starts on (a quoted cell may hold line breaks); blank lines count but are
    skipped, before the header too. A row with more or fewer cells than the header is rejected: a row cut short
    would otherwise become a view with its last fields missing (viewedAt: now).
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    header: list[str] | None = None
    batch: list[tuple[int, Any]] = []
    start = 1  # the line the next record starts on
    done = 0  # bytes reported to the progress bar so far

    def read_so_far() -> int:
        """Bytes the CSV reader has taken from the file (read ahead in blocks; 0 for a pipe, which has no size)."""
        nonlocal done
        try:
            pos = stream.tell()
        except (OSError, ValueError):
            return 0
        step, done = pos - done, pos
        return step
    for cells in reader:
        line, start = start, reader.line_num + 1
        if not cells:
            continue
        if header is None:
            header = cells
            continue
        item: dict[str, Any]
        if len(cells) != len(header):
            item = CsvRowError(f"{len(cells)} cells but the header has {len(header)} columns")
        else:
            item = {k: v for k, v in zip(header, cells, strict=True) if v != ""}
        batch.append((line, item))
        if len(batch) >= IMPORT_BATCH:
            yield batch, read_so_far(), reader.line_num
            batch = []
    if batch:
        yield batch, read_so_far(), reader.line_num
    text.detach()


def split_csv_errors(items: Iterable[tuple[int, Any]]) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
    """Items that can be parsed, and (index, message) of the CSV rows that could not become records."""
    plain: list[tuple[int, Any]] = []
    errors: list[tuple[int, str]] = []
    for index, item in items:
        if isinstance(item, CsvRowError):
            errors.append((index, item.message))
        else:
            plain.append((index, item))
    return plain, errors


def decode(item: Any) -> Any:
    """The dict of one item: parsed from JSON text, or as given."""
    if isinstance(item, CsvRowError):
        raise RecordError(item.message)
    if isinstance(item, str | bytes):
        try:
            return orjson.loads(item)
        except orjson.JSONDecodeError as e:
            raise RecordError(f"invalid JSON: {e}") from None
    return item
