"""import_path for views (child-process parser, PostgreSQL direct COPY with staging fallback, SQLite bulk settings):
exact rows, line numbers and counts against an independent reading of the file, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from ingest_helpers import stored_views

from analytics_gql import loading
from analytics_gql.domain import intake
from analytics_gql.domain.records import RecordError, parse_view
from analytics_gql.storage import ingest
from analytics_gql.storage.engine import Database

NOW = 1_750_000_000_000_000
BLOGS = ("b1", "b2", "b3")


def load_dims(db: Database) -> None:
    r = loading.ingest_records(db, "authors", [{"id": "a1", "name": "Abebe"}])
    assert r.accepted == 1
    r = loading.ingest_records(
        db, "blogs", [{"id": b, "title": b, "authorId": "a1", "createdAt": "2025-01-01T00:00:00Z"} for b in BLOGS]
    )
    assert r.accepted == len(BLOGS)


def messy_lines(tag: str, n: int, *, first_event: int = 0) -> list[bytes]:
    """Views with every kind of line: good, repeated ids, id-less, unknown blog, bad JSON, bad fields, blank."""
    out: list[bytes] = []
    for i in range(n):
        k = first_event + i
        item: dict[str, Any] = {
            "eventId": f"e{k % 45}", "blogId": BLOGS[k % 3], "viewerId": f"{tag}{i}",
            "viewerCountry": ["KE", None, "US"][k % 3], "viewedAt": f"2025-02-01T12:{k % 60:02d}:00Z",
        }
        if i % 11 == 3:
            del item["eventId"]
        if i % 13 == 5:
            item["blogId"] = "ghost"
        if i % 17 == 7:
            item["viewerCountry"] = "ke"
        if i % 19 == 2:
            item["viewedAt"] = f"2025-02-01T{k % 24:02d}:00:00"  # naive: read as UTC
        line = orjson.dumps(item)
        if i % 23 == 9:
            line = line[:-3]
        out.append(line)
        if i % 29 == 4:
            out.append(b"   ")
    return out


def expected(lines: list[bytes], seen: set[str]) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]], int]:
    """What the contract says happens to these lines, one by one: rows stored, (line, reason), duplicates."""
    rows, errors, dups = [], [], 0
    for n, line in enumerate((line + b"\n" for line in lines), 1):  # as read from the file, newline included
        if n == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            continue
        try:
            r = parse_view(orjson.loads(line), NOW)
        except orjson.JSONDecodeError as e:
            errors.append((n, f"invalid JSON: {e}"))
            continue
        except RecordError as e:
            errors.append((n, e.message))
            continue
        if r.blog_external_id not in BLOGS:
            errors.append((n, f"unknown blog {r.blog_external_id!r}: load the blog first"))
        elif r.event_id is not None and r.event_id in seen:
            dups += 1
        else:
            if r.event_id is not None:
                seen.add(r.event_id)
            rows.append(tuple(r))
    return rows, errors, dups


@pytest.fixture(params=[True, False], ids=["child", "in-process"])
def parser_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(loading, "PARSE_IN_CHILD", request.param)
    monkeypatch.setattr(intake, "IMPORT_BATCH", 7)  # many batches: boundaries, and direct/staging switching
    return bool(request.param)


def test_import_is_exact_across_batches_and_files(
    db: Database, tmp_path: Path, parser_mode: bool, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_dims(db)
    monkeypatch.setattr(loading, "now_us", lambda: NOW)  # views without viewedAt (none here, but exact anyway)
    first = [b"\xef\xbb\xbf" + messy_lines("a", 1)[0], *messy_lines("a", 120)[1:]]
    second = messy_lines("b", 90, first_event=30)  # ids e30..: some stored by the first file, some new
    seen: set[str] = set()
    want_rows: list[tuple[Any, ...]] = []
    for name, lines in (("first.ndjson", first), ("second.ndjson", second)):
        (tmp_path / name).write_bytes(b"\n".join(lines) + b"\n")
        rows, errors, dups = expected(lines, seen)
        got = loading.import_path(db, "views", str(tmp_path / name), progress=False)
        assert (got.accepted, got.duplicates, got.rejected) == (len(rows), dups, len(errors))
        assert [(e.index, e.message) for e in got.errors] == errors
        printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("line ")]
        assert printed == [f"line {n}: {m}" for n, m in errors]
        want_rows += rows
        assert stored_views(db) == want_rows
    assert len(want_rows) > 40 and len(seen) == 45  # the files did exercise duplicates and new ids


def test_a_blog_stored_after_the_parser_looked_keeps_its_place(db: Database) -> None:
    load_dims(db)
    with db.read() as conn:
        ids = ingest.blog_ids(conn, BLOGS)
    rows: list[ingest.ViewRow] = [("p0", ids["b1"], None, None, NOW), ("p3", ids["b1"], None, None, NOW + 3)]
    pending = [
        (0, (0, "late-a", "b2", None, None, NOW - 1)),  # before p0
        (1, (1, "late-b", "b3", "KE", None, NOW + 1)),  # between p0 and p3
        (1, (2, "gone", "nowhere", None, None, NOW + 2)),  # still unknown: rejected with its line
        (2, (4, "late-c", "b2", None, None, NOW + 4)),  # after p3
    ]
    with db.write() as conn:
        result = loading._store_resolved_views(conn, (rows, pending, [(9, "bad")], 0, 0), {})
    assert (result.accepted, result.duplicates, result.rejected) == (5, 0, 2)
    assert [(e.index, e.message) for e in result.errors] == [
        (2, "unknown blog 'nowhere': load the blog first"), (9, "bad")]
    assert [r[0] for r in stored_views(db)] == ["late-a", "p0", "late-b", "p3", "late-c"]


def test_concurrent_importers_store_each_event_once(db: Database, tmp_path: Path, parser_mode: bool) -> None:
    load_dims(db)
    n = 400
    files = {}
    for tag, start in (("A", 0), ("B", 150)):  # ids e150..e399 are in both files, in the same order
        lines = [orjson.dumps({"eventId": f"e{k}", "blogId": BLOGS[k % 3], "viewerId": tag,
                               "viewedAt": "2025-02-01T12:00:00Z"}) for k in range(start, start + n)]
        files[tag] = tmp_path / f"{tag}.ndjson"
        files[tag].write_bytes(b"\n".join(lines) + b"\n")
    results: dict[str, loading.IngestResult] = {}
    failures: list[BaseException] = []

    def run(tag: str) -> None:
        try:
            results[tag] = loading.import_path(db, "views", str(files[tag]), progress=False)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            failures.append(e)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    rows = stored_views(db)
    assert sorted(int(r[0][1:]) for r in rows) == list(range(0, 150 + n))  # every id once
    assert results["A"].accepted + results["B"].accepted == 150 + n
    assert results["A"].duplicates + results["B"].duplicates == 2 * n - (150 + n)
    for tag, start in (("A", 0), ("B", 150)):
        mine = [int(r[0][1:]) for r in rows if r[2] == tag]
        assert len(mine) == results[tag].accepted
        assert mine == sorted(mine)  # each importer's rows in its line order (ids follow arrival)
        assert all(start <= k < start + n for k in mine)


def test_a_parser_failure_is_raised_here(
    db: Database, tmp_path: Path, parser_mode: bool, capsys: pytest.CaptureFixture[str],
) -> None:
    load_dims(db)
    path = tmp_path / "views.csv"
    path.write_bytes(b"eventId,blogId\nx1,b1\n" + b"x2,b\xff\n")
    with pytest.raises(UnicodeDecodeError):
        loading.import_path(db, "views", str(path), progress=False)
    assert stored_views(db) == []  # the bad byte is in the first batch: it is not stored at all
    assert capsys.readouterr().err.splitlines()[-1] == (
        "views: import stopped by an error: nothing was stored")


def test_a_parser_killed_mid_file_fails_the_import_and_a_rerun_completes_it(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    load_dims(db)
    monkeypatch.setattr(loading, "PARSE_IN_CHILD", True)
    monkeypatch.setattr(intake, "IMPORT_BATCH", 7)
    lines = [orjson.dumps({"eventId": f"k{i}", "blogId": BLOGS[i % 3], "viewedAt": "2025-02-01T12:00:00Z"})
             for i in range(40)]
    path = tmp_path / "views.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    real = loading._resolved_view_batches
    parent = os.getpid()

    def dies_before_the_third_batch(stream: Any, is_csv: bool, lookup: Any) -> Any:
        for n, batch in enumerate(real(stream, is_csv, lookup)):
            if n == 2 and os.getpid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch

    monkeypatch.setattr(loading, "_resolved_view_batches", dies_before_the_third_batch)
    with pytest.raises(RuntimeError, match=r"the parser process ended unexpectedly \(exit code -9\)"):
        loading.import_path(db, "views", str(path), progress=False)
    out, err = capsys.readouterr()
    assert "views: " not in out  # no summary: nothing looks like success
    assert err.splitlines()[-1] == ("views: import stopped by an error: lines 1-14 are stored (14 accepted,"
                                    " 0 duplicates, 0 rejected); lines after 14 are not")
    assert [r[0] for r in stored_views(db)] == [f"k{i}" for i in range(14)]  # the two batches sent, committed
    monkeypatch.setattr(loading, "_resolved_view_batches", real)
    again = loading.import_path(db, "views", str(path), progress=False)
    assert (again.accepted, again.duplicates, again.rejected) == (26, 14, 0)
    assert [r[0] for r in stored_views(db)] == [f"k{i}" for i in range(40)]


def test_csv_rows_that_do_not_fit_the_header_are_rejected_where_they_start(
    db: Database, tmp_path: Path, parser_mode: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_dims(db)
    monkeypatch.setattr(loading, "now_us", lambda: NOW)
    path = tmp_path / "views.csv"
    path.write_bytes(
        b"\xef\xbb\xbf\r\n"                                         # 1: blank, before the header
        b"eventId,blogId,viewerId,viewerCountry,viewedAt\r\n"       # 2: header
        b'q1,b1,"reader, one",KE,2025-02-01T12:00:00Z\r\n'          # 3: a quoted comma
        b'q2,b2,"two\r\nlines",,2025-02-01T12:00:01Z\r\n'           # 4-5: a quoted line break
        b"q3,b1\r\n"                                                # 6: cut short: not a view at 'now'
        b"\r\n"                                                     # 7: blank
        b'q4,"gh\nost",u,,2025-02-01T12:00:02Z\r\n'                 # 8-9: unknown blog, named at its first line
        b"q5,b3,u,KE,2025-02-01T12:00:03Z,extra\r\n"                # 10: a cell too many
        b",b3,,,\r\n"                                               # 11: empty cells are absent fields
        b"q6,b2,u,US,2025-02-01T12:00:04Z"                          # 12: no final newline
    )
    got = loading.import_path(db, "views", str(path), progress=False)
    assert [(e.index, e.message) for e in got.errors] == [
        (6, "2 cells but the header has 5 columns"),
        (8, "unknown blog 'gh\\nost': load the blog first"),
        (10, "6 cells but the header has 5 columns"),
    ]
    assert (got.accepted, got.duplicates, got.rejected) == (4, 0, 3)
    t = 1_738_411_200_000_000
    assert stored_views(db) == [
        ("q1", "b1", "reader, one", "KE", t),
        ("q2", "b2", "two\r\nlines", None, t + 1_000_000),
        (None, "b3", None, None, NOW),
        ("q6", "b2", "u", "US", t + 4_000_000),
    ]


@pytest.mark.parametrize("name", ["empty.ndjson", "empty.csv", "header-only.csv", "blank-lines.ndjson"])
def test_files_with_nothing_to_load(db: Database, tmp_path: Path, parser_mode: bool, name: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    load_dims(db)
    content = {"empty.ndjson": b"", "empty.csv": b"", "header-only.csv": b"\xef\xbb\xbfeventId,blogId\r\n",
               "blank-lines.ndjson": b"\n \r\n\t\n"}[name]
    (tmp_path / name).write_bytes(content)
    got = loading.import_path(db, "views", str(tmp_path / name), progress=False)
    assert (got.accepted, got.duplicates, got.rejected, got.errors) == (0, 0, 0, [])
    assert capsys.readouterr().out.startswith("views: 0 accepted, 0 duplicates, 0 rejected in ")
    assert stored_views(db) == []


@pytest.mark.parametrize("n", [6, 7, 8, 14, 15])
def test_lines_at_batch_boundaries(db: Database, tmp_path: Path, parser_mode: bool, n: int) -> None:
    load_dims(db)  # batches of 7 lines (parser_mode): the last line falls before, on and after a boundary
    lines = [orjson.dumps({"eventId": f"e{i % 5}", "blogId": "ghost" if i == n - 1 else BLOGS[i % 3],
                           "viewedAt": f"2025-02-01T12:00:{i:02d}Z"}) for i in range(n)]
    (tmp_path / "v.ndjson").write_bytes(b"\n".join(lines))  # no final newline
    got = loading.import_path(db, "views", str(tmp_path / "v.ndjson"), progress=False)
    stored = min(n - 1, 5)
    assert (got.accepted, got.duplicates, got.rejected) == (stored, n - 1 - stored, 1)
    assert [(e.index, e.message) for e in got.errors] == [(n, "unknown blog 'ghost': load the blog first")]
    assert [r[0] for r in stored_views(db)] == [f"e{i}" for i in range(stored)]


def test_many_bad_lines_are_all_counted_and_the_first_ones_shown(
    db: Database, tmp_path: Path, parser_mode: bool, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    load_dims(db)
    monkeypatch.setattr(loading, "MAX_PRINTED_ERRORS", 2)
    monkeypatch.setattr(loading, "MAX_KEPT_ERRORS", 3)
    lines = [b'{"blogId": "b1", "eventId": "ok1"}', *[b"{oops" for _ in range(6)],
             b"\xef\xbb\xbf" + b'{"blogId": "b1", "eventId": "bom"}',  # line 8, first of a batch: a BOM here is bad
             *[b"{oops" for _ in range(3)], b'{"blogId": "b2", "eventId": "ok2"}']
    (tmp_path / "v.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    got = loading.import_path(db, "views", str(tmp_path / "v.ndjson"), progress=False)
    assert (got.accepted, got.duplicates, got.rejected) == (2, 0, 10)
    assert [e.index for e in got.errors] == [2, 3, 4]  # the first ones kept, all of them counted
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err if line.startswith("line ")] == ["line 2", "line 3"]
    assert "... 8 more bad lines not shown" in err
    assert [r[0] for r in stored_views(db)] == ["ok1", "ok2"]


@pytest.mark.parametrize("name", ["views.csv", "VIEWS.CSV", "views.Csv"])
def test_csv_is_recognised_by_extension_in_any_case(db: Database, tmp_path: Path, name: str) -> None:
    load_dims(db)
    path = tmp_path / name
    path.write_bytes(b"eventId,blogId,viewedAt\r\nc1,b1,2025-02-01T12:00:00Z\r\nc2,b2,2025-02-01T13:00:00Z\r\n")
    result = loading.import_path(db, "views", str(path), progress=False)
    assert (result.accepted, result.duplicates, result.rejected) == (2, 0, 0)
    assert sorted(r[0] for r in stored_views(db)) == ["c1", "c2"]
