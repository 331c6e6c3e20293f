"""Fixed-point toolkit: the integer primitives every golden model is written in.

Everything here works on NumPy integer arrays with explicit dtypes, and each
primitive has the semantics of the matching Triton/PTX operation on a GPU:

* ``>>`` on signed integers is an *arithmetic* shift, i.e. floor division by
  ``2**s`` (NumPy and PTX ``shr.s32/s64`` agree). Shift amounts stay in
  ``[0, bits)``: PTX clamps larger shifts but LLVM treats them as undefined.
* Triton ``//`` truncates toward zero; the golden models only divide
  non-negative operands, where floor and truncation coincide.
* :func:`mulhi` is ``tl.umulhi`` on non-negative int32 operands: the high 32
  bits of the 64-bit product, one ``IMAD.HI`` on the GPU.

A *fixed-point multiplier* ``(M, shift)`` represents ``M * 2**-shift``. It is
the truncated 31-bit mantissa of a float64 (:func:`fixed_multiplier`): pure bit
extraction, so the host, the golden model and a Triton kernel that reads the
float's bits derive identical integers.
"""
from __future__ import annotations

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

#: Mantissa bits of a fixed-point multiplier: ``2**30 <= M < 2**31`` when normal.
MULT_BITS = 31
#: Largest right shift of a multiplier (a real below ``2**-62`` loses bits, then becomes 0).
MAX_MULT_SHIFT = 62


class IntegerOverflowError(OverflowError):
    """An integer intermediate left the bit width the algorithm declares for it."""


def int_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """``(lo, hi)`` of a ``bits``-bit integer."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def check_range(x, bits: int, what: str, signed: bool = True) -> None:
    """Raise :class:`IntegerOverflowError` unless every value of ``x`` fits ``bits``.

    ``x`` may be an integer, float or object (Python int) array; ``what`` names
    the quantity in the message (e.g. ``"acc after key tile 3"``).
    """
    x = np.asarray(x)
    if x.size == 0:
        return
    lo, hi = int_range(bits, signed)
    xmin, xmax = x.min(), x.max()
    if xmin < lo or xmax > hi:
        raise IntegerOverflowError(
            f"{what}: value range [{xmin}, {xmax}] does not fit {'signed' if signed else 'unsigned'} "
            f"{bits}-bit [{lo}, {hi}]"
        )


def rshift_round(x, s):
    """``floor(x / 2**s + 1/2)``: round half up, ``s >= 1`` (``(x + 2**(s-1)) >> s``)."""
    x = np.asarray(x, dtype=np.int64)
    return (x + (np.int64(1) << (np.asarray(s, dtype=np.int64) - 1))) >> s


#: Bits of the low part in :func:`mul_rshift_round`'s split of ``x``.
SPLIT_BITS = 16


def mul_rshift_round(x, a, s: int):
    """``floor((x * a + 2**(s-1)) / 2**s)`` exactly in int64 where ``x * a`` would not fit: ``|x| <
    2**46``, ``0 <= a <= 2**31``, ``16 <= s <= 40``. With ``x = 2**16 xh + xl`` (``0 <= xl <
    2**16``), ``x a + h = 2**16 (xh a + ((xl a + h) >> 16)) + ((xl a + h) & 0xFFFF)`` and the last
    term, below ``2**16``, cannot carry past ``2**s``: the result is ``(xh a + ((xl a + h) >> 16))
    >> (s - 16)``. Every product stays below ``2**62``. (The kernel's wide rescale, two int64 multiplies.)"""
    x = np.asarray(x, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    xh, xl = x >> SPLIT_BITS, x & ((1 << SPLIT_BITS) - 1)
    return (xh * a + ((xl * a + (np.int64(1) << (s - 1))) >> SPLIT_BITS)) >> (s - SPLIT_BITS)


def mulhi(a, b):
    """``floor(a * b / 2**32)`` for non-negative int32 ``a``, ``b`` (``tl.umulhi``)."""
    return (np.asarray(a, dtype=np.int64) * np.asarray(b, dtype=np.int64)) >> 32


def round_half_up(x):
    """``floor(x + 1/2)`` in the dtype of ``x`` (float32 or float64): two IEEE operations a GPU
    reproduces exactly, where ``rint``'s ties-to-even has no interpreter twin."""
    x = np.asarray(x)
    return np.floor(x + x.dtype.type(0.5))


def saturate(x, bits: int, signed: bool = True):
    """Clamp to the range of a ``bits``-bit integer (a saturating cast, never a wrap)."""
    return np.clip(x, *int_range(bits, signed))


def bit_length(l):
    """``int.bit_length`` of each non-negative int64 below ``2**53`` (0 for 0), from float64's exponent."""
    return np.where(l > 0, np.frexp(np.maximum(l, 1).astype(np.float64))[1].astype(np.int64), 0)


def fixed_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """``(M, shift)`` with ``M = floor(real * 2**shift)``, ``2**30 <= M < 2**31``, for ``real >= 0``.

    ``M`` is the top 31 bits of ``real``'s float64 mantissa (relative error
    ``< 2**-30``, always rounding down). ``shift`` is clamped to
    ``[0, MAX_MULT_SHIFT]``: a real below ``2**-31`` keeps fewer bits and one
    below ``2**-62`` gives ``M = 0``; a real ``>= 2**31`` must be clamped by the
    caller. Returns int64 arrays.
    """
    real = np.asarray(real, dtype=np.float64)
    if (real < 0).any() or (real >= 2.0**MULT_BITS).any() or not np.isfinite(real).all():
        raise ValueError(f"fixed_multiplier needs reals in [0, 2**31), got range [{real.min()}, {real.max()}]")
    _, expo = np.frexp(real)  # real = mant * 2**expo, mant in [0.5, 1)
    shift = np.clip(MULT_BITS - expo.astype(np.int64), 0, MAX_MULT_SHIFT)
    M = np.floor(np.ldexp(real, shift.astype(np.int32)))
    return M.astype(np.int64), shift


def apply_multiplier(x, M, shift):
    """``round(x * M / 2**shift)`` in int64, round half up; ``|x| * M`` must fit int64."""
    prod = np.asarray(x, dtype=np.int64) * np.asarray(M, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half = np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), 0)
    return (prod + half) >> shift
