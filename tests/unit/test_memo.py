"""domain/memo.IdentityMemo: found again only for the very same source object and an equal key."""

from __future__ import annotations

from analytics_gql.domain.memo import IdentityMemo


def test_hit_only_for_the_same_object_and_an_equal_key() -> None:
    memo: IdentityMemo[str] = IdentityMemo(4)
    page = [(0, "KE", "Kenya", 3, 1)]
    assert memo.get(page, "k") is None
    assert memo.put(page, "built", "k") == "built"
    assert memo.get(page, "k") == "built"
    assert memo.get(page, "other key") is None
    assert memo.get(list(page), "k") is None  # equal content, another object: not the same page
    memo.put(page, "rebuilt", "other key")  # one entry per source: the newest key wins
    assert memo.get(page, "k") is None and memo.get(page, "other key") == "rebuilt"


def test_bounded_and_holds_its_sources() -> None:
    memo: IdentityMemo[int] = IdentityMemo(3)
    sources = [[i] for i in range(3)]
    for i, s in enumerate(sources):
        memo.put(s, i)
    assert [memo.get(s) for s in sources] == [0, 1, 2]
    extra = [99]
    memo.put(extra, 99)  # full: everything before is dropped
    assert [memo.get(s) for s in sources] == [None, None, None] and memo.get(extra) == 99
