"""Validation and normalisation of author, blog and view records (camelCase dicts) into typed tuples."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson
import pycountry

from analytics_gql.domain.calendar import EPOCH, MAX_US, MIN_US, UTC

ID_MAX = 255
TEXT_MAX = 1_000
COUNTRY_CODES: frozenset[str] = frozenset(c.alpha_2 for c in pycountry.countries)
_ONE_US = dt.timedelta(microseconds=1)
_MAX_NAMED_FIELDS = 10

AUTHOR_FIELDS = frozenset({"id", "name", "country"})
BLOG_FIELDS = frozenset({"id", "title", "authorId", "country", "createdAt"})
VIEW_FIELDS = frozenset({"eventId", "blogId", "viewerId", "viewerCountry", "viewedAt"})


class RecordError(ValueError):
    """One record is invalid; the message says which field and why, for a person to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AuthorRecord(NamedTuple):
    """A valid author: the client's id, a name and an optional country code."""

    external_id: str
    name: str
    country: str | None


class BlogRecord(NamedTuple):
    """A valid blog: client ids for itself and its author, title, optional country, creation instant (us)."""

    external_id: str
    title: str
    author_external_id: str
    country: str | None
    created_at: int


class ViewRecord(NamedTuple):
    """A valid view: optional event id, the blog's client id, optional viewer and country, instant (us)."""

    event_id: str | None
    blog_external_id: str
    viewer_id: str | None
    viewer_country: str | None
    viewed_at: int


def parse_instant(value: Any, field: str = "timestamp") -> int:
    """An ISO 8601 timestamp (offset or Z; no offset = UTC) or datetime as integer microseconds since the epoch."""
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value)
        except ValueError:
            raise RecordError(
                f"{field}: {_show(value)} is not an ISO 8601 timestamp (e.g. 2025-02-01T12:34:56Z)"
            ) from None
    elif isinstance(value, dt.datetime):
        t = value
    else:
        raise RecordError(f"{field}: expected an ISO 8601 timestamp string, got {_kind(value)}")
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    try:
        us = (t - EPOCH) // _ONE_US
    except OverflowError:  # pragma: no cover - fromisoformat bounds keep this unreachable in practice
        raise RecordError(f"{field}: {_show(value)} is out of range") from None
    if not MIN_US <= us < MAX_US:
        raise RecordError(f"{field}: {_show(value)} is out of range (1970-01-03 to 2199-12-31)")
    return us


def parse_author(d: dict[str, Any]) -> AuthorRecord:
    """Validate an author dict: `id`, `name`, optional `country`."""
    _check_fields(d, AUTHOR_FIELDS)
    return AuthorRecord(
        _ident(d, "id", required=True),  # type: ignore[arg-type]
        _text(d, "name"),
        _country(d, "country"),
    )


def parse_blog(d: dict[str, Any]) -> BlogRecord:
    """Validate a blog dict: `id`, `title`, `authorId`, optional `country`, `createdAt`."""
    _check_fields(d, BLOG_FIELDS)
    created = d.get("createdAt")
    if created is None or created == "":
        raise RecordError("missing field createdAt")
    return BlogRecord(
        _ident(d, "id", required=True),  # type: ignore[arg-type]
        _text(d, "title"),
        _ident(d, "authorId", required=True),  # type: ignore[arg-type]
        _country(d, "country"),
        parse_instant(created, "createdAt"),
    )


def parse_view(d: dict[str, Any], now_us: int) -> ViewRecord:
    """Validate a view dict: `blogId`; optional `eventId`, `viewerId`, `viewerCountry`, `viewedAt` (default now)."""
    if type(d) is dict and d.keys() <= VIEW_FIELDS:
        # Fast path for the common, well-formed line (the import hot path): string fields, a known code, Z time.
        event, blog, viewer, country, viewed = (
            d.get("eventId"), d.get("blogId"), d.get("viewerId"), d.get("viewerCountry"), d.get("viewedAt")
        )
        if (
            type(blog) is str
            and type(event) is str
            and type(viewer) is str
            and 0 < len(blog) <= ID_MAX
            and 0 < len(event) <= ID_MAX
            and 0 < len(viewer) <= ID_MAX
            and (country is None or (type(country) is str and country in COUNTRY_CODES))
            and type(viewed) is str
            and "\x00" not in blog + event + viewer
        ):
            try:
                us = (dt.datetime.fromisoformat(viewed) - EPOCH) // _ONE_US
            except (ValueError, TypeError):
                pass  # naive or malformed: the full path below says what is wrong
            else:
                if MIN_US <= us < MAX_US:
                    return ViewRecord(event, blog, viewer, country, us)
    else:
        _check_fields(d, VIEW_FIELDS)
    viewed = d.get("viewedAt")
    return ViewRecord(
        _ident(d, "eventId", required=False),
        _ident(d, "blogId", required=True),  # type: ignore[arg-type]
        _ident(d, "viewerId", required=False),
        _country(d, "viewerCountry"),
        now_us if viewed is None or viewed == "" else parse_instant(viewed, "viewedAt"),
    )


