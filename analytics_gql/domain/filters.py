"""The typed, allow-listed view filter: and/or/not over blog, author, country and viewer country.

Semantics are two-valued: a view whose blog (or reader) has no country matches no `country` (`viewerCountry`)
predicate, and `not` negates as usual. The same tree is evaluated in Python (tests, blog-level reasoning) and
compiled to SQL by storage/queries.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from analytics_gql.domain.records import COUNTRY_CODES
from analytics_gql.errors import BadInput

MAX_VALUES = 1_000
MAX_NODES = 200
MAX_VALUE_LEN = 1_000


class Field(enum.StrEnum):
    """The only fields a filter may test."""

    BLOG = "blog"
    AUTHOR = "author"
    COUNTRY = "country"
    VIEWER_COUNTRY = "viewer_country"


@dataclass(frozen=True, slots=True)
class Atom:
    """`field` is one of `values` (a missing value never matches)."""

    field: Field
    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class And:
    """All parts hold (an empty And is true)."""

    parts: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """At least one part holds (an empty Or is false)."""

    parts: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """The part does not hold."""

    part: Filter


@dataclass(frozen=True, slots=True)
class Const:
    """A constant truth value (after substitution or simplification)."""

    value: bool


Filter = Atom | And | Or | Not | Const
TRUE = Const(True)
FALSE = Const(False)


def atom(field: Field, eq: str | None = None, in_: list[str] | None = None) -> Filter:
    """The predicate of an IdFilter/CodeFilter: `eq` and `in` together are AND-ed; neither = no constraint."""
    parts: list[Filter] = []
    for v in ([eq] if eq is not None else []):
        parts.append(Atom(field, frozenset([_check_value(v)])))
    if in_ is not None:
        if len(in_) > MAX_VALUES:
            raise BadInput(f"a filter's `in` list may hold at most {MAX_VALUES} values (got {len(in_)})")
        parts.append(Atom(field, frozenset(_check_value(v) for v in in_)))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _check_value(v: str) -> str:
    if len(v) > MAX_VALUE_LEN:
        raise BadInput(f"a filter value may be at most {MAX_VALUE_LEN} characters long")
    if "\x00" in v:
        raise BadInput("a filter value may not contain NUL characters")
    return v


def size(f: Filter) -> int:
    """Number of nodes in the tree (bounded, so a filter bomb is refused before any SQL)."""
    if isinstance(f, And | Or):
        return 1 + sum(size(p) for p in f.parts)
    if isinstance(f, Not):
        return 1 + size(f.part)
    return 1


def check_size(f: Filter) -> Filter:
    """Refuse filters with more than MAX_NODES nodes."""
    if size(f) > MAX_NODES:
        raise BadInput(f"the filter is too large: at most {MAX_NODES} predicates and connectives")
    return f


def evaluate(f: Filter, *, blog: str, author: str, country: str | None, viewer_country: str | None) -> bool:
    """Whether one view (given by its blog's, author's and reader's attributes) matches the filter."""
    if isinstance(f, Const):
        return f.value
    if isinstance(f, Atom):
        value = {Field.BLOG: blog, Field.AUTHOR: author, Field.COUNTRY: country,
                 Field.VIEWER_COUNTRY: viewer_country}[f.field]
        return value is not None and value in f.values
    if isinstance(f, And):
        return all(evaluate(p, blog=blog, author=author, country=country, viewer_country=viewer_country)
                   for p in f.parts)
    if isinstance(f, Or):
        return any(evaluate(p, blog=blog, author=author, country=country, viewer_country=viewer_country)
                   for p in f.parts)
    return not evaluate(f.part, blog=blog, author=author, country=country, viewer_country=viewer_country)


def simplify(f: Filter) -> Filter:
    """Fold constants (so a filter that became constant costs no SQL predicate)."""
    if isinstance(f, And | Or):
        parts = [simplify(p) for p in f.parts]
        absorbing, neutral = (FALSE, TRUE) if isinstance(f, And) else (TRUE, FALSE)
        if absorbing in parts:
            return absorbing
        parts = [p for p in parts if p != neutral]
        if not parts:
            return neutral
        return parts[0] if len(parts) == 1 else type(f)(tuple(parts))
    if isinstance(f, Not):
        inner = simplify(f.part)
        return Const(not inner.value) if isinstance(inner, Const) else Not(inner)
    if isinstance(f, Atom) and not f.values:
        return FALSE
    return f


def substitute_viewer_country(f: Filter, code: str | None) -> Filter:
    """The filter with every viewer-country predicate decided for a reader from `code` (None = unknown)."""
    if isinstance(f, Atom):
        if f.field is Field.VIEWER_COUNTRY:
            return Const(code is not None and code in f.values)
        return f
    if isinstance(f, And | Or):
        return type(f)(tuple(substitute_viewer_country(p, code) for p in f.parts))
    if isinstance(f, Not):
        return Not(substitute_viewer_country(f.part, code))
    return f


def viewer_codes(f: Filter) -> set[str]:
    """Every viewer-country code the filter mentions."""
    if isinstance(f, Atom):
        return set(f.values) if f.field is Field.VIEWER_COUNTRY else set()
    if isinstance(f, And | Or):
        return set().union(*(viewer_codes(p) for p in f.parts)) if f.parts else set()
    if isinstance(f, Not):
        return viewer_codes(f.part)
    return set()


# A reader country that no filter can name: it stands for "any country not mentioned".
_OTHER = "\x00other"


def blog_level(f: Filter) -> Filter:
    """A blog-only filter: true when the filter holds for the blog with SOME reader country (or none).

    Used for `blogsCreated` (CONTRACT 3): enumerate the reader classes that matter (each mentioned code a reader
    can have, any other code, unknown) and OR the substituted filters. A mentioned value that is not an ISO code
    ("--", "ZZ") names no reader: no view can match it, so it is no reader class of its own.
    """
    classes: list[str | None] = [*sorted(viewer_codes(f) & COUNTRY_CODES), _OTHER, None]
    return simplify(Or(tuple(substitute_viewer_country(f, c) for c in classes)))


def canonical(f: Filter) -> str:
    """A text of the tree that is equal for equal trees in every process (a set's order is not: hash seeds)."""
    if isinstance(f, Const):
        return "T" if f.value else "F"
    if isinstance(f, Atom):
        return f"{f.field.value}{sorted(f.values)!r}"
    if isinstance(f, And | Or):
        return ("and(" if isinstance(f, And) else "or(") + ",".join(canonical(p) for p in f.parts) + ")"
    return f"not({canonical(f.part)})"


def mentions(f: Filter, field: Field) -> bool:
    """Whether the filter tests `field` anywhere."""
    if isinstance(f, Atom):
        return f.field is field
    if isinstance(f, And | Or):
        return any(mentions(p, field) for p in f.parts)
    if isinstance(f, Not):
        return mentions(f.part, field)
    return False
