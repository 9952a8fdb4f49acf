"""The planner: which rollup buckets, raw edges and raw tail answer a set of instant windows exactly.

Each window [a, b) is split into the coarsest whole buckets that fit (year, month, week, day, hour), finer
grains at the edges, and raw events where no bucket fits. Rollups hold exactly the events with id <= watermark,
so rollup buckets and raw edges read ids <= watermark and one raw "tail" part reads ids > watermark over every
window: each event is counted once per window, whatever passes run meanwhile (the read is one snapshot).
A plan is a list of runs: output index = base + (key - lo) // step, so a long series of periods that are each one
bucket costs one run, and cost grows with edges, not with the length of the range.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from analytics_gql.domain.calendar import DAY_US, GRAINS, HOUR_US, Grain, bucket_interval, bucket_key, from_us
from analytics_gql.errors import RetentionError

RAW = "raw"
TAIL = "tail"
# Finest to coarsest; the cover tries the coarsest first.
_COVER_ORDER: tuple[Grain, ...] = (Grain.YEAR, Grain.MONTH, Grain.WEEK, Grain.DAY, Grain.HOUR)
# The shortest a bucket of each grain can be (DST days have 23 hours), to skip grains that cannot fit.
_MIN_LEN = {Grain.HOUR: HOUR_US, Grain.DAY: 23 * HOUR_US, Grain.WEEK: 7 * DAY_US - 2 * HOUR_US,
            Grain.MONTH: 28 * DAY_US - 2 * HOUR_US, Grain.YEAR: 365 * DAY_US - 2 * HOUR_US}
_STRIDE = {Grain.HOUR: 1, Grain.DAY: 1, Grain.WEEK: 7, Grain.MONTH: 1, Grain.YEAR: 1}


@dataclass(frozen=True, slots=True)
class Run:
    """Keys [lo, hi) of one source mapped to output index base + (key - lo) // step.

    source is a Grain value (keys are bucket keys), "raw" (instants, ids <= watermark) or "tail" (instants,
    ids > watermark).
    """

    source: str
    lo: int
    hi: int
    base: int
    step: int


@dataclass
class Plan:
    """The runs that answer the windows, per source, and the watermark they were planned against."""

    watermark: int
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def add(self, run: Run) -> None:
        """Append a run, merging it into the previous run of its source when it continues it."""
        runs = self.runs.setdefault(run.source, [])
        if runs:
            last = runs[-1]
            # Same step, adjacent keys, whole steps, consecutive indexes: one run maps both exactly.
            if (last.hi == run.lo and last.step == run.step and (run.hi - run.lo) % run.step == 0
                    and (last.hi - last.lo) % last.step == 0
                    and run.base == last.base + (last.hi - last.lo) // last.step):
                runs[-1] = Run(last.source, last.lo, run.hi, last.base, last.step)
                return
        runs.append(run)

    def sources(self) -> list[str]:
        """The sources used, coarsest grain first, then raw and tail."""
        order = [g.value for g in reversed(GRAINS)] + [RAW, TAIL]
        return [s for s in order if self.runs.get(s)]


def _next_key(g: Grain, k: int) -> int:
    return k + _STRIDE[g]


def _kept_at(t: int, horizons: dict[str, int], order: tuple[Grain, ...]) -> list[str]:
    """The grains (of those that can answer) still complete at instant t, finest first (for the retention error)."""
    kept = [g.value for g in reversed(order) if horizons.get(g.value, 0) <= t]
    return kept or [Grain.YEAR.value]


def _cover(a: int, b: int, level: int, rz: ZoneInfo, horizons: dict[str, int],
           out: list[tuple[str, int, int]], order: tuple[Grain, ...] = _COVER_ORDER) -> None:
    """Append (source, lo, hi) pieces partitioning [a, b): coarsest whole buckets first, raw at the edges.

    `order` is the grains that can answer (those holding the rollup shape the question needs), coarsest first.
    """
    if a >= b:
        return
    if level == len(order):
        kept = horizons.get(RAW, 0)
        if a < kept:
            # CONTRACT 4 asks the error to name the coarsest grain available there; the finest one is what a user
            # can act on, so the message names both.
            grains = _kept_at(a, horizons, order)
            finest, coarsest = grains[0].upper(), grains[-1].upper()
            raise RetentionError(
                f"this query needs raw events from {from_us(a).isoformat()}, but retention has compacted raw events "
                f"before {from_us(kept).isoformat()}; the grains available there are {', '.join(grains).upper()} "
                f"(finest {finest}, coarsest {coarsest}): use a {finest} (or coarser) granularity and align the "
                f"range to {finest} boundaries")
        out.append((RAW, a, b))
        return
    g = order[level]
    if b - a < _MIN_LEN[g]:
        _cover(a, b, level + 1, rz, horizons, out, order)  # too short to hold a whole bucket of this grain
        return
    k = bucket_key(g, a, rz)
    s, _ = bucket_interval(g, k, rz)
    if s < a:
        k = _next_key(g, k)
    first_start, _ = bucket_interval(g, k, rz)
    kl = bucket_key(g, b - 1, rz)
    _, e = bucket_interval(g, kl, rz)
    if e > b:
        kl -= _STRIDE[g]
    if kl < k:
        _cover(a, b, level + 1, rz, horizons, out, order)
        return
    _, last_end = bucket_interval(g, kl, rz)
    kept = horizons.get(g.value, 0)
    if first_start < kept:
        # Buckets of this grain before its horizon are gone: finer grains (and raw events) answer before it, and
        # the query is refused only where they are gone too (raw, the last level). A policy may keep a coarser
        # grain for less time than a finer one (ANALYTICS_RETENTION=day=30d keeps hours and raw forever).
        k = bucket_key(g, kept, rz)
        if bucket_interval(g, k, rz)[0] < kept:
            k = _next_key(g, k)
        if k > kl:
            _cover(a, b, level + 1, rz, horizons, out, order)
            return
        first_start, _ = bucket_interval(g, k, rz)
    _cover(a, first_start, level + 1, rz, horizons, out, order)
    out.append((g.value, k, _next_key(g, kl)))
    _cover(last_end, b, level + 1, rz, horizons, out, order)


def _whole_bucket(a: int, b: int, rz: ZoneInfo, horizons: dict[str, int],
                  order: tuple[Grain, ...]) -> list[tuple[str, int, int]] | None:
    """The fast path: a window that is exactly one bucket of some grain (a series in the reporting zone)."""
    for g in order:
        if b - a < _MIN_LEN[g]:
            continue
        k = bucket_key(g, a, rz)
        if bucket_interval(g, k, rz) == (a, b) and horizons.get(g.value, 0) <= a:
            return [(g.value, k, _next_key(g, k))]
    return None


def plan(windows: Sequence[tuple[int, int]], *, rollup_zone: ZoneInfo | None, watermark: int,
         horizons: dict[str, int], grains: Collection[Grain] = GRAINS) -> Plan:
    """Plan windows (output index = position): rollups + raw edges for ids <= watermark, tail for the rest.

    Only `grains` (those that keep the rollup shape the question needs) are used; raw events fill the rest.
    """
    p = Plan(watermark=watermark)
    order = tuple(g for g in _COVER_ORDER if g in grains)
    use_rollups = rollup_zone is not None and watermark > 0
    covers: dict[tuple[int, int], list[tuple[str, int, int]]] = {}
    for i, (a, b) in enumerate(windows):
        if a >= b or not use_rollups:
            continue
        assert rollup_zone is not None
        pieces = covers.get((a, b))
        if pieces is None:
            pieces = _whole_bucket(a, b, rollup_zone, horizons, order)
            if pieces is None:
                pieces = []
                _cover(a, b, 0, rollup_zone, horizons, pieces, order)
            covers[(a, b)] = pieces  # a growth series asks for most windows twice
        for source, lo, hi in pieces:
            p.add(Run(source, lo, hi, i, hi - lo))
    for i, (a, b) in enumerate(windows):
        if a < b:
            p.add(Run(TAIL, a, b, i, b - a))
    return p
