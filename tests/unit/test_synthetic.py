"""Synthetic data: deterministic, inside its window, never before a blog exists, skewed and seasonal."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from analytics_gql.domain.calendar import DAY_US, HOUR_US
from analytics_gql.domain.records import COUNTRY_CODES
from analytics_gql.domain.synthetic import Synthetic

NOW = 1_750_000_000_000_000 + 13 * HOUR_US


def build(seed: int | None, n: int = 20_000, days: int = 56,  # type: ignore[type-arg]
          viewers: int | None = None) -> tuple[Synthetic, list, list]:
    gen = Synthetic(days=days, now_us=NOW, seed=seed)
    authors = gen.authors(20)
    blogs = gen.blogs(200, authors)
    ids = [1000 + i for i in range(len(blogs))]
    rows = [r for batch in gen.views(n, ids, [b.created_at for b in blogs], batch=7_000, viewers=viewers)
            for r in batch]
    return gen, blogs, rows


def test_same_seed_same_data() -> None:
    a, b = build(7), build(7)
    assert a[1] == b[1] and a[2] == b[2]
    assert build(8)[2] != a[2]


def test_rows_are_valid_and_in_window() -> None:
    gen, blogs, rows = build(1)
    assert len(rows) == 20_000
    created = {1000 + i: b.created_at for i, b in enumerate(blogs)}
    window_start = (NOW // DAY_US - 56 + 1) * DAY_US
    for event_id, blog_id, viewer, country, at in rows:
        assert event_id is None and (viewer is None or re.fullmatch(r"[ro][1-9]\d*", viewer))
        assert country is None or country in COUNTRY_CODES
        assert created[blog_id] <= at < NOW
        assert window_start <= at
    assert all(b.country is None or b.country in COUNTRY_CODES for b in blogs)
    assert len({b.external_id for b in blogs}) == 200


def test_popularity_is_skewed() -> None:
    _, _, rows = build(2)
    per_blog = sorted(Counter(r[1] for r in rows).values(), reverse=True)
    top_tenth = sum(per_blog[:20])
    assert top_tenth > 0.45 * len(rows)  # Zipf: the top 10% of blogs get about half the views
    assert per_blog[0] > 10 * per_blog[len(per_blog) // 2]


def test_daily_and_weekly_seasonality() -> None:
    _, _, rows = build(3, n=60_000)
    by_hour = Counter((r[4] // HOUR_US) % 24 for r in rows)
    assert by_hour[15] > 2.5 * by_hour[3]  # afternoon peak against the night trough
    by_weekday = Counter(((r[4] // DAY_US) + 3) % 7 for r in rows)  # 0 = Monday
    weekdays = sum(by_weekday[d] for d in range(5)) / 5
    weekends = (by_weekday[5] + by_weekday[6]) / 2
    assert weekends < 0.85 * weekdays


def test_country_mix_is_realistic() -> None:
    _, _, rows = build(4)
    mix = Counter(r[3] for r in rows)
    assert mix.most_common(1)[0][0] == "US"
    assert 0.03 < mix[None] / len(rows) < 0.08
    assert len(mix) > 60  # a long tail of countries, not five


def test_readers_come_back_to_the_blogs_they_like() -> None:
    """`viewers` distinct ids: one-time visitors seen once, returning readers with a home country and favourite
    blogs, a skewed activity, a few views without a viewerId (CONTRACT 2, `seed --viewers`)."""
    _, _, rows = build(3, n=60_000, viewers=5_000)
    by_viewer: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for _, blog, viewer, country, _ in rows:
        if viewer is not None:
            by_viewer[viewer].append((blog, country))
    no_viewer = sum(1 for r in rows if r[2] is None)
    assert 0.01 < no_viewer / len(rows) < 0.03
    one_time = {v: seen for v, seen in by_viewer.items() if v.startswith("o")}
    returning = {v: seen for v, seen in by_viewer.items() if v.startswith("r")}
    assert len(one_time) == 2_000 and all(len(seen) == 1 for seen in one_time.values())  # 40% of the ids, once
    assert 2_500 < len(returning) <= 3_000 and 4_500 < len(by_viewer) <= 5_000
    assert all(len({c for _, c in seen}) == 1 for seen in returning.values())  # a reader has one home country
    # Favourites: a returning reader's views land mostly on a few blogs (3 favourites, 85% of their views).
    heavy = [seen for seen in returning.values() if len(seen) >= 20]
    on_top3 = sum(sum(n for _, n in Counter(b for b, _ in seen).most_common(3)) for seen in heavy)
    assert heavy and on_top3 / sum(len(seen) for seen in heavy) > 0.8
    # Activity is skewed: the top tenth of returning readers bring well over a third of their views.
    counts = sorted((len(seen) for seen in returning.values()), reverse=True)
    assert sum(counts[: len(counts) // 10]) / sum(counts) > 0.35
