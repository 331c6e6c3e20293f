"""Exp2 fused with the requantization: ``P = round(top * 2**(-t c))`` straight from the logit distance.

Native input: the raw QK-unit distance ``t = m - L >= 0`` (no prescale). Per row, one
multiplier ``M = round(c 2**32)`` carries the scale ``c' = M 2**-32`` octaves per QK unit
(clamped to ``2**32 - 1``: ``c < 1``; ``|c - c'| <= 2**-33``; ``M = 0`` makes every key weigh ``top``). For an output scale ``top``
(``P_max`` for the probabilities, ``one`` for the rescale factor), with ``F = frac_bits`` and
``R = 17 - bitlen(top)`` guard bits (``S = top 2**R < 2**17``):

1. ``x = t M`` (uint64, one ``IMAD.WIDE.U32``): its high word is the octave ``q = floor(t c')``,
   its top ``F`` fraction bits are ``f = x[32-F:32]`` (one shift);
2. Horner on ``f`` of a polynomial ``p(f) ~= 2**-f`` (``p(0) = 1``, ``p(1) = 1/2``), integer
   coefficients at scale ``S``: ``h = C_d``, then ``h = (h f + C_i 2**F + 2**(F-1)) >> F`` (one
   ``IMAD`` and one shift per degree; ``|h f| < 2**31``); the last shift is by ``F + R - 1``, so
   ``y0 = h ~= 2 top 2**-f`` keeps one guard bit;
3. ``y = y0 >> q`` (0 once ``q >= 32``, as PTX shifts) and ``P = (y + 1) >> 1``: ``top 2**(-q-f)``
   rounded half up (nested floors by powers of two compose exactly, so this is one rounding of
   ``H 2**-(R+q)``).

So ``P ~= top 2**(-t c')`` in ``6 + 2 degree`` 32-bit instructions with no separate prescale,
requantization or clamp to ``P_max``: ``y0 <= 2 top`` and ``P(0) = top`` by construction. The
kernel's forms of ``P`` (``127 - P = (254 - y) >> 1``, the split ``(P + 128) >> 8 =
(y + 257) >> 9``) cost the same. ``P`` is 0 from ``t_cap = ceil((bits(top) + 2) 2**32 / M)`` on
(``q >= bits(top) + 2 > log2 y0``), the clamp of the generic exp's input. ``P`` is non-increasing
in ``t``: ``y0`` is non-increasing in ``f`` and ``y0(f_max) >= y0(0) / 2`` (checked over every
``f`` when the strategy is built).
"""
from __future__ import annotations

import functools
import math
from typing import ClassVar

import numpy as np

from ..fixedpoint import check_range, round_half_up
from ..strategy import register
from .base import ErrorBound, ExpStrategy, OpCount, check_bits
from .poly import relative_minimax

#: Largest row multiplier (``c' < 1`` octave per QK unit, an unsigned 32-bit ``IMAD.WIDE.U32`` operand).
M_MAX = 2**32 - 1
#: Largest clamp distance (``t`` is an int32).
T_CAP_MAX = 2**31 - 1
#: ``S = top 2**R`` stays below this, so Horner's ``|h f| < 2**31`` with ``f < 2**14``.
SCALE_BITS = 17


@functools.lru_cache(maxsize=None)
def minimax_exp2_neg_coefficients(degree: int, frac_bits: int, grid: int = 8193) -> tuple[float, ...]:
    """Coefficients ``c_0 = 1, c_1..c_d`` of ``p(f) ~= 2**-(f + 2**-(F+1))`` on [0, 1) (the middle
    of each ``2**-F`` step of the truncated fraction), relative minimax with ``p(0) = 1`` and
    ``p(1) = 1/2``."""
    f = np.linspace(0.0, 1.0, grid)
    y = np.exp2(-np.minimum(f + 2.0 ** -(frac_bits + 1), 1.0))
    y[0] = 1.0
    return relative_minimax(f, y, degree)


def guard_bits(top: int) -> int:
    """``R = 17 - bitlen(top)``: ``S = top 2**R < 2**17``."""
    return SCALE_BITS - int(top).bit_length()


