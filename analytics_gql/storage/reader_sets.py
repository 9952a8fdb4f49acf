"""Reader sets, write side: the viewer dictionary and the Roaring bitmaps of distinct readers per rollup cell.

A pass folds a chunk's distinct readers (fold_prepare's `rollup_readers` delta: local day, blog, reader country,
viewerId, first raw id) in the transaction that adds its view counts and moves the watermark:
1. viewerIds not yet in `viewers` get the next integers, in the order of their first event (the pass lock makes
   the pass the dictionary's only writer, so ids are dense and never reassigned);
2. the delta's (day, blog, country, viewer integer) rows are read once and grouped per cell of every reader table
   (`tables.READER_GRAINS`) in Python: the week, month and year of a local day number are plain calendar maths;
3. each touched cell's stored set is read, unioned with the chunk's and written back.
A union is idempotent, but the watermark move in the same transaction is what makes a chunk count once; a crash
rolls both back. Every function takes a Connection first and never commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, cast

from pyroaring import BitMap
from sqlalchemy import Connection, Table, select, text, tuple_

from analytics_gql.domain.calendar import Grain
from analytics_gql.storage.tables import SHAPE_KEYS, Shape, reader_tables

_EPOCH = dt.date(1970, 1, 1)
_BATCH = 500
CellKey = tuple[Any, ...]  # (bucket, *shape keys)


def encode(readers: BitMap) -> bytes:
    """A set as stored: pyroaring's portable serialization, run-optimised."""
    readers.run_optimize()
    return bytes(readers.serialize())


def decode(blob: bytes | memoryview) -> BitMap:
    """A stored set."""
    return BitMap.deserialize(bytes(blob))


def _assign_new_viewers(conn: Connection) -> None:
    """Dense integers for the chunk's new viewerIds, in order of their first event."""
    conn.execute(text(
        "INSERT INTO viewers (viewer_id) SELECT s.viewer_id FROM "
        "(SELECT viewer_id, min(first_id) AS first_id FROM rollup_readers GROUP BY viewer_id) s "
        "WHERE NOT EXISTS (SELECT 1 FROM viewers v WHERE v.viewer_id = s.viewer_id) ORDER BY s.first_id"))


def _bucket(grain: Grain, day: int, months: dict[int, tuple[int, int]]) -> int:
    """The bucket key of a local day number in `grain` (the keys of tables.py's rollups)."""
    if grain is Grain.DAY:
        return day
    if grain is Grain.WEEK:
        return day - (day + 3) % 7  # day 0 (1970-01-01) was a Thursday
    month, year = months.get(day) or months.setdefault(day, _month_year(day))
    return month if grain is Grain.MONTH else year


def _month_year(day: int) -> tuple[int, int]:
    d = _EPOCH + dt.timedelta(days=day)
    return d.year * 12 + d.month - 1, d.year


def chunk_cells(rows: Iterable[tuple[int, int, str, int]]) -> dict[tuple[Grain, Shape], dict[CellKey, list[int]]]:
    """The viewer integers of (day, blog, reader country, viewer) rows grouped per cell of every reader table."""
    out: dict[tuple[Grain, Shape], dict[CellKey, list[int]]] = {k: {} for k in reader_tables}
    months: dict[int, tuple[int, int]] = {}
    plans = [(out[(g, s)], g, SHAPE_KEYS[s]) for g, s in reader_tables]
    for day, blog, country, viewer in rows:
        values = {"blog_id": blog, "viewer_country": country}
        for cells, grain, keys in plans:
            key = (_bucket(grain, day, months), *(values[k] for k in keys))
            found = cells.get(key)
            if found is None:
                cells[key] = [viewer]
            else:
                found.append(viewer)
    return out


def _stored(conn: Connection, table: Table, keys: tuple[str, ...], cells: list[CellKey]) -> dict[CellKey, bytes]:
    """The stored sets of the given cells (absent ones are left out)."""
    cols = [table.c.bucket, *(table.c[k] for k in keys)]
    out: dict[CellKey, bytes] = {}
    for i in range(0, len(cells), _BATCH):
        batch = cells[i:i + _BATCH]
        cond = tuple_(*cols).in_(batch) if keys else cols[0].in_([c[0] for c in batch])
        for row in conn.execute(select(*cols, table.c.readers).where(cond)):
            out[tuple(row[:-1])] = row[-1]
    return out


def _write(conn: Connection, table: Table, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Insert or replace cells' sets (one executemany)."""
    if not rows:
        return
    names = ", ".join(("bucket", *keys))
    marks = ", ".join(f":{c}" for c in ("bucket", *keys, "readers"))
    conn.execute(text(f"INSERT INTO {table.name} ({names}, readers) VALUES ({marks}) "
                      f"ON CONFLICT ({names}) DO UPDATE SET readers = excluded.readers"), rows)


def fold(conn: Connection) -> int:
    """Union the chunk's readers (temp table rollup_readers) into every reader table; the cells written."""
    _assign_new_viewers(conn)
    rows = cast(list[tuple[int, int, str, int]], conn.execute(text(
        "SELECT r.day, r.blog_id, r.viewer_country, v.id FROM rollup_readers r "
        "JOIN viewers v ON v.viewer_id = r.viewer_id")).fetchall())
    written = 0
    for (grain, shape), cells in chunk_cells(rows).items():
        table, keys = reader_tables[(grain, shape)], SHAPE_KEYS[shape]
        ordered = sorted(cells)
        stored = _stored(conn, table, keys, ordered)
        out: list[dict[str, Any]] = []
        for key in ordered:
            readers = BitMap(cells[key])
            old = stored.get(key)
            if old is not None:
                before = decode(old)
                if readers.issubset(before):
                    continue  # nothing new in this cell: no write
                readers |= before
            out.append({"bucket": key[0], **dict(zip(keys, key[1:], strict=True)), "readers": encode(readers)})
        _write(conn, table, keys, out)
        written += len(out)
    return written


def set_cell(conn: Connection, grain: Grain, shape: Shape, key: CellKey, readers: BitMap) -> None:
    """Overwrite one cell's set (deleting it when empty): the audit's repair."""
    table, keys = reader_tables[(grain, shape)], SHAPE_KEYS[shape]
    cond = [table.c.bucket == key[0], *(table.c[k] == v for k, v in zip(keys, key[1:], strict=True))]
    conn.execute(table.delete().where(*cond))
    if readers:
        _write(conn, table, keys, [{"bucket": key[0], **dict(zip(keys, key[1:], strict=True)),
                                    "readers": encode(readers)}])
