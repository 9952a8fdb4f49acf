"""`performance` growth (CONTRACT 3): percent change to 2 decimals, null after an empty window, never -0."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from analytics_gql.domain.queries import growth


def test_growth_values() -> None:
    assert growth(5, 0) is None and growth(0, 0) is None
    assert growth(0, 4) == -100.0
    assert growth(150, 100) == 50.0
    assert growth(1, 3) == -66.67


def test_a_tiny_decrease_rounds_to_plain_zero() -> None:
    g = growth(99_999, 100_000)  # -0.001 %, rounds to zero
    assert g == 0.0 and math.copysign(1.0, g) == 1.0 and str(g) == "0.0"


@given(st.integers(0, 10**9), st.integers(1, 10**9))
def test_growth_is_the_rounded_exact_percent(current: int, previous: int) -> None:
    g = growth(current, previous)
    exact = Fraction(current - previous, previous) * 100
    assert g is not None and abs(Fraction(g) - exact) <= Fraction(1, 200) + Fraction(1, 10**9)
    assert g != 0.0 or math.copysign(1.0, g) == 1.0
