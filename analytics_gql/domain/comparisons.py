"""Comparison ranges (the previous period, the same range a year earlier) and the change against them."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from analytics_gql.domain import calendar as cal


class Comparison(enum.StrEnum):
    """Which range a result is compared with (CONTRACT 3, Comparisons)."""

    PREVIOUS_PERIOD = "PREVIOUS_PERIOD"
    PREVIOUS_YEAR = "PREVIOUS_YEAR"


@dataclass(frozen=True)
class ComparisonSpan:
    """The comparison range [start, end) a result was compared with, and its matching views."""

    start: int
    end: int
    total_views: int


def year_back(us: int, z: ZoneInfo) -> int:
    """The instant one calendar year before `us` as a local wall-clock time in `z` (Feb 29 becomes Feb 28),
    resolved like any local time (fold=0, as `datetime(..., tzinfo=z)` gives, CONTRACT 3)."""
    wall = cal.local(us, z).replace(tzinfo=None, fold=0)
    day = 28 if (wall.month, wall.day) == (2, 29) else wall.day
    moved = dt.datetime(wall.year - 1, wall.month, day, wall.hour, wall.minute, wall.second, wall.microsecond,
                        tzinfo=z)
    return cal.to_us(moved)


def comparison_range(kind: Comparison, start: int, end: int, z: ZoneInfo) -> tuple[int, int]:
    """The comparison range of [start, end): the period just before it, or both bounds a year back.

    A year back, two bounds within a DST repeat or a Feb 28/29 pair can meet or cross (e.g. [Feb 28, Feb 29) of a
    leap year gives [Feb 28, Feb 28)); the range is then empty at its start: [start', start').
    """
    if kind is Comparison.PREVIOUS_PERIOD:
        return start - (end - start), start
    s, e = year_back(start, z), year_back(end, z)
    return s, max(s, e)


def queried_window(start: int, end: int) -> tuple[int, int] | None:
    """The part of a comparison range that can hold data (no instant before cal.MIN_US is ever stored: counts
    there are zero, not an error), or None when it is empty."""
    a, b = max(start, cal.MIN_US), max(end, cal.MIN_US)
    return (a, b) if a < b else None
