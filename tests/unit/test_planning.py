"""domain/planning: the pieces of a plan partition every window exactly, buckets align, retention is honoured."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics_gql.domain import calendar as cal
from analytics_gql.domain.calendar import DAY_US, HOUR_US, Grain
from analytics_gql.domain.planning import RAW, TAIL, Plan, plan
from analytics_gql.errors import RetentionError

ZONES = ["UTC", "America/Santiago", "Asia/Kolkata", "Europe/London", "America/New_York", "Australia/Lord_Howe"]
LO = cal.to_us(dt.datetime(2019, 6, 1, tzinfo=dt.UTC))
HI = cal.to_us(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
STRIDE = {Grain.HOUR: 1, Grain.DAY: 1, Grain.WEEK: 7, Grain.MONTH: 1, Grain.YEAR: 1}
NO_HORIZONS = {"raw": 0, **{g.value: 0 for g in Grain}}


def pieces(p: Plan, source: str, rz: ZoneInfo) -> dict[int, list[tuple[int, int]]]:
    """Window index -> the instant intervals this source reads for it (decoding the runs independently)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for run in p.runs.get(source, []):
        assert run.lo < run.hi and run.step > 0
        if source in (RAW, TAIL):
            t = run.lo
            while t < run.hi:
                i = run.base + (t - run.lo) // run.step
                end = min(run.lo + (i - run.base + 1) * run.step, run.hi)
                out.setdefault(i, []).append((t, end))
                t = end
            continue
        g = Grain(source)
        for k in range(run.lo, run.hi, STRIDE[g]):
            out.setdefault(run.base + (k - run.lo) // run.step, []).append(cal.bucket_interval(g, k, rz))
    return out


def covered(p: Plan, rz: ZoneInfo, sources: list[str]) -> dict[int, list[tuple[int, int, str]]]:
    out: dict[int, list[tuple[int, int, str]]] = {}
    for s in sources:
        for i, parts in pieces(p, s, rz).items():
            out.setdefault(i, []).extend((a, b, s) for a, b in parts)
    return {i: sorted(v) for i, v in out.items()}


def assert_partition(parts: list[tuple[int, int, str]], a: int, b: int) -> None:
    assert parts, (a, b)
    assert parts[0][0] == a and parts[-1][1] == b, (parts[:3], parts[-3:], a, b)
    for (_, x1, _), (y0, _, _) in zip(parts, parts[1:], strict=False):
        assert x1 == y0, "gap or overlap"
    assert all(x0 < x1 for x0, x1, _ in parts)


@st.composite
def windows(draw: st.DrawFn) -> list[tuple[int, int]]:
    """Consecutive windows like a series' (or one long one), edges often on whole hours or local midnights."""
    zone = ZoneInfo(draw(st.sampled_from(ZONES)))
    t = draw(st.one_of(st.integers(LO, HI), st.integers(LO // HOUR_US, HI // HOUR_US).map(lambda h: h * HOUR_US),
                       st.integers(LO, HI).map(lambda u: cal.period_at(cal.Granularity.DAY, u, zone).start)))
    out = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.one_of(st.integers(1, 3 * HOUR_US), st.integers(1, 40 * DAY_US),
                           st.sampled_from([HOUR_US, DAY_US, 7 * DAY_US, 23 * HOUR_US, 25 * HOUR_US]),
                           st.integers(1, 800 * DAY_US)))
        out.append((t, t + n))
        t += n if draw(st.booleans()) else n + draw(st.integers(0, 30 * DAY_US))
    return out


@given(windows(), st.sampled_from(ZONES))
def test_pieces_partition_each_window_exactly(ws: list[tuple[int, int]], rz_name: str) -> None:
    rz = ZoneInfo(rz_name)
    p = plan(ws, rollup_zone=rz, watermark=100, horizons=NO_HORIZONS)
    below = covered(p, rz, [s for s in p.sources() if s != TAIL])
    tail = covered(p, rz, [TAIL])
    assert set(below) == set(tail) == set(range(len(ws)))
    for i, (a, b) in enumerate(ws):
        assert_partition(below[i], a, b)  # rollup buckets + raw edges: every event <= watermark counted once
        assert_partition(tail[i], a, b)  # the tail: every event above the watermark counted once
        for x0, x1, source in below[i]:
            if source == RAW:
                # Raw only where no bucket fits: a raw piece never holds a whole UTC hour.
                first_hour = -(-x0 // HOUR_US) * HOUR_US
                assert first_hour + HOUR_US > x1, (x0, x1)
            else:
                g = Grain(source)
                assert (x0, x1) == cal.bucket_interval(g, cal.bucket_key(g, x0, rz), rz)


@given(windows(), st.sampled_from(ZONES))
def test_no_rollups_before_a_pass(ws: list[tuple[int, int]], rz_name: str) -> None:
    for rz, wm in ((None, 0), (ZoneInfo(rz_name), 0), (None, 5)):
        p = plan(ws, rollup_zone=rz, watermark=wm, horizons=NO_HORIZONS)
        assert p.sources() == [TAIL]
        tail = covered(p, ZoneInfo("UTC"), [TAIL])
        for i, (a, b) in enumerate(ws):
            assert_partition(tail[i], a, b)


def test_a_long_aligned_series_costs_a_few_runs() -> None:
    """365 local days in a whole-hour zone: the day buckets are one run, whatever the length."""
    z = ZoneInfo("America/New_York")
    days = [cal.period_at(cal.Granularity.DAY, cal.to_us(dt.datetime(2024, 1, 1, 12, tzinfo=z)) + i * DAY_US, z)
            for i in range(365)]
    p = plan([(d.start, d.end) for d in days], rollup_zone=z, watermark=10, horizons=NO_HORIZONS)
    assert p.sources() == ["day", TAIL]
    assert len(p.runs["day"]) == 1
    # Half-hour zone asked, rolled up in UTC: raw edges (each under an hour) around whole UTC hours.
    k = ZoneInfo("Asia/Kolkata")
    kd = [cal.period_at(cal.Granularity.DAY, d.start, k) for d in days[:30]]
    utc = ZoneInfo("UTC")
    p = plan([(d.start, d.end) for d in kd], rollup_zone=utc, watermark=10, horizons=NO_HORIZONS)
    assert p.sources() == ["hour", RAW, TAIL]  # a Kolkata day (18:30-18:30 UTC) holds no whole UTC day
    below = covered(p, utc, ["hour", RAW])
    for i, d in enumerate(kd):
        assert_partition(below[i], d.start, d.end)
        # +5:30: a raw half hour at each end, the 23 whole UTC hours between them from the hour grain.
        assert [(x1 - x0, s) for x0, x1, s in below[i]] == (
            [(HOUR_US // 2, RAW)] + [(HOUR_US, "hour")] * 23 + [(HOUR_US // 2, RAW)])


@given(windows(), st.sampled_from(ZONES), st.data())
def test_retention(ws: list[tuple[int, int]], rz_name: str, data: st.DataObject) -> None:
    """Either the plan reads nothing from before a grain's horizon, or RetentionError, and then only when the
    plan without retention would have needed what is gone."""
    rz = ZoneInfo(rz_name)
    horizons = dict(NO_HORIZONS)
    cut = data.draw(st.integers(LO, HI))
    horizons["raw"] = cut
    if data.draw(st.booleans()):
        horizons["hour"] = cal.bucket_interval(Grain.HOUR, cal.bucket_key(Grain.HOUR, cut, rz), rz)[0]
        if data.draw(st.booleans()):
            horizons["day"] = cal.bucket_interval(Grain.DAY, cal.bucket_key(Grain.DAY, cut - 30 * DAY_US, rz),
                                                  rz)[0]
    free = plan(ws, rollup_zone=rz, watermark=100, horizons=NO_HORIZONS)
    needs_gone = any(x0 < horizons[s] for s in free.sources() if s != TAIL
                     for parts in pieces(free, s, rz).values() for x0, _ in parts)
    try:
        p = plan(ws, rollup_zone=rz, watermark=100, horizons=horizons)
    except RetentionError as e:
        assert needs_gone, e
        assert any(g.upper() in str(e) for g in ("HOUR", "DAY", "WEEK", "MONTH", "YEAR")), e
        return
    assert not needs_gone
    for s in p.sources():
        if s != TAIL:
            for parts in pieces(p, s, rz).values():
                assert all(x0 >= horizons[s] for x0, _ in parts)


def test_retention_error_names_the_grain_kept() -> None:
    rz = ZoneInfo("UTC")
    t = cal.to_us(dt.datetime(2024, 1, 10, tzinfo=dt.UTC))
    horizons = {**NO_HORIZONS, "raw": t + 100 * DAY_US, "hour": t + 60 * DAY_US}
    with pytest.raises(RetentionError, match="DAY"):
        plan([(t, t + HOUR_US)], rollup_zone=rz, watermark=1, horizons=horizons)
    with pytest.raises(RetentionError, match="HOUR"):
        plan([(t + 70 * DAY_US + 60_000_000, t + 71 * DAY_US)], rollup_zone=rz, watermark=1, horizons=horizons)
    # Starting exactly at the hour horizon: hours are kept from that very instant.
    with pytest.raises(RetentionError) as e:
        plan([(t + 60 * DAY_US, t + 60 * DAY_US + 30 * 60_000_000)], rollup_zone=rz, watermark=1, horizons=horizons)
    # CONTRACT 4 names the coarsest grain available there; the finest is the one to use.
    assert "grains available there are HOUR, DAY, WEEK, MONTH, YEAR (finest HOUR, coarsest YEAR)" in str(e.value)
    with pytest.raises(RetentionError) as e:
        plan([(t, t + HOUR_US)], rollup_zone=rz, watermark=1, horizons={**horizons, "day": t + 40 * DAY_US})
    assert "grains available there are WEEK, MONTH, YEAR (finest WEEK, coarsest YEAR)" in str(e.value)
    # Whole days before the hour horizon are still answered, from day buckets.
    p = plan([(t, t + 3 * DAY_US)], rollup_zone=rz, watermark=1, horizons=horizons)
    assert p.sources() == ["day", TAIL]
    assert RetentionError("x").code == "BAD_USER_INPUT"


GRAIN_SETS = [(Grain.DAY, Grain.WEEK, Grain.MONTH, Grain.YEAR), (Grain.MONTH, Grain.YEAR), (Grain.HOUR,), ()]


@given(windows(), st.sampled_from(ZONES), st.sampled_from(GRAIN_SETS))
def test_only_grains_keeping_the_shape_are_planned(ws: list[tuple[int, int]], rz_name: str,
                                                   grains: tuple[Grain, ...]) -> None:
    """A shape kept by some grains only (storage SHAPE_GRAINS): those grains and raw events still partition."""
    rz = ZoneInfo(rz_name)
    p = plan(ws, rollup_zone=rz, watermark=100, horizons=NO_HORIZONS, grains=grains)
    assert set(p.sources()) <= {g.value for g in grains} | {RAW, TAIL}
    below = covered(p, rz, [s for s in p.sources() if s != TAIL])
    for i, (a, b) in enumerate(ws):
        assert_partition(below[i], a, b)
        for x0, x1, source in below[i]:
            if source != RAW:
                g = Grain(source)
                assert (x0, x1) == cal.bucket_interval(g, cal.bucket_key(g, x0, rz), rz)


def test_missing_shape_falls_back_to_raw_and_names_a_grain_that_keeps_it() -> None:
    rz = ZoneInfo("UTC")
    t = cal.to_us(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    # Jan 1 10:00 .. Mar 1: with month and year only, January's partial month is raw, February a month bucket.
    p = plan([(t + 10 * HOUR_US, t + 60 * DAY_US)], rollup_zone=rz, watermark=1, horizons=NO_HORIZONS,
             grains=(Grain.MONTH, Grain.YEAR))
    assert p.sources() == ["month", RAW, TAIL]
    assert [(r.lo, r.hi) for r in p.runs[RAW]] == [(t + 10 * HOUR_US, t + 31 * DAY_US)]
    # Raw compacted, hours kept: a shape the hour grain lacks names the finest grain that keeps it.
    horizons = {**NO_HORIZONS, "raw": t + 100 * DAY_US}
    with pytest.raises(RetentionError, match="DAY"):
        plan([(t + 3 * DAY_US, t + 3 * DAY_US + 2 * HOUR_US)], rollup_zone=rz, watermark=1, horizons=horizons,
             grains=(Grain.DAY, Grain.WEEK, Grain.MONTH, Grain.YEAR))


@given(windows(), st.sampled_from(ZONES), st.data())
def test_a_compacted_grain_is_replaced_by_finer_ones_that_are_kept(ws: list[tuple[int, int]], rz_name: str,
                                                                    data: st.DataObject) -> None:
    """CONTRACT 4: only a query that needs what is gone is refused. With raw events kept, compacting a grain
    (any policy: ANALYTICS_RETENTION=day=30d keeps hours and raw longer than days) never refuses a query: finer
    grains and raw events answer before its horizon, and the pieces still partition every window."""
    rz = ZoneInfo(rz_name)
    horizons = dict(NO_HORIZONS)
    for g in Grain:
        if data.draw(st.booleans()):
            t = data.draw(st.integers(LO, HI))
            horizons[g.value] = cal.bucket_interval(g, cal.bucket_key(g, t, rz), rz)[0]
    p = plan(ws, rollup_zone=rz, watermark=100, horizons=horizons)
    below = covered(p, rz, [s for s in p.sources() if s != TAIL])
    for i, (a, b) in enumerate(ws):
        assert_partition(below[i], a, b)
        assert all(x0 >= horizons[s] for x0, _, s in below[i])


def test_day_compacted_alone_is_answered_from_hours() -> None:
    """day=30d with hours and raw kept: whole days before the day horizon come from hour buckets."""
    rz = ZoneInfo("UTC")
    t = cal.to_us(dt.datetime(2024, 1, 10, tzinfo=dt.UTC))
    horizons = {**NO_HORIZONS, "day": t + 30 * DAY_US}
    p = plan([(t, t + 2 * DAY_US)], rollup_zone=rz, watermark=1, horizons=horizons)
    assert p.sources() == ["hour", TAIL]
    assert [(r.lo, r.hi) for r in p.runs["hour"]] == [(t // HOUR_US, t // HOUR_US + 48)]
    # Straddling the horizon: hours before it, days from it on.
    p = plan([(t + 29 * DAY_US, t + 32 * DAY_US)], rollup_zone=rz, watermark=1, horizons=horizons)
    assert p.sources() == ["day", "hour", TAIL]
    assert [(r.lo, r.hi) for r in p.runs["day"]] == [((t + 30 * DAY_US) // DAY_US, (t + 32 * DAY_US) // DAY_US)]
    assert [(r.lo, r.hi) for r in p.runs["hour"]] == [((t + 29 * DAY_US) // HOUR_US, (t + 30 * DAY_US) // HOUR_US)]
