"""domain/calendar: periods cover ranges contiguously, DST days, labels (2020-W53), skipped midnights, AUTO."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics_gql.domain import calendar as cal
from analytics_gql.domain.calendar import DAY_US, HOUR_US, Grain, Granularity
from analytics_gql.errors import BadInput, TooManyPoints

ZONES = ["UTC", "America/Santiago", "Asia/Kolkata", "Europe/London", "America/New_York", "Australia/Lord_Howe",
         "Asia/Kathmandu", "Pacific/Chatham"]
LO = cal.to_us(dt.datetime(2019, 1, 1, tzinfo=dt.UTC))
HI = cal.to_us(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
SPAN = {Granularity.HOUR: 5 * DAY_US, Granularity.DAY: 90 * DAY_US, Granularity.WEEK: 400 * DAY_US,
        Granularity.MONTH: 3 * 365 * DAY_US, Granularity.YEAR: 6 * 365 * DAY_US}


def us(y: int, mo: int, d: int, h: int = 0, mi: int = 0, *, tz: str = "UTC") -> int:
    return cal.to_us(dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)))


def midnight(d: dt.date, tz: str) -> int:
    """S(D) exactly as CONTRACT 3 writes it."""
    return cal.to_us(dt.datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz)))


@st.composite
def ranges(draw: st.DrawFn) -> tuple[Granularity, str, int, int]:
    g = draw(st.sampled_from([Granularity.HOUR, Granularity.DAY, Granularity.WEEK, Granularity.MONTH,
                              Granularity.YEAR]))
    z = draw(st.sampled_from(ZONES))
    start = draw(st.integers(LO, HI))
    return g, z, start, start + draw(st.integers(1, SPAN[g]))


@given(ranges())
def test_periods_cover_the_range_contiguously(r: tuple[Granularity, str, int, int]) -> None:
    g, name, start, end = r
    z = ZoneInfo(name)
    ps = cal.periods(g, start, end, z)
    assert ps[0].start <= start < ps[0].end
    assert ps[-1].start < end <= ps[-1].end
    for p, q in zip(ps, ps[1:], strict=False):
        assert p.end == q.start
    for p in ps:
        assert p.start < p.end
        assert cal.period_at(g, p.start, z) == p
        assert cal.period_at(g, p.end - 1, z) == p
        local = cal.local(p.start, z)
        if g is Granularity.HOUR:
            # A local wall-clock hour, or its part after an offset change; never longer than an hour.
            assert p.end - p.start <= HOUR_US
            whole = (local.minute, local.second, local.microsecond) == (0, 0, 0)
            assert whole or cal.offset_us(p.start, z) != cal.offset_us(p.start - 1, z)
            assert p.label == local.strftime("%Y-%m-%dT%H:00")
            continue
        # Every coarser period is [S(D), S(D')) for its first local date D.
        d = local.date()
        assert p.start == midnight(d, name)
        if g is Granularity.DAY:
            assert p.label == d.isoformat() and p.end == midnight(d + dt.timedelta(days=1), name)
        elif g is Granularity.WEEK:
            assert d.weekday() == 0 and p.end == midnight(d + dt.timedelta(days=7), name)
            assert p.label == f"{d.isocalendar().year}-W{d.isocalendar().week:02d}"
        elif g is Granularity.MONTH:
            assert d.day == 1 and p.label == d.strftime("%Y-%m")
        else:
            assert (d.month, d.day) == (1, 1) and p.label == str(d.year)


@pytest.mark.parametrize(("zone", "day", "hours"), [
    ("America/New_York", dt.date(2024, 3, 10), 23),
    ("America/New_York", dt.date(2024, 11, 3), 25),
    ("Europe/London", dt.date(2024, 3, 31), 23),
    ("Europe/London", dt.date(2024, 10, 27), 25),
    ("America/Santiago", dt.date(2024, 9, 8), 23),   # the skipped midnight
    ("America/Santiago", dt.date(2024, 4, 6), 25),   # 24:00 becomes 23:00 again
    ("Australia/Lord_Howe", dt.date(2024, 4, 7), 24.5),
    ("Australia/Lord_Howe", dt.date(2024, 10, 6), 23.5),
    ("Asia/Kolkata", dt.date(2024, 3, 10), 24),
])
def test_dst_days(zone: str, day: dt.date, hours: float) -> None:
    z = ZoneInfo(zone)
    p = cal.period_at(Granularity.DAY, midnight(day, zone) + HOUR_US * 3, z)
    assert p.label == day.isoformat()
    assert p.end - p.start == int(hours * HOUR_US)
    assert cal.bucket_interval(Grain.DAY, cal.day_number(day), z) == (p.start, p.end)


def test_skipped_midnight_resolves_to_the_first_instant_of_the_day() -> None:
    """America/Santiago 2024-09-08: 00:00 does not exist (clocks go 23:59:59 -> 01:00); the day starts then."""
    z = ZoneInfo("America/Santiago")
    first = us(2024, 9, 8, 4)  # 04:00 UTC = 00:00 at -04 = 01:00 at -03
    assert cal.midnight_us(dt.date(2024, 9, 8), z) == first
    p = cal.period_at(Granularity.DAY, first, z)
    assert (p.start, p.label) == (first, "2024-09-08")
    assert cal.period_at(Granularity.DAY, first - 1, z).label == "2024-09-07"
    assert cal.local(first, z).strftime("%H:%M %z") == "01:00 -0300"
    week = cal.period_at(Granularity.WEEK, first, z)  # 2024-09-08 is a Sunday: its week started on the 2nd
    assert week.label == "2024-W36" and week.end == first + 20 * HOUR_US + 3 * HOUR_US
    hours = cal.periods(Granularity.HOUR, first - HOUR_US, first + HOUR_US, z)
    assert [h.label for h in hours] == ["2024-09-07T23:00", "2024-09-08T01:00"]


@pytest.mark.parametrize(("day", "label"), [
    (dt.date(2020, 12, 28), "2020-W53"), (dt.date(2021, 1, 3), "2020-W53"), (dt.date(2021, 1, 4), "2021-W01"),
    (dt.date(2024, 12, 30), "2025-W01"), (dt.date(2026, 12, 31), "2026-W53"), (dt.date(2024, 2, 29), "2024-W09"),
])
def test_week_labels(day: dt.date, label: str) -> None:
    for zone in ("UTC", "Pacific/Chatham"):
        p = cal.period_at(Granularity.WEEK, midnight(day, zone), ZoneInfo(zone))
        assert p.label == label


def test_labels() -> None:
    t = us(2025, 3, 1, 14, 59, tz="Europe/London") + 59_999_999
    z = ZoneInfo("Europe/London")
    assert [cal.period_at(g, t, z).label for g in (Granularity.HOUR, Granularity.DAY, Granularity.WEEK,
                                                   Granularity.MONTH, Granularity.YEAR)] == [
        "2025-03-01T14:00", "2025-03-01", "2025-W09", "2025-03", "2025"]
    feb29 = us(2024, 2, 29, 23, 59, tz="Asia/Kolkata") + 59_999_999
    k = ZoneInfo("Asia/Kolkata")
    assert cal.period_at(Granularity.DAY, feb29, k).label == "2024-02-29"
    assert cal.period_at(Granularity.DAY, feb29 + 1, k).label == "2024-03-01"
    assert cal.period_at(Granularity.MONTH, feb29, k).end == feb29 + 1


def test_half_hour_zone_hours_start_at_half_past_utc() -> None:
    z = ZoneInfo("Asia/Kolkata")
    ps = cal.periods(Granularity.HOUR, us(2024, 1, 1), us(2024, 1, 1, 3), z)
    assert [(cal.from_us(p.start).strftime("%H:%M"), p.label) for p in ps] == [
        ("23:30", "2024-01-01T05:00"), ("00:30", "2024-01-01T06:00"), ("01:30", "2024-01-01T07:00"),
        ("02:30", "2024-01-01T08:00")]


def test_repeated_hour_is_two_periods_with_the_same_label() -> None:
    z = ZoneInfo("America/New_York")
    ps = cal.periods(Granularity.HOUR, us(2024, 11, 3, 4), us(2024, 11, 3, 8), z)
    assert [p.label for p in ps] == ["2024-11-03T00:00", "2024-11-03T01:00", "2024-11-03T01:00",
                                     "2024-11-03T02:00"]
    assert all(p.end - p.start == HOUR_US for p in ps)
    spring = cal.periods(Granularity.HOUR, us(2024, 3, 10, 5), us(2024, 3, 10, 9), z)
    assert [p.label for p in spring] == ["2024-03-10T00:00", "2024-03-10T01:00", "2024-03-10T03:00",
                                         "2024-03-10T04:00"]


@pytest.mark.parametrize(("days", "extra", "want"), [
    (2, 0, Granularity.HOUR), (2, 1, Granularity.DAY), (7, 0, Granularity.DAY), (7, 1, Granularity.WEEK),
    (31, 0, Granularity.WEEK), (31, 1, Granularity.MONTH), (366, 0, Granularity.MONTH), (366, 1, Granularity.YEAR),
    (0, 1, Granularity.HOUR),
])
def test_auto(days: int, extra: int, want: Granularity) -> None:
    start = us(2024, 3, 9, 12)
    assert cal.resolve_auto(Granularity.AUTO, start, start + days * DAY_US + extra) is want
    assert cal.resolve_auto(Granularity.DAY, start, start + 1000 * DAY_US) is Granularity.DAY


def test_too_many_points_is_refused_without_building_them() -> None:
    z = ZoneInfo("Asia/Kolkata")
    with pytest.raises(TooManyPoints, match="10000"):
        cal.periods(Granularity.HOUR, us(1990, 1, 1), us(2090, 1, 1), z)
    assert isinstance(TooManyPoints("x"), Exception) and TooManyPoints.code == "BAD_USER_INPUT"
    start = us(2000, 1, 1)
    assert len(cal.periods(Granularity.DAY, start, start + 10_000 * DAY_US, ZoneInfo("UTC"))) == 10_000
    with pytest.raises(TooManyPoints):
        cal.periods(Granularity.DAY, start, start + 10_000 * DAY_US + 1, ZoneInfo("UTC"))


def test_previous_window() -> None:
    z = ZoneInfo("America/New_York")
    march = cal.period_at(Granularity.MONTH, us(2024, 3, 15, 12), z)
    # A partial March [Mar 1, Mar 31 05:00 local) compares with Feb 1 + the same offsets, clipped at Mar 1.
    a, b = march.start, march.end - 19 * HOUR_US
    lo, hi = cal.previous_window(march, a, b, Granularity.MONTH, z)
    feb = cal.period_at(Granularity.MONTH, march.start - 1, z)
    assert (lo, hi) == (feb.start, march.start)
    # A window starting mid-period: the same offset into the previous period.
    day = cal.period_at(Granularity.DAY, us(2024, 3, 11, 12), z)
    lo, hi = cal.previous_window(day, day.start + 5 * HOUR_US, day.end, Granularity.DAY, z)
    prev = cal.period_at(Granularity.DAY, day.start - 1, z)  # the 23-hour 2024-03-10
    assert (lo, hi) == (prev.start + 5 * HOUR_US, day.start)


@given(st.sampled_from(list(Grain)), st.sampled_from(ZONES), st.integers(LO, HI))
def test_bucket_key_and_interval_agree(g: Grain, name: str, t: int) -> None:
    z = ZoneInfo(name)
    k = cal.bucket_key(g, t, z)
    lo, hi = cal.bucket_interval(g, k, z)
    assert lo <= t < hi
    assert cal.bucket_key(g, lo, z) == k and cal.bucket_key(g, hi, z) != k


@given(st.sampled_from(ZONES), st.integers(LO, HI), st.integers(1, 400 * DAY_US))
def test_offset_segments(name: str, lo: int, length: int) -> None:
    z = ZoneInfo(name)
    segs = cal.offset_segments(z, lo, lo + length)
    assert segs[0][0] == lo
    for (t, off), nxt in zip(segs, [*segs[1:], (lo + length, None)], strict=True):
        assert cal.offset_us(t, z) == off
        assert cal.offset_us(nxt[0] - 1, z) == off


def test_unknown_zone() -> None:
    for name in ("Mars/Base", "", "../etc/passwd", "UTC\x00"):
        with pytest.raises(BadInput, match="time zone"):
            cal.zone(name)


# Clock changes that move the wall clock across local midnight (fall-backs at 00:01 in St_Johns, Moncton and
# Goose_Bay; Casey +11 -> +8 at 02:00; Santiago at 24:00; Apia skipping 2011-12-30), and ordinary ones.
ACROSS_MIDNIGHT = [("America/St_Johns", 1988), ("America/St_Johns", 2010), ("America/Moncton", 2000),
                   ("America/Goose_Bay", 1989), ("Antarctica/Casey", 2010), ("America/Santiago", 2019),
                   ("Pacific/Apia", 2011), ("Australia/Lord_Howe", 2020), ("Europe/London", 2024)]


def contract_date(t: int, tz: str) -> dt.date:
    """The D with S(D) <= t < S(D+1), searched among the wall-clock date's neighbours (CONTRACT 3 verbatim)."""
    guess = cal.from_us(t).astimezone(ZoneInfo(tz)).date()
    hits = [d for d in (guess + dt.timedelta(days=k) for k in range(-2, 3))
            if midnight(d, tz) <= t < midnight(d + dt.timedelta(days=1), tz)]
    assert len(hits) == 1, (t, tz, hits)
    return hits[0]


