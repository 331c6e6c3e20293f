"""Fixed-point toolkit: the integer primitives every golden model is written in.

Everything here works on NumPy integer arrays with explicit dtypes, and each
primitive has the semantics of the matching Triton/PTX operation on a GPU:

* ``>>`` on signed integers is an *arithmetic* shift, i.e. floor division by
  ``2**s`` (NumPy and PTX ``shr.s32/s64`` agree).
* ``//`` in Triton truncates toward zero; the golden models only divide
  non-negative operands, where floor and truncation coincide
  (:func:`div_nonneg` checks this).
* Shift amounts are always in ``[0, bits)``: PTX clamps larger shifts but LLVM
  treats them as undefined, so callers clamp first.

A *fixed-point multiplier* ``(M, shift)`` represents the real number
``M * 2**-shift`` with a 31-bit mantissa ``M``; :func:`fixed_multiplier`
derives it from a float with only exact IEEE operations (``frexp``, ``ldexp``,
``rint``), so NumPy on the host and torch on a GPU derive identical integers.
"""
from __future__ import annotations

import numpy as np

from .arrayops import NUMPY

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

#: Mantissa bits of a fixed-point multiplier: ``2**30 <= M < 2**31`` when normal.
MULT_BITS = 31
#: Largest right shift a multiplier may use (keeps ``x * M`` shifts inside int64).
MAX_MULT_SHIFT = 62


class IntegerOverflowError(OverflowError):
    """An integer intermediate left the bit width the algorithm declares for it."""


def check_range(x, bits: int, what: str, signed: bool = True) -> None:
    """Raise :class:`IntegerOverflowError` unless every value of ``x`` fits ``bits``.

    ``what`` names the quantity in the message (e.g. ``"acc after tile 3"``).
    """
    x = np.asarray(x)
    if x.size == 0:
        return
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    xmin, xmax = int(x.min()), int(x.max())
    if xmin < lo or xmax > hi:
        raise IntegerOverflowError(
            f"{what}: value range [{xmin}, {xmax}] does not fit {'signed' if signed else 'unsigned'} "
            f"{bits}-bit [{lo}, {hi}]"
        )


def check_product(a, b, bits: int, what: str) -> None:
    """Raise unless ``max|a| * max|b|`` fits a signed ``bits``-bit integer (exact, Python ints)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.size == 0 or b.size == 0:
        return
    amax = max(abs(int(a.min())), abs(int(a.max())))
    bmax = max(abs(int(b.min())), abs(int(b.max())))
    if amax * bmax > 2 ** (bits - 1) - 1:
        raise IntegerOverflowError(
            f"{what}: |a|*|b| can reach {amax}*{bmax} = {amax * bmax}, beyond signed {bits}-bit"
        )


def rshift_floor(x, s):
    """``floor(x / 2**s)`` for int arrays, ``s`` >= 0 (arithmetic shift)."""
    return np.right_shift(x, s)


def rshift_round(x, s):
    """``floor(x / 2**s + 1/2)``: round to nearest, ties toward +inf. ``s`` >= 1.

    Computed as ``(x + 2**(s-1)) >> s``; the caller guarantees the sum fits the dtype.
    """
    x = np.asarray(x)
    one = np.ones_like(x)
    return np.right_shift(x + np.left_shift(one, np.asarray(s) - 1), s)


def div_nonneg(a, b):
    """Integer division of non-negative operands (floor == truncation, as Triton ``//``)."""
    a, b = np.asarray(a), np.asarray(b)
    if (a < 0).any() or (b <= 0).any():
        raise ValueError("div_nonneg needs a >= 0 and b > 0 (Triton '//' truncates toward zero)")
    return a // b


def saturate(x, bits: int, signed: bool = True):
    """Clamp to the range of a ``bits``-bit integer (a saturating cast, never a wrap)."""
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return np.clip(x, lo, hi)


def fixed_multiplier(real, ops=NUMPY):
    """Fixed-point multiplier ``(M, shift)`` with ``M * 2**-shift ~= real``, ``real >= 0``.

    ``M`` has :data:`MULT_BITS` bits (``2**30 <= M < 2**31``), so its relative
    error is at most ``2**-31``. ``shift`` is clamped to ``[0, MAX_MULT_SHIFT]``:
    a real too small for that range rounds toward 0 (possibly ``M = 0``), and a
    real ``>= 2**31`` saturates ``M`` at ``2**31 - 1``. Only exact IEEE
    operations are used, so NumPy and torch (``ops``, see :mod:`.arrayops`)
    derive the same integers. Returns int64 ``M`` and ``shift``.
    """
    real = ops.f64(real)
    _, expo = ops.frexp(real)  # real = mant * 2**expo, mant in [0.5, 1)
    shift = ops.clip(MULT_BITS - ops.i64(expo), 0, MAX_MULT_SHIFT)
    M = ops.clip(ops.rint(ops.ldexp(real, shift)), 0, 2**MULT_BITS - 1)
    return ops.i64(M), shift


def apply_multiplier(x, M, shift):
    """``round(x * M / 2**shift)`` in int64, round-half-up; ``|x| * M`` must fit int64."""
    x = np.asarray(x, dtype=np.int64)
    prod = x * np.asarray(M, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return np.right_shift(prod + half, shift)
