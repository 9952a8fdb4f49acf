"""domain/filters: evaluation, simplification, and blog_level's "holds for SOME reader country" semantics."""

from __future__ import annotations

import pycountry
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics_gql.domain import filters as F
from analytics_gql.errors import BadInput

BLOGS = ["b1", "b2", "b'3"]
AUTHORS = ["a1", "a2"]
CODES = ["US", "IN", "KE", "--", "ZZ"]
EVERY_READER: list[str | None] = [c.alpha_2 for c in pycountry.countries] + [None]

ATOMS = st.one_of(
    st.builds(F.Atom, st.just(F.Field.BLOG), st.frozensets(st.sampled_from(BLOGS), max_size=2)),
    st.builds(F.Atom, st.just(F.Field.AUTHOR), st.frozensets(st.sampled_from(AUTHORS), max_size=2)),
    st.builds(F.Atom, st.just(F.Field.COUNTRY), st.frozensets(st.sampled_from(CODES), max_size=2)),
    st.builds(F.Atom, st.just(F.Field.VIEWER_COUNTRY), st.frozensets(st.sampled_from(CODES), max_size=3)),
    st.sampled_from([F.TRUE, F.FALSE]),
)
FILTERS = st.recursive(ATOMS, lambda c: st.one_of(
    st.lists(c, max_size=3).map(lambda ps: F.And(tuple(ps))),
    st.lists(c, max_size=3).map(lambda ps: F.Or(tuple(ps))),
    c.map(F.Not),
), max_leaves=8)
VIEWS = st.fixed_dictionaries({
    "blog": st.sampled_from(BLOGS), "author": st.sampled_from(AUTHORS),
    "country": st.sampled_from([None, "US", "IN", "KE"]),
    "viewer_country": st.sampled_from([None, "US", "IN", "KE", "GB"]),
})


def naive(f: F.Filter, v: dict[str, str | None]) -> bool:
    """The contract's semantics, written again: a missing country matches no predicate; `not` negates."""
    if isinstance(f, F.Const):
        return f.value
    if isinstance(f, F.Atom):
        value = v[f.field.value]
        return value is not None and value in f.values
    if isinstance(f, F.And):
        return all(naive(p, v) for p in f.parts)
    if isinstance(f, F.Or):
        return any(naive(p, v) for p in f.parts)
    assert isinstance(f, F.Not)
    return not naive(f.part, v)


@given(FILTERS, VIEWS)
def test_evaluate(f: F.Filter, v: dict[str, str | None]) -> None:
    assert F.evaluate(f, **v) == naive(f, v)  # type: ignore[arg-type]
    assert F.evaluate(F.simplify(f), **v) == naive(f, v)  # type: ignore[arg-type]


@given(FILTERS, VIEWS)
def test_blog_level_is_existential_over_every_reader_country(f: F.Filter, v: dict[str, str | None]) -> None:
    """blogsCreated counts a blog when the filter holds for it with SOME reader country (any ISO code, or none)."""
    blog_only = F.blog_level(f)
    assert not F.mentions(blog_only, F.Field.VIEWER_COUNTRY)
    want = any(naive(f, {**v, "viewer_country": c}) for c in EVERY_READER)
    for reader in (None, "US", "GB"):
        assert F.evaluate(blog_only, **{**v, "viewer_country": reader}) == want  # type: ignore[arg-type]


@given(FILTERS, VIEWS, st.sampled_from([None, "US", "IN", "GB"]))
def test_substitute_viewer_country(f: F.Filter, v: dict[str, str | None], code: str | None) -> None:
    decided = F.substitute_viewer_country(f, code)
    assert not F.mentions(decided, F.Field.VIEWER_COUNTRY)
    assert F.evaluate(decided, **{**v, "viewer_country": None}) == naive(  # type: ignore[arg-type]
        f, {**v, "viewer_country": code})


def test_blog_level_ignores_values_no_reader_can_have() -> None:
    """Found by the oracle property test: "--" is no reader's country (an unknown one is None), so `viewerCountry:
    {eq: "--"}` matches no view, and a blog other than b1 cannot satisfy NOT blog=b1 AND (blog=b1 OR reader "--")."""
    f = F.And((F.Not(F.Atom(F.Field.BLOG, frozenset(["b1"]))),
               F.Or((F.Atom(F.Field.BLOG, frozenset(["b1"])), F.Atom(F.Field.VIEWER_COUNTRY, frozenset(["--"]))))))
    for blog in ("b1", "b2"):
        v: dict[str, str | None] = {"blog": blog, "author": "a1", "country": None}
        assert not any(naive(f, {**v, "viewer_country": c}) for c in EVERY_READER)
        assert not F.evaluate(F.blog_level(f), **{**v, "viewer_country": None})  # type: ignore[arg-type]
    assert F.blog_level(F.Atom(F.Field.VIEWER_COUNTRY, frozenset(["KE", "ZZ"]))) == F.TRUE


