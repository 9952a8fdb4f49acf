"""The token bucket (api/ratelimit.py) on an injected clock, and the ANALYTICS_RATE_LIMIT syntax."""

from __future__ import annotations

import threading

import pytest

from analytics_gql.api.ratelimit import RateLimiter, caller_bucket
from analytics_gql.settings import RateLimit, Settings, parse_rate_limit


class Clock:
    """A monotonic clock the test moves by hand (steps are binary fractions, so the arithmetic is exact)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(rate: float, burst: int, **kw: int) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(RateLimit(rate, burst), clock=clock, **kw), clock


def test_a_new_bucket_holds_the_burst_then_refuses_with_the_wait_for_one_token() -> None:
    rl, clock = limiter(2.0, 3)
    assert [rl.take("a") for _ in range(5)] == [0, 0, 0, 1, 1]  # 3 tokens; then 1 token at 2/s = 0.5 s -> 1 s
    assert rl._buckets["a"].tokens == 0.0


def test_refill_is_rate_times_elapsed_and_capped_at_the_burst() -> None:
    rl, clock = limiter(2.0, 3)
    for _ in range(3):
        assert rl.take("a") == 0
    clock.now += 0.25  # 0.5 token: not enough
    assert rl.take("a") == 1
    assert rl._buckets["a"].tokens == 0.5
    clock.now += 0.25  # 1.0 token
    assert rl.take("a") == 0
    assert rl._buckets["a"].tokens == 0.0
    clock.now += 100.0  # 200 tokens' worth, capped at the burst of 3
    assert [rl.take("a") for _ in range(4)] == [0, 0, 0, 1]


@pytest.mark.parametrize(("rate", "burst", "elapsed", "retry_after"), [
    (1 / 60, 2, 0.0, 60),      # 1/min: a whole token takes 60 s
    (1 / 60, 2, 15.0, 45),     # a quarter of a token has come back: 45 s to go
    (1 / 60, 2, 59.5, 1),      # half a second to go: rounded up to a whole second
    (0.25, 1, 0.0, 4),
    (0.25, 1, 3.0, 1),
    (4.0, 4, 0.0, 1),          # 0.25 s to go: never 0, at least 1
    (0.1, 1, 0.5, 10),         # 9.5 s to go -> 10
])
def test_retry_after_is_the_wait_for_one_token_rounded_up(rate: float, burst: int, elapsed: float,
                                                           retry_after: int) -> None:
    rl, clock = limiter(rate, burst)
    for _ in range(burst):
        assert rl.take("a") == 0
    clock.now += elapsed
    assert rl.take("a") == retry_after
    clock.now += retry_after  # waiting as told is always enough
    assert rl.take("a") == 0


def test_callers_have_separate_buckets() -> None:
    rl, clock = limiter(1.0, 2)
    assert [rl.take("a"), rl.take("a"), rl.take("a")] == [0, 0, 1]
    assert [rl.take("b"), rl.take("b"), rl.take("b")] == [0, 0, 1]
    clock.now += 1.0
    assert [rl.take("a"), rl.take("a"), rl.take("b")] == [0, 1, 0]


def test_refused_requests_take_nothing() -> None:
    rl, clock = limiter(1.0, 1)
    assert rl.take("a") == 0
    for _ in range(10):
        clock.now += 0.0625
        rl.take("a")  # refused: 10 x 1/16 s do not drain what comes back
    clock.now += 0.375  # 1.0 s since the one accepted request
    assert rl.take("a") == 0


def test_idle_buckets_are_dropped_once_full_and_the_bound_holds() -> None:
    rl, clock = limiter(1.0, 4, max_buckets=3)
    rl.take("a")
    clock.now += 1.0
    rl.take("b")
    clock.now += 3.0  # a: 4 s idle, full again: dropped (a new bucket would be the same); b: 3 s idle, kept
    rl.take("c")
    assert list(rl._buckets) == ["b", "c"]
    rl.take("d")
    rl.take("e")  # over the bound of 3: the least recently used (b) goes
    assert list(rl._buckets) == ["c", "d", "e"]
    assert len(rl) == 3


def test_one_lock_shared_by_threads_gives_exactly_the_burst() -> None:
    rl, clock = limiter(1.0, 500)  # the clock stands still: exactly 500 tokens for 8 threads x 100 takes
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [rl.take("a") for _ in range(100)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (results.count(0), len(results)) == (500, 800)


def test_bucket_names_hold_no_key() -> None:
    keyed = caller_bucket(True, {b"authorization": b"Bearer s3cret-key"}, ("10.0.0.1", 5))
    assert keyed == caller_bucket(True, {b"x-api-key": b"s3cret-key"}, ("10.0.0.2", 6))  # same key, same bucket
    assert "s3cret" not in keyed and keyed.startswith("key:")
    assert caller_bucket(False, {}, ("10.0.0.1", 5)) == caller_bucket(False, {}, ("10.0.0.1", 9)) == "addr:10.0.0.1"


@pytest.mark.parametrize(("raw", "rule"), [
    ("20/s, burst 40", RateLimit(20.0, 40)),
    ("600/min", RateLimit(10.0, 10)),        # burst defaults to one second's worth
    ("30/min, burst 5", RateLimit(0.5, 5)),
    ("0.5/s", RateLimit(0.5, 1)),            # ... and is at least 1
    ("2 / Second ,burst 3", RateLimit(2.0, 3)),
    ("", None),
    (None, None),
])
def test_syntax(raw: str | None, rule: RateLimit | None) -> None:
    assert parse_rate_limit(raw) == rule
    assert Settings(rate_limit=raw).rate_limit_rule == rule


@pytest.mark.parametrize("raw", ["20", "0/s", "20/h", "20/s, burst 0", "20/s burst 4", "-1/s", "1e999/s",
                                 "9" * 400 + "/s", "fast"])
def test_bad_syntax_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"use RATE/s or RATE/min with RATE > 0, optionally followed by ', burst N'"):
        parse_rate_limit(raw)


@pytest.mark.parametrize(("raw", "text"), [("20/s, burst 40", "20/s, burst 40"), ("30/min, burst 5", "30/min, burst 5"),
                                          ("1/min", "1/min, burst 1"), ("2.5/s", "2.5/s, burst 3")])
def test_the_rule_is_described_in_the_settings_syntax(raw: str, text: str) -> None:
    rule = parse_rate_limit(raw)
    assert rule is not None and RateLimiter(rule).describe() == text
    assert parse_rate_limit(text) == rule