@register("exp", "fused_exp2")
class FusedExp2(ExpStrategy):
    """``degree``: of the polynomial for ``2**-f``. ``frac_bits``: of the fraction ``f`` (Horner
    operand). ``out_bits``: ``one = 2**out_bits``, the output scale of the generic exp (the
    online rules' rescale factor); the probabilities use ``P_max`` directly (:meth:`fused_p`)."""

    fuses_requant: ClassVar[bool] = True
    catalog: ClassVar[dict] = {"fused2": {"degree": 2}, "fused3": {"degree": 3}}
    search_space: ClassVar[dict] = {"degree": range(1, 5), "frac_bits": range(10, 15)}
    degree: int = 3
    frac_bits: int = 14
    out_bits: int = 15

    def _validate(self):
        check_bits(self, "degree", 1, 4)
        check_bits(self, "frac_bits", 8, 14)
        check_bits(self, "out_bits", 2, 15)

    # -- constants -------------------------------------------------------------------------
    def coefficients(self, top: int) -> tuple[int, ...]:
        """Horner coefficients ``(C_d, K_{d-1}, .., K_0)`` at scale ``S = top 2**R``: ``C_d``, then
        each addend ``K_i = C_i 2**F + 2**(F-1)`` (``C_0 = S``, rounding included)."""
        return _coefficients(self.degree, self.frac_bits, int(top))

    def input_unit_octaves(self):
        return None  # raw QK units

    def u_max(self):
        return T_CAP_MAX

    def row_constants(self, c):
        c = np.asarray(c, dtype=np.float64)
        M = np.clip(round_half_up(c * 2.0**32), 0, M_MAX).astype(np.int64)
        return {"M": M, "c": c, "u_max": self.t_cap(M, self.one())}

    def kernel_row_constants(self, consts, p_max):
        """``M`` (its uint32 bits)."""
        return consts["M"] - (consts["M"] >= 2**31) * 2**32, None

    @staticmethod
    def clamp_octaves(top: int) -> int:
        """``bits(top) + 2``: from this many octaves on the output at scale ``top`` is 0."""
        return int(top).bit_length() + 2

    @classmethod
    def t_cap(cls, M, top: int):
        """``ceil(clamp_octaves(top) 2**32 / M)`` (int64, capped at ``2**31 - 1``): from there ``P`` is 0."""
        M = np.asarray(M, dtype=np.int64)
        octaves = np.int64(cls.clamp_octaves(top)) << 32
        return np.where(M > 0, np.minimum(-((-octaves) // np.maximum(M, 1)), T_CAP_MAX), T_CAP_MAX)

    # -- golden ----------------------------------------------------------------------------
    def scaled(self, t, M, top: int):
        """``round(top * 2**(-t M 2**-32))`` for distances ``t >= 0`` (int64), the steps above."""
        F, R = self.frac_bits, guard_bits(top)
        x = np.asarray(t, dtype=np.int64).astype(np.uint64) * np.asarray(M, dtype=np.uint64)  # t < 2**31: < 2**63
        q = (x >> np.uint64(32)).astype(np.int64)
        f = ((x >> np.uint64(32 - F)) & np.uint64((1 << F) - 1)).astype(np.int64)
        y = self.top_fraction(f, top) >> (R - 1 + np.minimum(q, 32))  # y0 < 2**18: 0 from q = 18 on
        return (y + 1) >> 1

    def top_fraction(self, f, top: int):
        """``H ~= S 2**-f`` (``S = top 2**R``) by Horner on the ``F``-bit fraction ``f``; the kernel
        shifts its last step by ``R - 1`` more (``y0 = H >> (R-1)``, the same integers)."""
        return _horner(self.coefficients(top), f, self.frac_bits)

    def golden(self, u, consts=None):
        return self.scaled(u, consts["M"], self.one())

    def fused_p(self, u, consts, p_max: int):
        """``P`` directly: :meth:`scaled` at ``top = P_max`` (at most ``P_max`` by construction)."""
        return self.scaled(u, consts["M"], p_max)

    # -- error and cost --------------------------------------------------------------------
    def error_bound(self, consts=None, top: int | None = None):
        """At scale ``top`` (default ``one``). rel: ``H / S`` against ``2**-f`` over every truncated
        fraction (its true value anywhere in the ``2**-F`` step). abs (LSBs): the one rounding of
        ``H 2**-(R+q)`` (1/2) plus the multiplier's rounding ``|c - c'|``, worst over ``t`` of
        ``top 2**(-tc) |2**(t (c - c')) - 1|``, times ``1 + rel``."""
        top = self.one() if top is None else int(top)
        F = self.frac_bits
        f = np.arange(1 << F, dtype=np.int64)
        y0 = self.top_fraction(f, top).astype(np.float64) / (top << guard_bits(top))
        lo, hi = np.exp2(-(f + 1.0) / 2**F), np.exp2(-f / 2.0**F)
        rel = float(np.max(np.maximum(y0 / lo - 1, 1 - y0 / hi)))
        # |P - X| <= rel X' + 1/2 + |X' - X| and X' - X <= top mult for X' = top 2**(-t c'): rel X' <= rel X + rel top mult
        return ErrorBound(rel=rel, abs_lsb=0.5 + top * _multiplier_error(consts) * (1 + rel))

    def op_count(self):
        """``IMAD.WIDE.U32`` (x), a shift (f), ``degree`` ``IMAD`` and shift pairs (Horner), a shift
        (``>> q``), an add and a shift (the rounding)."""
        return OpCount(mul=self.degree + 1, shift=self.degree + 3, add=1)


@functools.lru_cache(maxsize=None)
def _coefficients(degree: int, frac_bits: int, top: int) -> tuple[int, ...]:
    F, S = frac_bits, top << guard_bits(top)
    c = minimax_exp2_neg_coefficients(degree, F)
    C = [int(round_half_up(np.float64(ci * S))) for ci in c]
    C[0] = S
    out = (C[-1],) + tuple((ci << F) + (1 << (F - 1)) for ci in C[-2::-1])
    _check_shape(out, degree, frac_bits, top)
    return out


def _check_shape(coefs, degree, frac_bits, top):
    """Every ``f``: ``y0`` within ``[0, 2 top]``, non-increasing, ``y0(f_max) >= y0(0) / 2``, and
    ``|h f| + K < 2**31`` (the kernel's int32 Horner)."""
    F, R = frac_bits, guard_bits(top)
    h = _horner(coefs, np.arange(1 << F, dtype=np.int64), F, check=True) >> (R - 1)
    ok = h[0] == 2 * top and h.max() <= 2 * top and (np.diff(h) <= 0).all() and 2 * h[-1] >= h[0]
    if not ok:  # pragma: no cover - the fit guarantees it; a new degree or width must keep it
        raise ValueError(f"fused exp2 (degree={degree}, frac_bits={frac_bits}) is not monotone at top={top}")


def _horner(coefs, f, frac_bits: int, check: bool = False):
    """``h = C_d``, then ``h = (h f + K_i) >> F`` (int64 holding the kernel's int32 values);
    ``check``: raise if a product leaves int32."""
    h = np.full_like(np.asarray(f, dtype=np.int64), coefs[0])
    for k in coefs[1:]:
        prod = h * f + k
        if check:
            check_range(prod, 32, "fused exp2 Horner product")
        h = prod >> frac_bits
    return h


def _multiplier_error(consts) -> float:
    """``max_t 2**(-tc) |2**(t (c - c')) - 1|`` over the rows of ``consts``."""
    if consts is None:
        return 0.0
    c = np.atleast_1d(np.asarray(consts["c"], np.float64)).ravel()
    c1 = np.atleast_1d(np.broadcast_to(np.asarray(consts["M"], np.float64), np.shape(consts["c"]))).ravel() * 2.0**-32
    worst = 0.0
    for ci, cj in {(a, b) for a, b in zip(c, c1)}:
        lo, hi = min(ci, cj), max(ci, cj)  # 2**(-t lo) - 2**(-t hi), largest where its derivative is 0
        if hi <= 0 or lo == hi:
            continue
        t = T_CAP_MAX if lo <= 0 else min(math.log2(hi / lo) / (hi - lo), T_CAP_MAX)
        worst = max(worst, 2.0 ** (-t * lo) - 2.0 ** (-t * hi))
    return worst