def test_examples() -> None:
    v = {"blog": "b1", "author": "a1", "country": None, "viewer_country": None}
    # A view whose blog has no country matches no country predicate, and its negation holds.
    assert not F.evaluate(F.Atom(F.Field.COUNTRY, frozenset(["--"])), **v)  # type: ignore[arg-type]
    assert F.evaluate(F.Not(F.Atom(F.Field.COUNTRY, frozenset(["US"]))), **v)  # type: ignore[arg-type]
    assert F.evaluate(F.And(()), **v) and not F.evaluate(F.Or(()), **v)  # type: ignore[arg-type]
    # eq and in together are AND-ed; neither is no constraint; an empty `in` matches nothing.
    both = F.atom(F.Field.BLOG, "b1", ["b2"])
    assert not F.evaluate(both, **v)  # type: ignore[arg-type]
    assert F.evaluate(F.atom(F.Field.BLOG, "b1", ["b1", "b2"]), **v)  # type: ignore[arg-type]
    assert F.simplify(F.atom(F.Field.BLOG)) == F.TRUE
    assert F.simplify(F.atom(F.Field.BLOG, in_=[])) == F.FALSE
    # "Only readers from KE" is satisfiable for any blog; "readers from nowhere and from KE" is not.
    ke = F.Atom(F.Field.VIEWER_COUNTRY, frozenset(["KE"]))
    assert F.simplify(F.blog_level(ke)) == F.TRUE
    assert F.simplify(F.blog_level(F.And((ke, F.Not(ke))))) == F.FALSE
    assert F.simplify(F.blog_level(F.Not(F.Atom(F.Field.VIEWER_COUNTRY, frozenset(["--"]))))) == F.TRUE


def test_bad_values_are_refused() -> None:
    with pytest.raises(BadInput, match="NUL"):
        F.atom(F.Field.BLOG, "b\x00")
    with pytest.raises(BadInput, match="NUL"):
        F.atom(F.Field.COUNTRY, in_=["US", "\x00"])
    with pytest.raises(BadInput, match="characters"):
        F.atom(F.Field.AUTHOR, "x" * (F.MAX_VALUE_LEN + 1))
    with pytest.raises(BadInput, match="values"):
        F.atom(F.Field.BLOG, in_=[str(i) for i in range(F.MAX_VALUES + 1)])
    deep: F.Filter = F.TRUE
    for _ in range(F.MAX_NODES):
        deep = F.Not(deep)
    with pytest.raises(BadInput, match="too large"):
        F.check_size(deep)
    assert F.check_size(F.Not(F.TRUE)) == F.Not(F.TRUE)


def test_blog_level_counts_readers_without_a_country() -> None:
    """A filter that only a reader WITHOUT a country can satisfy (every ISO code excluded) still lets a blog count:
    the unknown reader is a class of its own, not covered by "any other code"."""
    every_code = [c for c in EVERY_READER if c is not None]
    only_unknown = F.Not(F.Atom(F.Field.VIEWER_COUNTRY, frozenset(every_code)))
    assert F.blog_level(only_unknown) == F.TRUE
    ke_blog_unknown_reader = F.blog_level(F.And((F.Atom(F.Field.COUNTRY, frozenset(["KE"])), only_unknown)))
    blog = {"blog": "b1", "author": "a1", "viewer_country": None}
    assert [F.evaluate(ke_blog_unknown_reader, **blog, country=c) for c in ("KE", "US", None)] == [True, False, False]


def test_canonical_is_the_same_for_equal_trees_and_differs_otherwise() -> None:
    """The cursor tag (api/types.py) names a filter by this text: equal sets in any order give one text."""
    a = F.And((F.Atom(F.Field.BLOG, frozenset(["b1", "b2", "b'3"])), F.Not(F.Atom(F.Field.COUNTRY, frozenset(["KE"])))))
    b = F.And((F.Atom(F.Field.BLOG, frozenset(["b'3", "b2", "b1"])), F.Not(F.Atom(F.Field.COUNTRY, frozenset(["KE"])))))
    assert F.canonical(a) == F.canonical(b)
    others = [F.Or(a.parts), F.And((a.parts[0],)), F.And((a.parts[0], F.Atom(F.Field.COUNTRY, frozenset(["KE"])))),
              F.And((F.Atom(F.Field.AUTHOR, frozenset(["b1", "b2", "b'3"])), a.parts[1])), F.TRUE, F.FALSE]
    texts = {F.canonical(x) for x in [a, *others]}
    assert len(texts) == 1 + len(others)
