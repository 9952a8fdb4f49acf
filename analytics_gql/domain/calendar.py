"""Instants as integer microseconds, grains, bucket keys and local periods in an IANA zone (DST-exact)."""

from __future__ import annotations

import datetime as dt
import enum
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from analytics_gql.errors import BadInput

US = 1_000_000
HOUR_US = 3600 * US
DAY_US = 86400 * US
UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
# Instants we accept: after the first local day of 1970 everywhere (keeps integer maths non-negative)
# and before 2200 (a typo guard for timestamps in the far future).
MIN_US = 2 * DAY_US
MAX_US = (dt.datetime(2200, 1, 1, tzinfo=UTC) - EPOCH) // dt.timedelta(microseconds=1)


class Grain(enum.StrEnum):
    """Rollup grains, finest first; hour buckets are UTC hours, the others local periods."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


GRAINS: tuple[Grain, ...] = tuple(Grain)


# The longest IANA name is 32 characters; longer text is refused before it reaches the file system.
MAX_ZONE_NAME = 64


def zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`, or BadInput naming it."""
    shown = name if len(name) <= MAX_ZONE_NAME else name[:MAX_ZONE_NAME] + "..."
    problem = BadInput(f"unknown time zone {shown!r}: use an IANA name such as 'Europe/London'")
    if len(name) > MAX_ZONE_NAME:
        raise problem
    try:
        return ZoneInfo(name)
    # OSError: a name that is a directory of the zone database ('Europe') or that the file system refuses.
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as e:
        raise problem from e


