"""Reader sets, write side: the viewer dictionary and the Roaring bitmaps of distinct readers per rollup cell.

A pass folds a chunk's distinct readers (fold_prepare's `rollup_readers` delta: local day, blog, reader country,
viewerId, first raw id) in the transaction that adds its view counts and moves the watermark:
1. viewerIds not yet in `viewers` get the next integers, in the order of their first event (the pass lock makes
   the pass the dictionary's only writer, so ids are dense and never reassigned);
2. the delta joined to the dictionary once (temp table rollup_rv), then per reader table (`tables.READER_GRAINS`)
   its distinct (cell, viewer integer) rows in cell order, sliced into one set per cell;
3. each touched cell's stored set is read, unioned with the chunk's and written back.
A union is idempotent, but the watermark move in the same transaction is what makes a chunk count once; a crash
rolls both back. Every function takes a Connection first and never commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from itertools import groupby
from operator import itemgetter
from typing import Any

from pyroaring import BitMap
from sqlalchemy import Connection, Table, func, select, text, tuple_

from analytics_gql.domain.calendar import GRAINS, Grain
from analytics_gql.storage.tables import (
    READER_GRAINS,
    ROLLUPS_VERSION,
    SHAPE_KEYS,
    UNKNOWN_COUNTRY,
    Shape,
    bump_version,
    reader_tables,
)

_BATCH = 500
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
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
        # An anti-join, not NOT EXISTS: Citus plans no correlated subquery beside a subquery (viewers is a
        # reference table there), and the plan on one node is the same hash anti-join.
        "LEFT JOIN viewers v ON v.viewer_id = s.viewer_id WHERE v.viewer_id IS NULL ORDER BY s.first_id"))


# Per grain: the bucket of a delta row `d` (local day number) and the join that gives it (rollup_days maps a day
# to its month key and year, fold_prepare builds it); 1970-01-01 (day 0) was a Thursday.
_BUCKETS: dict[Grain, tuple[str, str]] = {
    Grain.DAY: ("d.day", ""),
    Grain.WEEK: ("d.day - (d.day + 3) % 7", ""),
    Grain.MONTH: ("c.month", " JOIN rollup_days c ON c.day = d.day"),
    Grain.YEAR: ("c.year", " JOIN rollup_days c ON c.day = d.day"),
}


def _chunk_sql(grain: Grain, shape: Shape) -> str:
    """(bucket, *keys, viewer integer) rows of the chunk for one reader table, distinct, ordered by cell."""
    bucket, join = _BUCKETS[grain]
    cols = [bucket, *(f"d.{k}" for k in SHAPE_KEYS[shape])]
    order = ", ".join(str(i + 1) for i in range(len(cols)))
    return f"SELECT DISTINCT {', '.join(cols)}, d.vid FROM rollup_rv d{join} ORDER BY {order}"


def chunk_cells(conn: Connection, grain: Grain, shape: Shape) -> dict[CellKey, BitMap]:
    """The chunk's viewer integers per cell of one reader table (from the temp table rollup_rv).

    The grouping is SQL's (DISTINCT, ORDER BY cell); Python only slices the ordered rows into sets, with C-level
    iterators (groupby, itemgetter, BitMap's constructor), since a chunk gives several rows per event."""
    width = 1 + len(SHAPE_KEYS[shape])
    cell = itemgetter(*range(width)) if width > 1 else itemgetter(0)
    viewer = itemgetter(width)
    rows = conn.execute(text(_chunk_sql(grain, shape))).fetchall()
    if width == 1:
        return {(k,): BitMap(map(viewer, group)) for k, group in groupby(rows, cell)}
    return {k: BitMap(map(viewer, group)) for k, group in groupby(rows, cell)}


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


def _touched(conn: Connection, grain: Grain, shape: Shape) -> dict[CellKey, bytes]:
    """The stored sets of the cells the chunk touches (rollup_rv's cells joined to the table: one statement, no
    key lists; a list of 20,000 key tuples in IN was 1.1 s of a 50,000-event pass on PostgreSQL)."""
    bucket, join = _BUCKETS[grain]
    keys = SHAPE_KEYS[shape]
    table = reader_tables[(grain, shape)].name
    cols = ("bucket", *keys)
    sub = ", ".join([f"{bucket} AS bucket", *(f"d.{k} AS {k}" for k in keys)])
    on = " AND ".join(f"t.{c} = k.{c}" for c in cols)
    sql = (f"SELECT {', '.join(f't.{c}' for c in cols)}, t.readers FROM {table} t "
           f"JOIN (SELECT DISTINCT {sub} FROM rollup_rv d{join}) k ON {on}")
    return {tuple(row[:-1]): row[-1] for row in conn.execute(text(sql))}


_PG_TYPES = {"bucket": "int4", "blog_id": "int4", "viewer_country": "text", "readers": "bytea"}


def _write(conn: Connection, table: Table, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Insert or replace cells' sets: SQLite one executemany; PostgreSQL a binary COPY into a temp table and one
    INSERT .. SELECT (a statement per cell cost Citus a distributed plan and a round trip each: 4.2 s of a 200,000
    event pass for the year x blog x country sets, and it is faster on one node too: commit 92143c5)."""
    if not rows:
        return
    cols = ("bucket", *keys)
    names = ", ".join(cols)
    upsert = f"ON CONFLICT ({names}) DO UPDATE SET readers = excluded.readers"
    if conn.dialect.name != "postgresql":
        marks = ", ".join(f":{c}" for c in (*cols, "readers"))
        conn.execute(text(f"INSERT INTO {table.name} ({names}, readers) VALUES ({marks}) {upsert}"), rows)
        return
    conn.execute(text("CREATE TEMP TABLE IF NOT EXISTS rollup_sets_w (bucket int4, blog_id int4, viewer_country "
                      "text, readers bytea) ON COMMIT DROP"))
    with conn.connection.driver_connection.cursor() as cur:  # type: ignore[union-attr]
        with cur.copy(f"COPY rollup_sets_w ({names}, readers) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types([_PG_TYPES[c] for c in (*cols, "readers")])
            for r in rows:
                cp.write_row([r[c] for c in (*cols, "readers")])
        cur.execute(f"INSERT INTO {table.name} ({names}, readers) SELECT {names}, readers FROM rollup_sets_w "
                    f"ORDER BY {names} {upsert}")
        cur.execute("TRUNCATE rollup_sets_w")


# Coarser buckets of a finer one, where the finer nests in the coarser: (finer, coarser) -> mapping.
_NESTS: dict[tuple[Grain, Grain], Callable[[int], int]] = {
    (Grain.DAY, Grain.WEEK): lambda d: d - (d + 3) % 7,
    (Grain.DAY, Grain.MONTH): lambda d: _month_of_day(d),
    (Grain.DAY, Grain.YEAR): lambda d: _month_of_day(d) // 12,
    (Grain.MONTH, Grain.YEAR): lambda m: m // 12,
}


def _month_of_day(day: int) -> int:
    d = dt.date.fromordinal(_EPOCH_ORDINAL + day)
    return d.year * 12 + d.month - 1


def _finer(grain: Grain, shape: Shape) -> Grain | None:
    """The coarsest grain keeping sets of `shape` that nests in `grain` (its cells' unions are grain's cells)."""
    finer = [g for g in READER_GRAINS[shape] if (g, grain) in _NESTS]
    return finer[-1] if finer else None


def _derive(cells: dict[CellKey, BitMap], mapping: Callable[[int], int]) -> dict[CellKey, BitMap]:
    """Cells of a coarser grain as unions of a finer grain's cells (same shape keys)."""
    groups: dict[CellKey, list[BitMap]] = {}
    for key, readers in cells.items():
        groups.setdefault((mapping(key[0]), *key[1:]), []).append(readers)
    return {k: BitMap.union(*sets) for k, sets in groups.items()}


def fold(conn: Connection) -> int:
    """Union the chunk's readers (temp table rollup_readers) into every reader table; the cells written.

    Cells of a grain that a finer kept grain nests in (week, month and year from days, years from months) are unions
    of the finer cells, computed in Python: one SQL sort of the chunk per shape instead of one per table."""
    _assign_new_viewers(conn)
    _temp_rv(conn)
    chunk: dict[tuple[Grain, Shape], dict[CellKey, BitMap]] = {}
    for grain, shape in sorted(reader_tables, key=lambda k: GRAINS.index(k[0])):  # finest first
        finer = _finer(grain, shape)
        chunk[(grain, shape)] = (_derive(chunk[(finer, shape)], _NESTS[(finer, grain)]) if finer is not None
                                 else chunk_cells(conn, grain, shape))
    written = sum(_merge(conn, grain, shape, cells) for (grain, shape), cells in chunk.items())
    conn.execute(text("DROP TABLE IF EXISTS rollup_rv"))
    return written


def _merge(conn: Connection, grain: Grain, shape: Shape, cells: dict[CellKey, BitMap]) -> int:
    """Union a chunk's cells into one reader table (read the touched stored sets, write the changed ones)."""
    table, keys = reader_tables[(grain, shape)], SHAPE_KEYS[shape]
    ordered = sorted(cells)
    stored = _touched(conn, grain, shape)
    out: list[dict[str, Any]] = []
    for key in ordered:
        readers = cells[key]
        old = stored.get(key)
        if old is not None:
            before = decode(old)
            if readers.issubset(before):
                continue  # nothing new in this cell: no write
            readers = readers | before
        out.append({"bucket": key[0], **dict(zip(keys, key[1:], strict=True)), "readers": encode(readers)})
    _write(conn, table, keys, out)
    return len(out)


def _temp_rv(conn: Connection) -> None:
    """rollup_rv: the chunk's (day, blog, reader country, viewer integer) rows, the dictionary joined once."""
    select_sql = ("SELECT r.day, r.blog_id, r.viewer_country, v.id AS vid FROM rollup_readers r "
                  "JOIN viewers v ON v.viewer_id = r.viewer_id")
    conn.execute(text("DROP TABLE IF EXISTS rollup_rv"))
    on_commit = " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""
    conn.execute(text(f"CREATE TEMP TABLE rollup_rv{on_commit} AS {select_sql}"))


def set_cell(conn: Connection, grain: Grain, shape: Shape, key: CellKey, readers: BitMap) -> None:
    """Overwrite one cell's set (deleting it when empty): the audit's repair."""
    table, keys = reader_tables[(grain, shape)], SHAPE_KEYS[shape]
    cond = [table.c.bucket == key[0], *(table.c[k] == v for k, v in zip(keys, key[1:], strict=True))]
    conn.execute(table.delete().where(*cond))
    if readers:
        _write(conn, table, keys, [{"bucket": key[0], **dict(zip(keys, key[1:], strict=True)),
                                    "readers": encode(readers)}])
    bump_version(conn, ROLLUPS_VERSION)  # a repaired cell changes answers at an unchanged watermark


# ---------------------------------------------------------------- audit


def sample_cells(conn: Connection, grain: Grain, shape: Shape, n: int) -> list[CellKey]:
    """Up to `n` random cells stored in one reader table."""
    table = reader_tables[(grain, shape)]
    cols = [table.c.bucket, *(table.c[k] for k in SHAPE_KEYS[shape])]
    return [tuple(r) for r in conn.execute(select(*cols).order_by(func.random()).limit(n))]


def stored_sets(conn: Connection, grain: Grain, shape: Shape, cells: list[CellKey]) -> dict[CellKey, BitMap]:
    """The stored sets of the given cells of one reader table (absent cells are left out)."""
    table = reader_tables[(grain, shape)]
    return {k: decode(b) for k, b in _stored(conn, table, SHAPE_KEYS[shape], cells).items()}


def raw_set(conn: Connection, shape: Shape, key: CellKey, lo: int, hi: int, wm: int) -> BitMap:
    """The viewer integers of the raw events (id <= wm) of one cell, recomputed from its instant interval."""
    values = dict(zip(SHAPE_KEYS[shape], key[1:], strict=True))
    cond = ""
    if "blog_id" in values:
        cond += " AND e.blog_id = :blog"
    if "viewer_country" in values:
        cond += f" AND COALESCE(e.viewer_country, '{UNKNOWN_COUNTRY}') = :country"
    rows = conn.execute(text(
        "SELECT DISTINCT v.id FROM view_events e JOIN viewers v ON v.viewer_id = e.viewer_id "
        f"WHERE e.viewed_at >= :lo AND e.viewed_at < :hi AND e.id <= :wm{cond}"),
        {"lo": lo, "hi": hi, "wm": wm, "blog": values.get("blog_id"), "country": values.get("viewer_country")})
    return BitMap(r[0] for r in rows)
