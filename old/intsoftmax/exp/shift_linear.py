"""Shift-linear exp2 (I-ViT's core, as used by QFlash): ``2**-(q+f) ~= (1 - f/2) >> q``.

Native input: ``u >= 0`` in units of ``2**-frac_bits`` octaves. Split
``u = q * 2**F + f``; the integer part becomes a right shift and the
fractional part the line ``1 - f/2``, exact at both ends of the octave, so the
approximation is continuous and never below the true value.

Integer steps (F = frac_bits, E = out_bits, all int32):
``q = u >> F``; ``f = u & (2**F - 1)``; ``m = (2**(F+1) - f) << (E-F-1)``
(``m`` in ``(2**(E-1), 2**E]``); ``e = m >> q``. ``u_max = (E+1) * 2**F`` keeps
``q <= E+1 < 32``.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..strategy import register
from .base import ErrorBound, ExpStrategy, OpCount, check_bits, linear_max_rel


@register("exp", "shift_linear_exp2")
class ShiftLinearExp2(ExpStrategy):
    catalog: ClassVar[dict] = {"shift_linear": {}}
    search_space: ClassVar[dict] = {"frac_bits": range(4, 15)}
    frac_bits: int = 14
    out_bits: int = 15

    def _validate(self):
        check_bits(self, "frac_bits", 1, 20)
        check_bits(self, "out_bits", 2, 24)
        self._check(self.out_bits >= self.frac_bits + 1, "out_bits",
                    f"must be >= frac_bits + 1 = {self.frac_bits + 1} so the line 1 - f/2 is exact")

    def input_unit_octaves(self):
        return 2.0**-self.frac_bits

    def u_max(self):
        return (self.out_bits + 1) << self.frac_bits

    def golden(self, u, consts=None):
        F, E = self.frac_bits, self.out_bits
        u = np.asarray(u, dtype=np.int64)
        q = u >> F
        f = u & ((1 << F) - 1)
        m = ((1 << (F + 1)) - f) << (E - F - 1)
        return m >> q

    def error_bound(self, consts=None):
        # rel: the line's maximum over an octave; abs: the final floor shift (< 1 LSB).
        return ErrorBound(rel=linear_max_rel(), abs_lsb=1.0)

    def op_count(self):
        return OpCount(shift=3, add=2)