def to_us(t: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (t - EPOCH) // dt.timedelta(microseconds=1)


def from_us(us: int) -> dt.datetime:
    """The aware UTC datetime of an instant in microseconds."""
    return EPOCH + dt.timedelta(microseconds=us)


def local(us: int, z: ZoneInfo) -> dt.datetime:
    """The instant as a local datetime in zone `z`."""
    return from_us(us).astimezone(z)


def offset_us(us: int, z: ZoneInfo) -> int:
    """The UTC offset (microseconds) in force at instant `us` in zone `z`."""
    off = local(us, z).utcoffset()
    assert off is not None
    return off // dt.timedelta(microseconds=1)


def day_number(d: dt.date) -> int:
    """Days since 1970-01-01 of a calendar date."""
    return d.toordinal() - EPOCH_ORDINAL


def date_of(n: int) -> dt.date:
    """The calendar date of a day number."""
    return dt.date.fromordinal(n + EPOCH_ORDINAL)


def midnight_us(d: dt.date, z: ZoneInfo) -> int:
    """S(D): the first instant of local date D (PEP 495 fold=0, so a skipped midnight gives D's first instant)."""
    return to_us(dt.datetime(d.year, d.month, d.day, tzinfo=z))


def month_key(d: dt.date) -> int:
    """The month bucket key of a date: year * 12 + month - 1."""
    return d.year * 12 + d.month - 1


def month_first(key: int) -> dt.date:
    """The first day of the month with bucket key `key`."""
    return dt.date(key // 12, key % 12 + 1, 1)


def period_date(us: int, z: ZoneInfo) -> dt.date:
    """The local date D whose period [S(D), S(D+1)) holds instant `us` (CONTRACT 3).

    Usually the wall-clock date, but not in the repeated span of a fall-back across midnight (St_Johns and
    Moncton changed at 00:01 until 2011: after the first 00:00 of D the clock shows D-1 again, yet S(D), the
    fold=0 midnight, has passed), nor in a gap that swallows midnight (S(D) lies after the gap's start).
    """
    d = local(us, z).date()
    n = day_number(d)
    while True:
        lo, hi = bucket_interval(Grain.DAY, n, z)
        if us < lo:
            n -= 1
        elif us >= hi:
            n += 1
        else:
            return d if n == day_number(d) else date_of(n)


def bucket_key(grain: Grain, us: int, z: ZoneInfo) -> int:
    """The rollup bucket key holding instant `us` (hour: UTC hour number; day/week: day number; month; year)."""
    if grain is Grain.HOUR:
        return us // HOUR_US
    d = period_date(us, z)
    if grain is Grain.DAY:
        return day_number(d)
    if grain is Grain.WEEK:
        return day_number(d) - d.weekday()
    if grain is Grain.MONTH:
        return month_key(d)
    return d.year


@lru_cache(maxsize=65536)
def bucket_interval(grain: Grain, key: int, z: ZoneInfo) -> tuple[int, int]:
    """The half-open instant interval [start, end) of a rollup bucket."""
    if grain is Grain.HOUR:
        return key * HOUR_US, (key + 1) * HOUR_US
    if grain is Grain.DAY:
        return midnight_us(date_of(key), z), midnight_us(date_of(key + 1), z)
    if grain is Grain.WEEK:
        return midnight_us(date_of(key), z), midnight_us(date_of(key + 7), z)
    if grain is Grain.MONTH:
        return midnight_us(month_first(key), z), midnight_us(month_first(key + 1), z)
    return midnight_us(dt.date(key, 1, 1), z), midnight_us(dt.date(key + 1, 1, 1), z)


@lru_cache(maxsize=4096)
def _transitions_in_year(zone_name: str, year: int) -> tuple[tuple[int, int], ...]:
    """Offset changes (instant, new offset) in one UTC year, found by daily probes and bisection to 1 us."""
    z = ZoneInfo(zone_name)
    lo = to_us(dt.datetime(year, 1, 1, tzinfo=UTC))
    hi = to_us(dt.datetime(year + 1, 1, 1, tzinfo=UTC))
    out = []
    prev_t, prev_off = lo, offset_us(lo, z)
    t = lo
    while t < hi:
        t = min(t + DAY_US // 4, hi)
        off = offset_us(t, z)
        if off != prev_off:
            a, b = prev_t, t  # offset(a) == prev_off, offset(b) != prev_off
            while b - a > 1:
                m = (a + b) // 2
                if offset_us(m, z) == prev_off:
                    a = m
                else:
                    b = m
            out.append((b, off))
            prev_off = off
        prev_t = t
    return tuple(out)


def offset_segments(z: ZoneInfo, lo_us: int, hi_us: int) -> list[tuple[int, int]]:
    """Sorted (from_instant, offset) segments covering [lo_us, hi_us); the first starts at lo_us."""
    name = str(z.key)
    segs = [(lo_us, offset_us(lo_us, z))]
    y0, y1 = from_us(lo_us).year, from_us(max(lo_us, hi_us - 1)).year
    for y in range(y0, y1 + 1):
        for t, off in _transitions_in_year(name, y):
            if lo_us < t < hi_us and off != segs[-1][1]:
                segs.append((t, off))
    return segs


def day_offset_segments(z: ZoneInfo, lo_us: int, hi_us: int) -> list[tuple[int, int]]:
    """Sorted (from_instant, offset) segments covering [lo_us, hi_us) such that (t + offset) // DAY_US is the day
    number of `period_date(t)`: the UTC offsets, except where a change moves the wall clock across midnight.

    A fall-back across midnight keeps the old offset until the wall clock shows D's midnight again (the repeated
    span belongs to D); a gap that swallows midnight keeps the old offset until S(D), the fold=0 midnight.
    """
    segs = offset_segments(z, lo_us - DAY_US, hi_us)  # from a day earlier: lo_us may lie in a kept-old span
    out = [segs[0]]
    for t, new in segs[1:]:
        old = out[-1][1]
        before, after = (t - 1 + old) // DAY_US, (t + new) // DAY_US
        start = t
        if after < before:  # the clock went back across midnight: D = before until the clock shows D again
            start = before * DAY_US - new
        elif after > before and t + new > after * DAY_US:  # midnight of `after` skipped: S = old midnight
            start = after * DAY_US - old
        out.append((start, new))
    first = max(i for i, (t, _) in enumerate(out) if t <= lo_us)
    return [(lo_us, out[first][1])] + [(t, off) for t, off in out[first + 1:] if t < hi_us]


class Granularity(enum.StrEnum):
    """Period lengths a client may ask for; AUTO picks one from the range length."""

    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    YEAR = "YEAR"
    AUTO = "AUTO"


def resolve_auto(g: Granularity, start_us: int, end_us: int) -> Granularity:
    """CONTRACT 3: d <= 2 -> HOUR, <= 7 -> DAY, <= 31 -> WEEK, <= 366 -> MONTH, else YEAR (d fractional days)."""
    if g is not Granularity.AUTO:
        return g
    d = (end_us - start_us) / DAY_US
    for limit, out in ((2, Granularity.HOUR), (7, Granularity.DAY), (31, Granularity.WEEK), (366, Granularity.MONTH)):
        if d <= limit:
            return out
    return Granularity.YEAR


@dataclass(frozen=True, slots=True)
class Period:
    """One reporting period: [start, end) in instants, with its label in the query's zone."""

    start: int
    end: int
    label: str


def _hour_period(us: int, z: ZoneInfo) -> Period:
    """The local wall-clock hour (at the offset in force) holding `us`, clipped to offset changes."""
    lt = local(us, z)
    start = us - ((lt.minute * 60 + lt.second) * US + lt.microsecond)
    off = offset_us(us, z)
    segs = offset_segments(z, start, start + HOUR_US + 1)
    # Clip at offset changes inside the nominal hour so periods never overlap.
    for t, _ in segs[1:]:
        if t <= us:
            start = t
    end = start - ((local(start, z).minute * 60 + local(start, z).second) * US + local(start, z).microsecond) \
        + HOUR_US
    for t, o in offset_segments(z, us, end):
        if t > us and o != off:
            end = t
            break
    return Period(start, end, local(start, z).strftime("%Y-%m-%dT%H:00"))


def _date_period(g: Granularity, d: dt.date, z: ZoneInfo) -> Period:
    """The DAY/WEEK/MONTH/YEAR period of local date `d`."""
    if g is Granularity.DAY:
        return Period(midnight_us(d, z), midnight_us(d + dt.timedelta(days=1), z), d.isoformat())
    if g is Granularity.WEEK:
        monday = d - dt.timedelta(days=d.weekday())
        iso = monday.isocalendar()
        return Period(midnight_us(monday, z), midnight_us(monday + dt.timedelta(days=7), z),
                      f"{iso.year}-W{iso.week:02d}")
    if g is Granularity.MONTH:
        first = d.replace(day=1)
        nxt = month_first(month_key(first) + 1)
        return Period(midnight_us(first, z), midnight_us(nxt, z), first.strftime("%Y-%m"))
    first = dt.date(d.year, 1, 1)
    return Period(midnight_us(first, z), midnight_us(dt.date(d.year + 1, 1, 1), z), str(d.year))


def period_at(g: Granularity, us: int, z: ZoneInfo) -> Period:
    """The period of granularity `g` (not AUTO) that holds instant `us`."""
    if g is Granularity.HOUR:
        return _hour_period(us, z)
    p = _date_period(g, local(us, z).date(), z)
    if p.start <= us < p.end:
        return p
    # Periods partition time, so only an instant whose wall-clock date is not its period's date gets here
    # (a clock change across midnight: see period_date).
    return _date_period(g, period_date(us, z), z)


_APPROX_US = {
    Granularity.HOUR: HOUR_US,
    Granularity.DAY: DAY_US,
    Granularity.WEEK: 7 * DAY_US,
    Granularity.MONTH: 28 * DAY_US,
    Granularity.YEAR: 365 * DAY_US,
}


def periods(g: Granularity, start_us: int, end_us: int, z: ZoneInfo, *, limit: int = 10_000) -> list[Period]:
    """Every period of granularity `g` that intersects [start_us, end_us), in order; BadInput past `limit`."""
    from analytics_gql.errors import TooManyPoints

    # A cheap upper bound first, so 100 years of hours is refused without building them.
    if (end_us - start_us) // _APPROX_US[g] > limit + 2:
        raise TooManyPoints(f"this range has more than {limit} {g.value.lower()} periods; the limit is {limit} "
                            "points: narrow the range or use a coarser granularity")
    if g is Granularity.HOUR:
        hours = _hour_periods(start_us, end_us, z)
        if len(hours) > limit:
            raise TooManyPoints(f"this range has {len(hours)} hour periods; the limit is {limit} points: narrow "
                                "the range or use a coarser granularity")
        return hours
    out: list[Period] = []
    t = start_us
    while t < end_us:
        p = period_at(g, t, z)
        out.append(p)
        if len(out) > limit:
            raise TooManyPoints(f"this range has more than {limit} {g.value.lower()} periods; the limit is "
                                f"{limit} points: narrow the range or use a coarser granularity")
        t = p.end
    return out


def _hour_periods(start_us: int, end_us: int, z: ZoneInfo) -> list[Period]:
    """HOUR periods meeting [start_us, end_us): per constant-offset segment, the instants where the local wall
    clock shows :00, clipped at offset changes (the same periods as period_at, without a zone lookup per hour)."""
    segs = offset_segments(z, start_us - HOUR_US, end_us)
    out: list[Period] = []
    for i, (s0, off) in enumerate(segs):
        s1 = segs[i + 1][0] if i + 1 < len(segs) else end_us
        t = s0 - ((s0 + off) % HOUR_US)
        while t < s1:
            ps, pe = max(t, s0), min(t + HOUR_US, s1) if i + 1 < len(segs) else t + HOUR_US
            if pe > start_us and ps < end_us:
                out.append(Period(ps, pe, from_us(ps + off).strftime("%Y-%m-%dT%H:00")))
            t += HOUR_US
    return out


def previous_window(p: Period, a: int, b: int, g: Granularity, z: ZoneInfo) -> tuple[int, int]:
    """CONTRACT 3 growth: the window [p' + (a - p), min(p' + (b - p), p)) of the period before `p`."""
    prev = period_at(g, p.start - 1, z)
    lo = prev.start + (a - p.start)
    hi = min(prev.start + (b - p.start), p.start)
    return lo, max(lo, hi)


def find_index(sorted_starts: list[int], us: int) -> int:
    """Index of the last start <= us (helper for mapping instants to periods in tests and planners)."""
    return bisect_right(sorted_starts, us) - 1
