"""The fixed-point primitives against exact Python-integer arithmetic."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from intsoftmax.fixedpoint import (IntegerOverflowError, apply_multiplier, check_range, fixed_multiplier,
                                   mul_rshift_round, mulhi, rshift_round, saturate)


@given(st.integers(-2**40, 2**40), st.integers(1, 20))
def test_rshift_round_is_round_half_up(x, s):
    assert int(rshift_round(np.int64(x), s)) == (2 * x + 2**s) // 2 ** (s + 1)


@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_mulhi_is_high_word(a, b):
    assert int(mulhi(a, b)) == (a * b) >> 32


@given(st.floats(0, 2**31, exclude_max=True, allow_subnormal=False))
def test_fixed_multiplier_is_truncated_mantissa(real):
    M, shift = (int(x) for x in fixed_multiplier(real))
    assert M < 2**31 and 0 <= shift <= 62
    # M = floor(real * 2**shift), exactly (Python ints via the float's integer ratio)
    num, den = real.as_integer_ratio()
    assert M == (num << shift) // den
    if real >= 2.0**-31:
        assert M >= 2**30  # a normalised 31-bit mantissa


@given(st.integers(-2**31, 2**31 - 1), st.integers(0, 2**31 - 1), st.integers(0, 40))
def test_apply_multiplier_rounds_half_up(x, M, s):
    expect = (x * M + (1 << (s - 1) if s else 0)) >> s
    assert int(apply_multiplier(x, M, s)) == expect


def test_fixed_multiplier_rejects_out_of_range():
    for bad in (-1.0, 2.0**31, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="fixed_multiplier"):
            fixed_multiplier(bad)


def test_check_range_and_saturate():
    check_range(np.array([-128, 127]), 8, "x")
    with pytest.raises(IntegerOverflowError, match="x: value range"):
        check_range(np.array([0, 128]), 8, "x")
    with pytest.raises(IntegerOverflowError):
        check_range(np.array([-1]), 8, "u", signed=False)
    assert saturate(np.array([-300, 5, 300]), 8).tolist() == [-128, 5, 127]


@given(x=st.integers(-2**46 + 1, 2**46 - 1), a=st.integers(0, 2**31), s=st.integers(16, 40))
def test_wide_rescale_product_is_exact(x, a, s):
    """The wide rule's release ``(x a + 2**(s-1)) >> s`` from two int64 products equals Python's
    exact integers where ``x a`` itself would overflow int64."""
    assert int(mul_rshift_round(np.int64(x), np.int64(a), s)) == (x * a + (1 << (s - 1))) >> s
