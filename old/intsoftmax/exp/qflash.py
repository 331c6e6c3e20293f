"""QFlash's exp2 range reduction, as in the official kernel (``exp2_i32`` shift path).

Native input: the raw QK-unit distance ``t >= 0`` (no prescale); one QK unit is
``c`` octaves (QFlash's ``sm_scale``). Per-row constants, derived from ``c``:

* ``R = round(1/c)``: QK units per octave, and the integer for 1.0 in the output;
* ``exp_M = round(c * 2**mul_shift)``: fixed-point ``1/R``;
* ``u_max = (32 * 2**mul_shift - 1) // exp_M``: keeps ``q <= 31``.

Integer steps (int32): ``q = (t * exp_M) >> mul_shift`` (~ ``floor(t / R)``);
``r = q * R - t`` (in ``(-R, 0]`` when ``q`` is exact); ``e = max((r >> 1) + R, 0) >> q``.

``exp_M`` carries only ``log2(exp_M)`` significant bits (about 3.6 for the
paper's benchmark scale), so ``q`` is often off by one and ``r`` leaves its
interval; :meth:`QFlashExp2.error_bound` accounts for it. Deviations from the
official code, each so that the result stays defined and inside int32:
``R`` is clamped to ``[1, 2**25]``, ``c`` to at most 16 and ``exp_M`` and ``req_M`` to at least 1 (the
official constants become 0 for ``c > 2`` or ``c < 7.6e-6``, and ``c < 6e-8``); ``e`` is clamped at 0
(an underestimated ``q`` can make ``(r >> 1) + R`` negative); ``req_M`` is
clamped where ``P`` saturates anyway; and ``P`` is clamped to ``P_max`` where
the official kernel wraps 128 to -128 (see ``requant_constants``).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..fixedpoint import round_half_up
from ..strategy import register
from .base import ErrorBound, ExpStrategy, OpCount, check_bits

R_MAX = 2**25
#: ``c`` is clamped here for ``exp_M`` (``<= 2**20``): one QK unit is then 16 octaves, so every
#: ``t >= 1`` already gives ``e = 0`` and the clamp changes no result.
C_MAX = 16.0


@register("exp", "qflash_exp2")
class QFlashExp2(ExpStrategy):
    catalog: ClassVar[dict] = {"qflash_exp2": {}}
    mul_shift: int = 16

    def _validate(self):
        check_bits(self, "mul_shift", 8, 24)

    def input_unit_octaves(self):
        return None  # raw QK units

    def u_max(self):
        return 2**31 - 1

    def row_constants(self, c):
        c = np.asarray(c, dtype=np.float64)
        with np.errstate(divide="ignore"):
            R = np.clip(round_half_up(1.0 / c), 1.0, R_MAX).astype(np.int64)
        M = np.maximum(round_half_up(np.minimum(c, C_MAX) * 2.0**self.mul_shift), 1.0).astype(np.int64)
        u_max = (32 * 2**self.mul_shift - 1) // M
        return {"R": R, "exp_M": M, "u_max": u_max, "c": c}

    def requant_shift(self):
        return self.mul_shift

    def min_octaves_per_unit(self):
        """``exp_M >= 1`` counts octaves at ``2**-mul_shift`` per unit at least (tiny scales)."""
        return 2.0**-self.mul_shift

    def kernel_row_constants(self, consts, p_max):
        return consts["R"], consts["exp_M"]

    def requant_constants(self, p_max, consts):
        """The official ``req_M = round(P_max * sm_scale * 2**16)``: derived from ``c``, not from
        ``R``, so ``P`` can reach ``P_max + 1`` at the row max (the pipeline clamps it).
        Clamped to ``(P_max + 1) * 2**mul_shift``, beyond which ``P`` saturates for every ``e >= 1``,
        and to at least 1: the official constant is 0 for ``c < 6e-8`` (tiny scales), where every
        ``P`` would be 0 and a live row's output 0; with 1 the row max keeps ``P = P_max``
        (``R = round(1/c) >= 2**23`` there)."""
        c = np.asarray(consts["c"], dtype=np.float64)
        cap = float((p_max + 1) << self.mul_shift)
        req_M = round_half_up(np.minimum(p_max * np.minimum(c, C_MAX) * 2.0**self.mul_shift, cap))
        return np.maximum(req_M, 1.0).astype(np.int64), self.requant_shift()

    def one_upper_bound(self):
        return R_MAX

    def plan_one(self, consts=None):
        return consts["R"]

    def golden(self, u, consts=None):
        R, M = consts["R"], consts["exp_M"]
        t = np.asarray(u, dtype=np.int64)
        q = (t * M) >> self.mul_shift
        r = q * R - t
        return np.maximum((r >> 1) + R, 0) >> q

    def error_bound(self, consts=None):
        """Worst case over rows of the ratio ``max(1 - f/2, 0) * 2**(c*R*(q+f) - q)``.

        With ``mu = exp_M / 2**mul_shift``, ``q = floor(t*mu)`` and ``f = t/R - q``:
        the result is ``R * max(1 - f/2, 0) * 2**-q`` before floors and the exact value
        is ``R * 2**(-t*c)``. Their ratio is a smooth function of ``t`` on each
        interval ``[q/mu, (q+1)/mu)``, maximised on a fine grid. abs: the floor of
        ``r >> 1`` (0.5 LSB) divided by ``2**q``, plus the final floor (``< 1 - 2**-q``): 1 LSB.
        """
        R = np.atleast_1d(np.asarray(consts["R"], dtype=np.float64)).ravel()
        M = np.atleast_1d(np.asarray(consts["exp_M"], dtype=np.float64)).ravel()
        c = np.broadcast_to(np.asarray(consts["c"], dtype=np.float64), np.shape(consts["R"])).ravel()
        worst = 0.0
        for Ri, Mi, ci in {(a, b, d) for a, b, d in zip(R, M, c)}:
            mu = Mi / 2.0**self.mul_shift
            for q in range(32):
                t = np.linspace(q / mu, (q + 1) / mu, 4097)
                f = t / Ri - q
                ratio = np.maximum(1 - f / 2, 0) * np.exp2(ci * t - q)
                worst = max(worst, float(np.max(np.abs(ratio - 1))))
        return ErrorBound(rel=worst, abs_lsb=1.0)

    def op_count(self):
        return OpCount(mul=2, shift=3, add=3)