def parse_views(
    items: Iterable[tuple[int, Any]], now_us: int
) -> tuple[list[tuple[int, str | None, str, str | None, str | None, int]], list[tuple[int, str]]]:
    """Parse and validate a batch of (index, JSON text or dict) views, in order: (index, *ViewRecord) rows, errors.

    The same rules as `parse_view` line by line (a property test holds them equal); the well-formed common line
    is checked inline here, without a call per field, because this loop is the import's hot path.
    """
    rows: list[tuple[int, str | None, str, str | None, str | None, int]] = []
    errors: list[tuple[int, str]] = []
    add = rows.append
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    fromisoformat = dt.datetime.fromisoformat
    codes = COUNTRY_CODES
    fields = VIEW_FIELDS
    epoch = EPOCH
    one_us = _ONE_US
    for index, item in items:
        if type(item) is bytes or type(item) is str:
            try:
                d = loads(item)
            except decode_error as e:
                errors.append((index, f"invalid JSON: {e}"))
                continue
        else:
            d = item
        if type(d) is dict and d.keys() <= fields:
            get = d.get
            event = get("eventId")
            blog = get("blogId")
            viewer = get("viewerId")
            country = get("viewerCountry")
            viewed = get("viewedAt")
            if (
                type(blog) is str
                and type(event) is str
                and type(viewer) is str
                and type(viewed) is str
                and 0 < len(blog) <= ID_MAX
                and 0 < len(event) <= ID_MAX
                and 0 < len(viewer) <= ID_MAX
                and (country is None or (type(country) is str and country in codes))
                and "\x00" not in blog
                and "\x00" not in event
                and "\x00" not in viewer
            ):
                try:
                    us = (fromisoformat(viewed) - epoch) // one_us
                except (ValueError, TypeError):
                    pass  # naive or malformed: parse_view below says what is wrong, or reads it as UTC
                else:
                    if MIN_US <= us < MAX_US:
                        add((index, event, blog, viewer, country, us))
                        continue
        try:
            r = parse_view(d, now_us)
        except RecordError as e:
            errors.append((index, e.message))
        else:
            add((index, r[0], r[1], r[2], r[3], r[4]))
    return rows, errors


def _check_fields(d: Any, allowed: frozenset[str]) -> None:
    """Reject non-objects and unknown keys, so a typo (viewed_at) is not silently dropped."""
    if not isinstance(d, dict):
        raise RecordError(f"expected a JSON object, got {_kind(d)}")
    unknown = sorted(str(k) for k in d.keys() - allowed)
    if unknown:
        # Cut short like _show: a 10 kB key, or thousands of keys, must not flood the report.
        names = [k if len(k) <= 40 else k[:40] + "..." for k in unknown[:_MAX_NAMED_FIELDS]]
        if len(unknown) > _MAX_NAMED_FIELDS:
            names.append(f"... ({len(unknown)} in all)")
        raise RecordError(f"unknown field(s) {', '.join(names)}; expected {', '.join(sorted(allowed))}")


def _ident(d: dict[str, Any], field: str, *, required: bool) -> str | None:
    v = d.get(field)
    if v is None or v == "":
        if required:
            raise RecordError(f"missing field {field}")
        return None
    if type(v) is not str:
        # JSON exports often carry numeric ids; they mean the same as their decimal string.
        if type(v) is int:
            v = str(v)
        else:
            raise RecordError(f"{field}: expected a string id, got {_kind(v)}")
    if len(v) > ID_MAX:
        raise RecordError(f"{field}: longer than {ID_MAX} characters ({len(v)})")
    if "\x00" in v:
        raise RecordError(f"{field}: contains a NUL character")
    return v


def _text(d: dict[str, Any], field: str) -> str:
    v = d.get(field)
    if v is None or v == "":
        raise RecordError(f"missing field {field}")
    if type(v) is not str:
        raise RecordError(f"{field}: expected a string, got {_kind(v)}")
    if len(v) > TEXT_MAX:
        raise RecordError(f"{field}: longer than {TEXT_MAX} characters ({len(v)})")
    if "\x00" in v:
        raise RecordError(f"{field}: contains a NUL character")
    return v


def _country(d: dict[str, Any], field: str) -> str | None:
    v = d.get(field)
    if v is None or v == "":
        return None
    if type(v) is not str:
        raise RecordError(f"{field}: expected an ISO 3166-1 alpha-2 code, got {_kind(v)}")
    if v in COUNTRY_CODES:
        return v
    if v.upper() in COUNTRY_CODES:
        raise RecordError(f"{field}: {_show(v)} must be upper case ({v.upper()})")
    raise RecordError(f"{field}: {_show(v)} is not an ISO 3166-1 alpha-2 country code")


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(v), type(v).__name__
    )


def _show(v: object) -> str:
    """A value quoted for an error message, cut short so a 10 kB string does not flood the report (a datetime,
    given through GraphQL's DateTime, as its ISO 8601 text)."""
    text = v.isoformat() if isinstance(v, dt.datetime) else str(v)
    return repr(text if len(text) <= 40 else text[:40] + "...")
