"""I-ViT Shiftmax exp: ``log2(e)`` by shifts, then the shift-linear exp2.

Native input: ``z >= 0`` in units of ``2**-frac_bits`` nats (``x = -z`` is the
I-ViT logit with scale ``S = 2**-F``; choosing a power-of-two ``S`` makes
I-ViT's ``x0 = floor(-1/S) = -2**F`` exact, so no per-octave drift).

Integer steps (F = frac_bits, E = out_bits, int32): ``x = -z``;
``x2 = x + (x >> 1) - (x >> 4)`` (``x * 1.4375``, vs ``log2 e = 1.4427``);
``q = (-x2) >> F``; ``r = x2 + (q << F)`` in ``(-2**F, 0]``;
``e = ((2**F + (r >> 1)) << (E - F)) >> q``. ``u_max = (E + 2) * 2**F``.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..strategy import register
from .base import LOG2E, ErrorBound, ExpStrategy, OpCount, check_bits, linear_max_rel

SHIFT_LOG2E = 1.4375  # 1 + 1/2 - 1/16


@register("exp", "shiftmax_exp")
class ShiftmaxExp(ExpStrategy):
    catalog: ClassVar[dict] = {"shiftmax": {}}
    search_space: ClassVar[dict] = {"frac_bits": range(6, 15)}
    frac_bits: int = 12
    out_bits: int = 15

    def _validate(self):
        check_bits(self, "frac_bits", 4, 20)
        check_bits(self, "out_bits", 2, 24)
        self._check(self.out_bits >= self.frac_bits, "out_bits", f"must be >= frac_bits = {self.frac_bits}")

    def input_unit_octaves(self):
        return LOG2E * 2.0**-self.frac_bits

    def u_max(self):
        return (self.out_bits + 2) << self.frac_bits

    def native_per_nat(self):
        return 2.0**self.frac_bits  # exact: the input is in 2**-F nats

    def golden(self, u, consts=None):
        F, E = self.frac_bits, self.out_bits
        x = -np.asarray(u, dtype=np.int64)
        x2 = x + (x >> 1) - (x >> 4)
        q = (-x2) >> F
        r = x2 + (q << F)
        return (((1 << F) + (r >> 1)) << (E - F)) >> q

    def error_bound(self, consts=None):
        """rel: line error times the slope error at the far end of the domain,
        ``(1 + linear) * 2**((log2e - 1.4375) * y_max) - 1`` with ``y_max`` the
        domain's largest input in nats; abs: floors of ``x>>1``, ``x>>4`` and
        ``r>>1`` (2 input LSB, i.e. at most ``2 * 2**-F * ln2`` relative, folded
        into rel) plus the final floor (1 LSB)."""
        y_max = self.u_max() * 2.0**-self.frac_bits
        slope = 2 ** ((LOG2E - SHIFT_LOG2E) * y_max)
        floors = 2 ** (2.5 * 2.0**-self.frac_bits) - 1
        return ErrorBound(rel=(1 + linear_max_rel()) * slope * (1 + floors) - 1, abs_lsb=1.0)

    def op_count(self):
        return OpCount(shift=6, add=4)