@pytest.mark.parametrize(("tz", "year"), ACROSS_MIDNIGHT)
def test_days_follow_the_contract_periods_across_clock_changes(tz: str, year: int) -> None:
    """period_date, bucket_key, period_at and the SQL day offsets all put an instant in the period holding it."""
    z = ZoneInfo(tz)
    lo = us(year, 1, 1)
    changes = [t for t, _ in cal.offset_segments(z, lo, lo + 366 * DAY_US)[1:]]
    assert changes
    for change in changes:
        ts = sorted({change + k * 60_000_000 for k in range(-200, 201)} | {change - 1, change + 1})
        segs = cal.day_offset_segments(z, ts[0], ts[-1] + 1)
        starts = [s for s, _ in segs]
        for t in ts:
            d = contract_date(t, tz)
            n = cal.day_number(d)
            assert cal.period_date(t, z) == d
            assert cal.bucket_key(Grain.DAY, t, z) == n
            assert cal.bucket_key(Grain.WEEK, t, z) == n - d.weekday()
            assert cal.bucket_key(Grain.MONTH, t, z) == d.year * 12 + d.month - 1
            for g in (Grain.DAY, Grain.WEEK, Grain.MONTH, Grain.YEAR):
                lo_g, hi_g = cal.bucket_interval(g, cal.bucket_key(g, t, z), z)
                assert lo_g <= t < hi_g
            p = cal.period_at(Granularity.DAY, t, z)
            assert (p.start, p.end, p.label) == (midnight(d, tz), midnight(d + dt.timedelta(days=1), tz),
                                                 d.isoformat())
            off = segs[cal.find_index(starts, t)][1]
            assert (t + off) // DAY_US == n, (tz, t)
        # Segments that start anywhere in the window give the same days (a fold's range may start mid-span).
        for start in ts[::37]:
            sub = cal.day_offset_segments(z, start, ts[-1] + 1)
            assert sub[0][0] == start
            sub_starts = [s for s, _ in sub]
            for t in ts:
                if t >= start:
                    assert (t + sub[cal.find_index(sub_starts, t)][1]) // DAY_US == cal.bucket_key(Grain.DAY, t, z)
