"""Realistic synthetic data: Zipf-skewed blog popularity, daily and weekly seasonality, a real-world country mix,
and a population of readers who come back to the blogs they like (`Readers`)."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from array import array
from collections.abc import Callable, Iterator, Sequence

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
# Readers (CONTRACT 2, `seed --viewers N`): N distinct viewer ids in all. Most views come from returning readers
# (lognormal activity: a few read daily, most now and then), each with a few favourite blogs; a share of the ids are
# one-time visitors (search and social traffic), each seen once.
ONE_TIME_IDS = 0.4  # of the N ids, used by one view each
ONE_TIME_SHARE = 0.15  # of views at most, from one-time visitors (while their ids last)
FAVOURITE_SHARE = 0.85  # of a returning reader's views, on one of their favourite blogs (else any, by popularity)
FAVOURITES = 3  # favourite blogs per returning reader, drawn by popularity
ACTIVITY_SIGMA = 1.5  # lognormal spread of how often returning readers come back
NO_VIEWER_SHARE = 0.02  # of views, sent without a viewerId (counted in views, never in readers)


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


class Readers:
    """`n` viewer ids: returning readers `r1`.. (a home country, an activity weight, FAVOURITES favourite blogs) and
    one-time visitors `o1`.. (each used once). Deterministic given `rng`; arrays, so 1,000,000 readers take ~30 MB.
    """

    def __init__(self, n: int, views: int, popular: Callable[[int], list[int]],
                 countries: Sequence[str | None], country_cum: Sequence[float], rng: random.Random) -> None:
        self.rng, self.popular, self.countries, self.country_cum = rng, popular, countries, country_cum
        self.one_time_ids = int(n * ONE_TIME_IDS) if n > 1 else 0
        self.returning = max(1, n - self.one_time_ids)
        self.one_time_share = min(ONE_TIME_SHARE, self.one_time_ids / max(1, views))
        self.one_time_used = 0
        self.activity_cum = list(itertools.accumulate(rng.lognormvariate(0.0, ACTIVITY_SIGMA)
                                                      for _ in range(self.returning)))
        self.home = array("H", rng.choices(range(len(countries)), cum_weights=country_cum, k=self.returning))
        self.favourites = array("i", popular(self.returning * FAVOURITES))

    def pick(self, k: int) -> list[tuple[str | None, int, str | None]]:
        """`k` views' (viewer id or None, blog index, viewer country)."""
        rng, rand = self.rng, self.rng.random
        blogs = self.popular(k)
        visitors = rng.choices(self.countries, cum_weights=self.country_cum, k=k)
        total, last = self.activity_cum[-1], self.returning - 1
        out: list[tuple[str | None, int, str | None]] = []
        for i in range(k):
            r = rand()
            if r < self.one_time_share and self.one_time_used < self.one_time_ids:
                self.one_time_used += 1
                out.append((f"o{self.one_time_used}", blogs[i], visitors[i]))
                continue
            reader = min(bisect.bisect_left(self.activity_cum, rand() * total), last)
            blog = self.favourites[reader * FAVOURITES + int(rand() * FAVOURITES)] if rand() < FAVOURITE_SHARE \
                else blogs[i]
            viewer = None if r >= 1.0 - NO_VIEWER_SHARE else f"r{reader + 1}"
            out.append((viewer, blog, self.countries[self.home[reader]]))
        return out


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
        self, n: int, blog_ids: Sequence[int], blog_created: Sequence[int], *, batch: int = 100_000,
        viewers: int | None = None,
    ) -> Iterator[list[Row]]:
        """Batches of view rows (event_id None, blog_id, viewer_id, viewer_country, viewed_at), `n` in all.

        `blog_ids[i]` is the stored id of the blog created at `blog_created[i]`; a view never precedes its blog.
        `viewers`: distinct viewer ids to draw from (`Readers`; default one per 10 views, at least 1,000).
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
        readers = Readers(viewers if viewers is not None else max(1_000, n // 10), n,
                          lambda k: rng.choices(range(nb), cum_weights=blog_cum, k=k), self.countries,
                          self.country_cum, rng)
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
            picks = readers.pick(k)
            rand = rng.random
            rows: list[Row] = []
            append = rows.append
            for d, h, (v, b, c) in zip(days, hours, picks, strict=True):
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
