"""domain/comparisons.py: comparison ranges in a DST zone and across Feb 29, written out as instants."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from analytics_gql.domain import calendar as cal
from analytics_gql.domain.comparisons import Comparison, comparison_range, queried_window, year_back
from analytics_gql.domain.queries import GroupRow

NY = ZoneInfo("America/New_York")


def at(*a: int, fold: int = 0, z: ZoneInfo = NY) -> int:
    return cal.to_us(dt.datetime(*a, tzinfo=z, fold=fold))  # type: ignore[misc]


def utc(*a: int) -> int:
    return cal.to_us(dt.datetime(*a, tzinfo=dt.UTC))  # type: ignore[misc]


def test_previous_period_is_the_same_length_just_before() -> None:
    assert comparison_range(Comparison.PREVIOUS_PERIOD, at(2024, 3, 10), at(2024, 3, 11), NY) == (
        utc(2024, 3, 9, 6), utc(2024, 3, 10, 5))  # a 23-hour day: the 23 hours before it


def test_previous_year_moves_wall_clock_times() -> None:
    # EDT in 2024-07, EDT in 2023-07: the same wall times, a year of 365 days apart (2024 is a leap year ahead).
    assert comparison_range(Comparison.PREVIOUS_YEAR, at(2024, 7, 1, 9), at(2024, 7, 2), NY) == (
        utc(2023, 7, 1, 13), utc(2023, 7, 2, 4))
    # 2024-03-10 02:30 does not exist; 2023-03-10 is a plain EST day.
    assert year_back(at(2024, 3, 10, 3, 30), NY) == utc(2023, 3, 10, 8, 30)


def test_feb_29_becomes_feb_28() -> None:
    assert year_back(at(2024, 2, 29, 12), NY) == utc(2023, 2, 28, 17)
    assert comparison_range(Comparison.PREVIOUS_YEAR, at(2024, 2, 29), at(2024, 3, 1), NY) == (
        utc(2023, 2, 28, 5), utc(2023, 3, 1, 5))
    # [Feb 28, Feb 29) meets itself a year back: empty at its start.
    assert comparison_range(Comparison.PREVIOUS_YEAR, at(2024, 2, 28), at(2024, 2, 29), NY) == (
        utc(2023, 2, 28, 5), utc(2023, 2, 28, 5))


def test_skipped_and_repeated_wall_times_resolve_with_fold_0() -> None:
    # 2025-03-09 02:30 is skipped in New York: fold=0 reads it at the offset before the gap (EST).
    assert year_back(at(2026, 3, 9, 2, 30), NY) == utc(2025, 3, 9, 7, 30)
    # 2026-11-01 01:30 happens twice: the second one (fold=1, EST) moves to the only 01:30 of 2025-11-01 (EDT).
    assert year_back(at(2026, 11, 1, 1, 30, fold=1), NY) == utc(2025, 11, 1, 5, 30)
    # Wall times that repeat in 2024 but not in 2023: start and end cross, so the range is empty.
    s, e = at(2024, 11, 3, 1, 45), at(2024, 11, 3, 1, 15, fold=1)
    assert s < e
    assert comparison_range(Comparison.PREVIOUS_YEAR, s, e, NY) == (utc(2023, 11, 3, 5, 45),) * 2


def test_queried_window_starts_with_the_data() -> None:
    assert queried_window(-10, cal.MIN_US + 5) == (cal.MIN_US, cal.MIN_US + 5)
    assert queried_window(-10, cal.MIN_US) is None
    assert queried_window(cal.MIN_US + 1, cal.MIN_US + 1) is None


def test_change_rounds_like_growth_and_is_null_without_previous_views() -> None:
    row = GroupRow("b", "B", None, None, 1, 2, 3)
    assert row.change == -33.33
    assert GroupRow("b", "B", None, None, 1, 2, 0).change is None
    assert GroupRow("b", "B", None, None, 1, 2).change is None
    assert GroupRow("b", "B", None, None, 1, 99_999, 100_000).change == 0.0
