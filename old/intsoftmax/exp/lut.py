"""Lookup-table exp2 on the fractional bits, optionally with linear interpolation.

Native input: ``u >= 0`` in units of ``2**-frac_bits`` octaves, ``u = q * 2**F + f``;
the top ``k = index_bits`` bits of ``f`` index a table of ``2**(-i / 2**k)``.

* ``interpolate=True``: ``T[i] = round(2**E * 2**(-i / 2**k))`` for ``i = 0 .. 2**k``
  (``2**k + 1`` entries); ``e = (T[i] - (((T[i] - T[i+1]) * rem + 2**(F-k-1)) >> (F-k))) >> q``.
* ``interpolate=False``: midpoint table ``T[i] = round(2**E * 2**(-(i + 1/2) / 2**k))``,
  ``e = T[i] >> q`` (the midpoint halves the worst relative error).

All int32; ``u_max = (E + 1) * 2**F``.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..strategy import register
from .base import LN2, ErrorBound, ExpStrategy, OpCount, check_bits


def chord_max_rel(h: float) -> float:
    """Max relative error of the chord of ``2**-t`` over ``[0, h]`` (closed form).

    With ``beta = (1 - 2**-h) / h`` the chord is ``1 - beta t``; ``(1 - beta t) 2**t`` peaks
    where ``1 - beta t = beta / ln 2``.
    """
    beta = (1 - 2.0**-h) / h
    t = (1 - beta / LN2) / beta
    return (beta / LN2) * 2.0**t - 1


@register("exp", "lut_exp2")
class LutExp2(ExpStrategy):
    catalog: ClassVar[dict] = {"lut6": {"index_bits": 6, "interpolate": True},
                               "lut6-mid": {"index_bits": 6, "interpolate": False}}
    search_space: ClassVar[dict] = {"index_bits": range(2, 9), "interpolate": (False, True),
                                    "frac_bits": range(8, 15)}
    index_bits: int = 6
    interpolate: bool = True
    frac_bits: int = 14
    out_bits: int = 15

    def _validate(self):
        check_bits(self, "index_bits", 1, 12)
        check_bits(self, "frac_bits", 1, 20)
        check_bits(self, "out_bits", 2, 24)
        self._check(self.index_bits <= self.frac_bits, "index_bits", f"must be <= frac_bits = {self.frac_bits}")
        self._check(self.out_bits + self.frac_bits - self.index_bits <= 30, "out_bits",
                    "out_bits + frac_bits - index_bits must be <= 30 so the interpolation product fits int32")

    @property
    def table(self) -> np.ndarray:
        """The int32 table the kernel loads (``2**k + 1`` entries interpolated, ``2**k`` otherwise)."""
        k, E = self.index_bits, self.out_bits
        if self.interpolate:
            i = np.arange(2**k + 1, dtype=np.float64)
        else:
            i = np.arange(2**k, dtype=np.float64) + 0.5
        return np.rint(2.0**E * np.exp2(-i / 2**k)).astype(np.int64)

    def input_unit_octaves(self):
        return 2.0**-self.frac_bits

    def u_max(self):
        return (self.out_bits + 1) << self.frac_bits

    def golden(self, u, consts=None):
        F, k = self.frac_bits, self.index_bits
        u = np.asarray(u, dtype=np.int64)
        q = u >> F
        f = u & ((1 << F) - 1)
        idx = f >> (F - k)
        T = self.table
        if not self.interpolate:
            return T[idx] >> q
        rem = f & ((1 << (F - k)) - 1)
        lo, hi = T[idx], T[idx + 1]
        s = F - k
        step = ((lo - hi) * rem + ((1 << s) >> 1)) >> s
        return (lo - step) >> q

    def error_bound(self, consts=None):
        """rel: chord error (interpolated) or half-cell error ``2**(2**-(k+1)) - 1`` (midpoint).
        abs: before the final shift the value is off by at most 1 LSB (table rounding 0.5,
        interpolated as a convex combination, plus the interpolation rounding 0.5; 0.5 without
        interpolation); ``>> q`` divides that by ``2**q`` and floors (``< 1 - 2**-q``), so the
        total is at most ``max(pre, 1) = 1`` LSB."""
        h = 2.0**-self.index_bits
        if self.interpolate:
            return ErrorBound(rel=chord_max_rel(h), abs_lsb=1.0)
        return ErrorBound(rel=2.0 ** (h / 2) - 1, abs_lsb=1.0)

    def op_count(self):
        if self.interpolate:
            return OpCount(mul=1, shift=4, add=5, lut=2)
        return OpCount(shift=3, add=1, lut=1)
