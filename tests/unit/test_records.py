"""Record validation: exact microsecond instants, named missing fields, codes, lengths and NUL characters."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pycountry
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics_gql.domain.calendar import MAX_US, MIN_US
from analytics_gql.domain.queries import RangeSpec
from analytics_gql.domain.records import (
    COUNTRY_CODES,
    AuthorRecord,
    BlogRecord,
    RecordError,
    ViewRecord,
    parse_author,
    parse_blog,
    parse_instant,
    parse_view,
)
from analytics_gql.errors import BadInput

NOW = 1_750_000_000_000_000


def test_instant_forms_are_exact() -> None:
    assert parse_instant("2025-02-01T12:34:56Z") == 1_738_413_296_000_000
    assert parse_instant("2025-02-01T12:34:56.000007Z") == 1_738_413_296_000_007
    assert parse_instant("2025-02-01T12:34:56") == 1_738_413_296_000_000  # naive = UTC
    assert parse_instant("2025-02-01T14:34:56+02:00") == 1_738_413_296_000_000
    assert parse_instant("2025-02-01T07:04:56-05:30") == 1_738_413_296_000_000
    assert parse_instant("2025-02-01") == 1_738_368_000_000_000
    aware = dt.datetime(2025, 2, 1, 13, 34, 56, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert parse_instant(aware) == 1_738_413_296_000_000


@given(st.integers(min_value=MIN_US, max_value=MAX_US - 1), st.integers(min_value=-23 * 60, max_value=23 * 60))
def test_instant_round_trips_any_offset(us: int, offset_min: int) -> None:
    tz = dt.timezone(dt.timedelta(minutes=offset_min))
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
    assert parse_instant(t.astimezone(tz).isoformat()) == us
    assert parse_instant(t.isoformat().replace("+00:00", "Z")) == us
    view = parse_view({"blogId": "b", "eventId": "e", "viewerId": "v", "viewedAt": t.astimezone(tz).isoformat()}, NOW)
    assert view.viewed_at == us


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("yesterday", "'yesterday' is not an ISO 8601 timestamp"),
        ("2025-02-30T00:00:00Z", "is not an ISO 8601 timestamp"),
        ("2025-02-01T24:00:00Z", "is not an ISO 8601 timestamp"),
        ("1970-01-01T00:00:00Z", "out of range"),
        ("2200-01-01T00:00:00Z", "out of range"),
        (1738413296, "expected an ISO 8601 timestamp string, got a number"),
    ],
)
def test_bad_instants_say_what_is_wrong(value: object, fragment: str) -> None:
    with pytest.raises(RecordError) as e:
        parse_view({"blogId": "b1", "viewedAt": value}, NOW)
    assert fragment in e.value.message
    assert e.value.message.startswith("viewedAt: ")


def test_out_of_range_datetime_objects_are_a_record_error() -> None:
    """GraphQL's DateTime hands the loader datetime objects; out of range is a rejected item, not a crash (the
    fuzzer found `createdAt: "1970-01-01"` answered INTERNAL)."""
    with pytest.raises(RecordError) as e:
        parse_instant(dt.datetime(1970, 1, 1, tzinfo=dt.UTC), "createdAt")
    assert e.value.message == "createdAt: '1970-01-01T00:00:00+00:00' is out of range (1970-01-03 to 2199-12-31)"


def test_range_bounds_are_inclusive_then_exclusive() -> None:
    assert parse_instant("1970-01-03T00:00:00Z") == MIN_US
    with pytest.raises(RecordError):
        parse_instant("1970-01-02T23:59:59.999999Z")
    assert parse_instant("2199-12-31T23:59:59.999999Z") == MAX_US - 1


def test_view_defaults_and_optional_fields() -> None:
    assert parse_view({"blogId": "b1"}, NOW) == ViewRecord(None, "b1", None, None, NOW)
    assert parse_view({"blogId": "b1", "viewedAt": "", "viewerCountry": "", "eventId": ""}, NOW) == ViewRecord(
        None, "b1", None, None, NOW
    )
    assert parse_view({"blogId": 7, "eventId": 12, "viewerCountry": "KE"}, NOW) == ViewRecord(
        "12", "7", None, "KE", NOW
    )
    full = {"eventId": "e-1", "blogId": "b1", "viewerId": "u9", "viewerCountry": "KE",
            "viewedAt": "2025-02-01T12:34:56Z"}
    assert parse_view(full, NOW) == ViewRecord("e-1", "b1", "u9", "KE", 1_738_413_296_000_000)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({}, "missing field blogId"),
        ({"blogId": None}, "missing field blogId"),
        ({"blogId": "b", "viewerCountry": "ke"}, "viewerCountry: 'ke' must be upper case (KE)"),
        ({"blogId": "b", "viewerCountry": "XX"}, "viewerCountry: 'XX' is not an ISO 3166-1 alpha-2 country code"),
        ({"blogId": "b", "viewerCountry": "KEN"}, "viewerCountry: 'KEN' is not an ISO 3166-1 alpha-2 country code"),
        ({"blogId": "b", "viewerCountry": ["KE"]}, "viewerCountry: expected an ISO 3166-1 alpha-2 code, got a list"),
        ({"blogId": "b" * 256}, "blogId: longer than 255 characters (256)"),
        ({"blogId": "b", "eventId": "e\x00"}, "eventId: contains a NUL character"),
        ({"blogId": "b", "viewerId": True}, "viewerId: expected a string id, got a boolean"),
        ({"blogId": "b", "viewed_at": "2025-01-01"}, "unknown field(s) viewed_at; expected blogId, eventId,"),
    ],
)
def test_bad_views_are_named(record: dict[str, object], message: str) -> None:
    with pytest.raises(RecordError) as e:
        parse_view(record, NOW)  # type: ignore[arg-type]
    assert e.value.message.startswith(message)


def test_non_objects_are_rejected() -> None:
    with pytest.raises(RecordError, match="expected a JSON object, got a list"):
        parse_view([1, 2], NOW)  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="expected a JSON object, got str"):
        parse_author("a1")  # type: ignore[arg-type]


def test_authors_and_blogs() -> None:
    assert parse_author({"id": "a1", "name": "Abebe", "country": "ET"}) == AuthorRecord("a1", "Abebe", "ET")
    assert parse_author({"id": "a1", "name": "Abebe"}) == AuthorRecord("a1", "Abebe", None)
    blog = {"id": "b1", "title": "Hello", "authorId": "a1", "country": "ET", "createdAt": "2025-01-03T10:00:00Z"}
    assert parse_blog(blog) == BlogRecord("b1", "Hello", "a1", "ET", 1_735_898_400_000_000)
    for field in ("id", "title", "authorId", "createdAt"):
        with pytest.raises(RecordError, match=f"^missing field {field}$"):
            parse_blog({k: v for k, v in blog.items() if k != field})
    with pytest.raises(RecordError, match="^name: longer than 1000 characters"):
        parse_author({"id": "a1", "name": "n" * 1001})
    with pytest.raises(RecordError, match="^title: contains a NUL character"):
        parse_blog({**blog, "title": "a\x00b"})


def test_every_pycountry_code_is_known() -> None:
    assert {c.alpha_2 for c in pycountry.countries} == COUNTRY_CODES
    for code in ("US", "KE", "ET", "GB"):
        assert parse_view({"blogId": "b", "viewerCountry": code}, NOW).viewer_country == code


def test_long_values_are_cut_short_in_messages() -> None:
    with pytest.raises(RecordError) as e:
        parse_instant("x" * 10_000, "viewedAt")
    assert len(e.value.message) < 200


def test_unknown_field_names_are_cut_short_in_messages() -> None:
    with pytest.raises(RecordError) as e:
        parse_view({"blogId": "b", "x" * 10_000: 1}, NOW)
    assert e.value.message == (f"unknown field(s) {'x' * 40}...; expected blogId, eventId, viewedAt, viewerCountry,"
                               " viewerId")
    with pytest.raises(RecordError) as e:
        parse_author({"id": "a", "name": "n", **{f"k{i:04}": 1 for i in range(5_000)}})
    names = ", ".join(f"k{i:04}" for i in range(10))
    assert e.value.message == f"unknown field(s) {names}, ... (5000 in all); expected country, id, name"


def test_an_explicit_start_at_or_after_now_is_refused_when_the_end_is_now() -> None:
    """CONTRACT 2: a missing end is now, and start >= end is an error, also when start equals now exactly."""
    now = 1_767_225_600_000_000
    utc = ZoneInfo("UTC")
    for start in (now, now + 1):
        with pytest.raises(BadInput, match="must be before range.end"):
            RangeSpec(start, None, utc).resolve(data_start=0, now=now)
    assert RangeSpec(now - 1, None, utc).resolve(data_start=0, now=now) == (now - 1, now)
    # No start and no data: the empty range at now, not an error.
    assert RangeSpec(None, None, utc).resolve(data_start=None, now=now) == (now, now)
    assert RangeSpec(None, None, utc).resolve(data_start=now + 5, now=now) == (now, now)
