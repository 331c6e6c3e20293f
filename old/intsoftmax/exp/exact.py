"""Exact exp (float64), rounded to the output grid: the reference strategy.

Not integer-only: it exists so analyses can separate the cost of an exp
approximation from everything else in a recipe. The kernel does not compile it.
Native input: raw QK units (no prescale); ``e = rint(2**E * 2**(-t * c))``.
"""
from __future__ import annotations

import numpy as np

from ..strategy import register
from .base import ErrorBound, ExpStrategy, OpCount, check_bits


@register("exp", "exact_exp")
class ExactExp(ExpStrategy):
    integer_only = False
    out_bits: int = 15

    def _validate(self):
        check_bits(self, "out_bits", 2, 30)

    def input_unit_octaves(self):
        return None

    def u_max(self):
        return 2**31 - 1

    def row_constants(self, c):
        c = np.asarray(c, dtype=np.float64)
        # beyond out_bits + 2 octaves the rounded result is 0
        return {"c": c, "u_max": np.minimum(np.ceil((self.out_bits + 2) / c), 2.0**31 - 1).astype(np.int64)}

    def golden(self, u, consts=None):
        t = np.asarray(u, dtype=np.float64)
        return np.rint(2.0**self.out_bits * np.exp2(-t * consts["c"])).astype(np.int64)

    def error_bound(self, consts=None):
        return ErrorBound(rel=0.0, abs_lsb=0.5)

    def op_count(self):
        return OpCount()  # a float exp: not counted in integer ops
