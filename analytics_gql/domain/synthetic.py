"""Realistic synthetic data: Zipf-skewed blog popularity, daily and weekly seasonality, a real-world country mix."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence

from analytics_gql.domain.calendar import DAY_US, HOUR_US, MIN_US
from analytics_gql.domain.records import COUNTRY_CODES, AuthorRecord, BlogRecord

# (code, share %) of readers; None = no country known. The remaining share is spread over every other country.
COUNTRY_MIX: tuple[tuple[str | None, float], ...] = (
    ("US", 27.0), ("IN", 9.0), ("GB", 6.0), ("DE", 5.0), ("CA", 4.0), ("FR", 3.5), ("BR", 3.5), ("AU", 2.5),
    ("JP", 2.5), ("NL", 2.0), ("ES", 2.0), ("IT", 2.0), ("MX", 1.5), ("ID", 1.5), ("PL", 1.5), ("NG", 1.2),
    ("PH", 1.2), ("SE", 1.2), ("ZA", 1.0), ("TR", 1.0), ("KR", 1.0), ("KE", 0.8), ("UA", 0.8), ("AR", 0.8),
    ("ET", 0.5), (None, 5.0),
)
OTHER_COUNTRIES_SHARE = 7.0
# Readers by weekday, Monday first: weekends are quieter on a blog platform.
WEEKDAY_FACTOR = (1.0, 1.05, 1.05, 1.0, 0.95, 0.7, 0.65)
ZIPF_S = 1.07
SHARE_CREATED_BEFORE = 0.7  # of blogs that already exist when the window opens
Row = tuple[str | None, int, str | None, str | None, int]

_FIRST = ("Abebe", "Amara", "Chen", "Diego", "Elif", "Fatima", "Hana", "Ivan", "Jonas", "Kwame", "Lena", "Mei",
          "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tomas", "Yuki")
_LAST = ("Bekele", "Okafor", "Wang", "Garcia", "Yilmaz", "Khan", "Sato", "Petrov", "Berg", "Mensah", "Novak",
         "Lin", "Adeyemi", "Haddad", "Sharma", "Byrne", "Costa", "Larsen", "Silva", "Tanaka")
_TOPIC = ("Python", "Gardening", "Travel", "Coffee", "Startups", "Cycling", "Jazz", "Baking", "Databases",
          "Photography", "Climbing", "Chess", "Rust", "Design", "Parenting", "Football", "Poetry", "Cloud")
_KIND = ("Notes", "Diaries", "Weekly", "Field Guide", "Journal", "Letters", "Lab", "Corner", "Digest")


def _country_table() -> tuple[list[str | None], list[float]]:
    """Country choices and their cumulative weights, for random.choices(cum_weights=...)."""
    named = {c for c, _ in COUNTRY_MIX if c}
    others = sorted(COUNTRY_CODES - named)
    codes: list[str | None] = [c for c, _ in COUNTRY_MIX] + list(others)
    weights = [w for _, w in COUNTRY_MIX] + [OTHER_COUNTRIES_SHARE / len(others)] * len(others)
    return codes, list(itertools.accumulate(weights))


class Synthetic:
    """A deterministic (given `seed`) generator of authors, blogs and views over `days` days up to `now_us`."""

    def __init__(self, *, days: int, now_us: int, seed: int | None = None) -> None:
        if days < 1:
            raise ValueError("days must be at least 1")
        self.rng = random.Random(seed)
        self.now_us = now_us
        self.first_day = now_us // DAY_US - days + 1  # UTC day numbers; today (partial) is the last
        self.days = days
        self.start_us = max(self.first_day * DAY_US, MIN_US)
        self.countries, self.country_cum = _country_table()

    def authors(self, n: int) -> list[AuthorRecord]:
        """`n` authors with ids seed-a1.., plausible names and the readers' country mix (some unknown)."""
        rng = self.rng
        picks = rng.choices(self.countries, cum_weights=self.country_cum, k=n)
        return [
            AuthorRecord(f"seed-a{i + 1}", f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", picks[i]) for i in range(n)
        ]

    def blogs(self, n: int, authors: Sequence[AuthorRecord]) -> list[BlogRecord]:
        """`n` blogs spread over the authors; most exist before the window, the rest appear during it."""
        if not authors and n:
            raise ValueError("blogs need at least one author")
        rng = self.rng
        span = self.now_us - self.start_us
        out = []
        for i in range(n):
            author = authors[int(len(authors) * rng.random() ** 2)]  # a few prolific authors
            if rng.random() < SHARE_CREATED_BEFORE:
                created = self.start_us - 1 - int(rng.random() * 2 * span)
            else:
                created = self.start_us + int(rng.random() * span)
            created = max(created, MIN_US)
            title = f"{rng.choice(_TOPIC)} {rng.choice(_KIND)} #{i + 1}"
            out.append(BlogRecord(f"seed-b{i + 1}", title, author.external_id, author.country, created))
        return out

    def views(
        self, n: int, blog_ids: Sequence[int], blog_created: Sequence[int], *, batch: int = 100_000
    ) -> Iterator[list[Row]]:
        """Batches of view rows (event_id None, blog_id, viewer_id, viewer_country, viewed_at), `n` in all.

        `blog_ids[i]` is the stored id of the blog created at `blog_created[i]`; a view never precedes its blog.
        """
        if not blog_ids:
            if n:
                raise ValueError("views need at least one blog")
            return
        rng = self.rng
        nb = len(blog_ids)
        order = list(range(nb))
        rng.shuffle(order)  # popularity rank is independent of creation order
        blog_w = [0.0] * nb
        for rank, b in enumerate(order):
            blog_w[b] = 1.0 / (rank + 1) ** ZIPF_S
        blog_cum = list(itertools.accumulate(blog_w))
        day_w = []
        for i in range(self.days):
            day = self.first_day + i
            growth = 1.0 + 0.5 * i / self.days
            day_w.append(WEEKDAY_FACTOR[(day + 3) % 7] * growth * rng.uniform(0.85, 1.15))  # day 0 was a Thursday
        day_cum = list(itertools.accumulate(day_w))
        # UTC hour of day: readers peak in the European afternoon / American morning, trough at night.
        hour_cum = list(itertools.accumulate(1.0 + 0.6 * math.cos(2 * math.pi * (h - 15) / 24) for h in range(24)))
        pool = [f"v{k}" for k in range(max(1_000, n // 4))]
        day_offsets = [(self.first_day + i) * DAY_US for i in range(self.days)]
        hour_offsets = [h * HOUR_US for h in range(24)]
        created = list(blog_created)
        ids = list(blog_ids)
        now, lo, last_day = self.now_us, self.start_us, self.first_day + self.days - 1
        done = 0
        while done < n:
            k = min(batch, n - done)
            days = rng.choices(day_offsets, cum_weights=day_cum, k=k)
            hours = rng.choices(hour_offsets, cum_weights=hour_cum, k=k)
            blogs = rng.choices(range(nb), cum_weights=blog_cum, k=k)
            countries = rng.choices(self.countries, cum_weights=self.country_cum, k=k)
            viewers = rng.choices(pool, k=k)
            rand = rng.random
            rows: list[Row] = []
            append = rows.append
            for d, h, b, c, v in zip(days, hours, blogs, countries, viewers, strict=True):
                t = d + h + int(rand() * HOUR_US)
                if t >= now:
                    t = t - DAY_US if t - DAY_US >= lo else lo + (t - lo) % max(1, now - lo)
                cb = created[b]
                if t < cb:
                    # Redraw the day after the blog's creation, keeping the time of day (daily seasonality).
                    t = rng.randint(cb // DAY_US, last_day) * DAY_US + t % DAY_US
                    if t < cb or t >= now:
                        t = cb + int(rand() * (now - cb))
                append((None, ids[b], v, c, t))
            done += k
            yield rows
