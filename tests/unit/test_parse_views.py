"""The batch view parser (the import's hot path) gives exactly what the one-record validator gives, line by line."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from analytics_gql.domain.records import RecordError, parse_view, parse_views

NOW = 1_750_000_000_000_000

ids = st.one_of(
    st.text(alphabet="ab-9", min_size=1, max_size=6),
    st.sampled_from(["", "x" * 255, "x" * 256, "a\x00b", "caf\u00e9", "\u00e9" * 255]),
    st.integers(-5, 10**12),
    st.sampled_from([None, True, 1.5, ["b1"], {"id": "b1"}]),
)
countries = st.one_of(st.sampled_from(["KE", "US", "ke", "XX", "KEN", "", "E", None, 7, ["KE"]]), st.text(max_size=3))
instants = st.one_of(
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda t: t.isoformat()),
    st.datetimes().map(lambda t: t.isoformat() + "Z"),
    st.sampled_from([
        "2025-02-01T12:34:56Z", "2025-02-01T12:34:56.5Z", "2025-02-01T12:34:56.000007Z", "2025-02-01T12:34:56",
        "2025-02-01", "2025-02-01T14:34:56+02:00", "2025-02-30T00:00:00Z", "2025-02-01T24:00:00Z",
        "1970-01-01T00:00:00Z", "1970-01-03T00:00:00Z", "2199-12-31T23:59:59.999999Z", "2200-01-01T00:00:00Z",
        "yesterday", "", "2025-02-01T12:34:56.1234567Z", "\uff12025-02-01T00:00:00Z",
    ]),
    st.sampled_from([None, 1738413296, True]),
)
field_names = ("eventId", "blogId", "viewerId", "viewerCountry", "viewedAt")
values = {"eventId": ids, "blogId": ids, "viewerId": ids, "viewerCountry": countries, "viewedAt": instants}


@st.composite
def view_dicts(draw: st.DrawFn) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for name in draw(st.permutations(field_names)):
        if draw(st.integers(0, 9)) > 0:  # each field present most of the time, so the fast path is reached often
            d[name] = draw(values[name])
    if draw(st.integers(0, 19)) == 0:
        d["viewed_at"] = "2025-01-01"
    return d


def one_by_one(d: Any) -> tuple[str, Any]:
    try:
        return "ok", tuple(parse_view(d, NOW))
    except RecordError as e:
        return "error", e.message


def batched(item: Any) -> tuple[str, Any]:
    rows, errors = parse_views([(7, item)], NOW)
    assert len(rows) + len(errors) == 1
    if rows:
        assert rows[0][0] == 7
        return "ok", rows[0][1:]
    assert errors[0][0] == 7
    return "error", errors[0][1]


@given(view_dicts())
@example({"eventId": "e", "blogId": "b", "viewerId": "v", "viewerCountry": "KE", "viewedAt": "2025-02-01T12:34:56Z"})
@example({"eventId": "e", "blogId": "b", "viewerId": "v", "viewedAt": "2025-02-01T12:34:56"})  # naive: UTC
@example({"eventId": "e", "blogId": "b", "viewerId": "v", "viewedAt": "1970-01-02T23:59:59.999999Z"})
@example({"eventId": "e", "blogId": "b", "viewerId": "v", "viewerCountry": ["KE"]})  # was a TypeError, not a reason
@example({"eventId": "e", "blogId": "b", "viewerId": "v", "viewerCountry": ["KE"], "viewedAt": "2025-02-01T12:00:00Z"})
@settings(max_examples=400)  # cheap, and the fast paths' edges are needles: search wider than the profile
def test_batch_parser_equals_the_validator(d: dict[str, Any]) -> None:
    expected = one_by_one(d)
    assert expected == field_by_field(d)  # parse_view's fast path against its own field-by-field rules
    assert batched(d) == expected
    try:
        text = orjson.dumps(d)
    except TypeError:  # pragma: no cover - every generated value is JSON
        return
    assert batched(text) == one_by_one(orjson.loads(text))
    assert batched(text.decode()) == one_by_one(orjson.loads(text))


@given(st.one_of(st.binary(max_size=40), st.text(max_size=40)))
@example(b'{"eventId": "e4", "blogId": ')
@example(b"[1, 2]")
@example(b'"b1"')
def test_any_line_is_one_row_or_one_error(line: bytes | str) -> None:
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        assert batched(line) == ("error", f"invalid JSON: {e}")
    else:
        assert batched(line) == one_by_one(decoded)


def test_order_and_indexes_are_kept() -> None:
    items = [
        (3, b'{"blogId": "b1", "eventId": "e1", "viewedAt": "2025-02-01T12:00:00Z"}'),
        (5, b"{nope"),
        (6, {"blogId": "b2", "viewedAt": "2025-02-01T12:00:00.5Z", "viewerCountry": "KE", "viewerId": "u"}),
        (9, '{"blogId": "b3", "viewerCountry": "ke"}'),
        (10, {"blogId": "b4"}),
    ]
    rows, errors = parse_views(items, NOW)
    assert rows == [
        (3, "e1", "b1", None, None, 1_738_411_200_000_000),
        (6, None, "b2", "u", "KE", 1_738_411_200_500_000),
        (10, None, "b4", None, None, NOW),
    ]
    assert [i for i, _ in errors] == [5, 9]
    assert errors[0][1].startswith("invalid JSON: ")
    assert errors[1][1] == "viewerCountry: 'ke' must be upper case (KE)"


class _NotExactlyDict(dict[str, Any]):
    """A mapping parse_view cannot take its fast path for (it checks `type(d) is dict`): the field-by-field rules."""


def field_by_field(d: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", tuple(parse_view(_NotExactlyDict(d), NOW))
    except RecordError as e:
        return "error", e.message


GOOD = {"eventId": "e", "blogId": "b", "viewerId": "v", "viewerCountry": "KE", "viewedAt": "2025-02-01T12:34:56Z"}
GOOD_US = 1_738_413_296_000_000
MAX_US = 7_258_118_400_000_000  # 2200-01-01T00:00:00Z, the first instant refused
MIN_US = 172_800_000_000  # 1970-01-03T00:00:00Z, the first instant accepted
# One field of an otherwise well-formed record changed (so both fast paths are entered), and what must happen.
EDGES: list[tuple[str, Any, tuple[str, Any]]] = [
    *[(f, "x" * 255, ("ok", None)) for f in ("eventId", "blogId", "viewerId")],
    *[(f, "x" * 256, ("error", f"{f}: longer than 255 characters (256)")) for f in ("eventId", "blogId", "viewerId")],
    *[(f, "a\x00b", ("error", f"{f}: contains a NUL character")) for f in ("eventId", "blogId", "viewerId")],
    ("viewerCountry", "ke", ("error", "viewerCountry: 'ke' must be upper case (KE)")),
    ("viewerCountry", "XX", ("error", "viewerCountry: 'XX' is not an ISO 3166-1 alpha-2 country code")),
    ("viewerCountry", "", ("ok", None)),
    ("viewedAt", "1970-01-03T00:00:00Z", ("ok", MIN_US)),
    ("viewedAt", "1970-01-02T23:59:59.999999Z",
     ("error", "viewedAt: '1970-01-02T23:59:59.999999Z' is out of range (1970-01-03 to 2199-12-31)")),
    ("viewedAt", "2199-12-31T23:59:59.999999Z", ("ok", MAX_US - 1)),
    ("viewedAt", "2200-01-01T00:00:00Z",
     ("error", "viewedAt: '2200-01-01T00:00:00Z' is out of range (1970-01-03 to 2199-12-31)")),
    ("viewedAt", "2200-01-01T01:00:00+01:00",
     ("error", "viewedAt: '2200-01-01T01:00:00+01:00' is out of range (1970-01-03 to 2199-12-31)")),
    ("viewedAt", "2025-02-01T12:34:56", ("ok", GOOD_US)),  # no offset: UTC
    ("viewedAt", "2025-02-01T14:34:56+02:00", ("ok", GOOD_US)),
    ("viewedAt", "", ("ok", NOW)),
]


@pytest.mark.parametrize(("field", "value", "want"), EDGES, ids=[f"{f}={v[:30]!r}" for f, v, _ in EDGES])
def test_fast_paths_keep_every_rule_at_its_edge(field: str, value: Any, want: tuple[str, Any]) -> None:
    d = {**GOOD, field: value}
    if want[0] == "ok":
        r = dict(zip(("eventId", "blogId", "viewerId", "viewerCountry"), ("e", "b", "v", "KE"), strict=True))
        r[field] = value or None
        at = want[1] if field == "viewedAt" else GOOD_US
        want = ("ok", (r["eventId"], r["blogId"], r["viewerId"], r["viewerCountry"], at))
    assert field_by_field(d) == want
    assert one_by_one(d) == want  # parse_view's fast path
    assert batched(d) == want  # parse_views' fast path, from a dict
    assert batched(orjson.dumps(d)) == want  # and from a line
