"""QFlash's exp2 range reduction, as in the official kernel (``exp2_i32`` shift path).

Native input: the raw QK-unit distance ``t >= 0`` (no prescale); one QK unit is
``c`` octaves (QFlash's ``sm_scale``). Per-row constants, derived from ``c``:

* ``R = round(1/c)``: QK units per octave, and the integer for 1.0 in the output;
* ``exp_M = round(c * 2**mul_shift)`` (stored positive): fixed-point ``1/R``;
* ``u_max = (32 * 2**mul_shift - 1) // exp_M``: keeps ``q <= 31``.

Integer steps (int32): ``q = (t * exp_M) >> mul_shift`` (~ ``floor(t / R)``);
``r = q * R - t`` (in ``(-R, 0]`` when ``q`` is exact); ``e = ((r >> 1) + R) >> q``.

``exp_M`` carries only ``log2(exp_M)`` significant bits (about 3.6 for the
paper's benchmark scale), so ``q`` is sometimes one too large and ``r`` leaves
its interval; :meth:`error_bound` accounts for it. Deviation from the official
code, made so the result is always defined: ``R`` and ``exp_M`` are clamped to
at least 1 (the official constants become 0 for ``c > 2`` or ``c < 7.6e-6``).
"""
from __future__ import annotations

import numpy as np

from ..arrayops import NUMPY
from ..strategy import register
from .base import ErrorBound, ExpStrategy, OpCount, check_bits


@register("exp", "qflash_exp2")
class QFlashExp2(ExpStrategy):
    mul_shift: int = 16

    def _validate(self):
        check_bits(self, "mul_shift", 8, 24)

    def input_unit_octaves(self):
        return None  # raw QK units

    def u_max(self):
        return 2**31 - 1

    def row_constants(self, c, ops=NUMPY):
        c = ops.f64(c)
        R = ops.maximum(ops.rint(1.0 / c), 1.0)
        M = ops.maximum(ops.rint(c * 2.0**self.mul_shift), 1.0)
        u_max = ops.floor((32.0 * 2.0**self.mul_shift - 1.0) / M)
        return {"R": ops.i64(R), "exp_M": ops.i64(M), "u_max": ops.i64(u_max), "c": c}

    def requant_constants(self, p_max, consts, ops=NUMPY):
        """The official ``req_M = round(P_max * sm_scale * 2**16)``: derived from ``c``, not from
        ``R``, so ``P`` can reach ``P_max + 1`` at the row max (the pipeline clamps it)."""
        return ops.i64(ops.rint(p_max * ops.f64(consts["c"]) * 2.0**self.mul_shift)), self.mul_shift

    def one_upper_bound(self):
        return 2**31 - 1  # R = round(1/c) is unbounded for tiny scales

    def plan_one(self, consts=None):
        return consts["R"]

    def golden(self, u, consts=None):
        R, M = consts["R"], consts["exp_M"]
        t = np.asarray(u, dtype=np.int64)
        q = (t * M) >> self.mul_shift
        r = q * R - t
        return ((r >> 1) + R) >> q

    def error_bound(self, consts=None):
        """Worst case over rows of the closed-form ratio ``(1 - f/2) * 2**(c*R*(q+f) - q)``.

        With ``mu = exp_M / 2**mul_shift``, ``q = floor(t*mu)`` and ``f = t/R - q``
        lies in ``(t*(1/R - mu), t*(1/R - mu) + 1]`` (``f = -r/R``). The ratio of
        the result to ``R * 2**(-t*c)`` is evaluated on that band for every
        ``q`` (a smooth function of ``f``, maximised on a fine grid). abs: the
        floor of ``r >> 1`` (0.5 LSB) plus the final floor (1 LSB).
        """
        R = np.atleast_1d(np.asarray(consts["R"], dtype=np.float64)).ravel()
        M = np.atleast_1d(np.asarray(consts["exp_M"], dtype=np.float64)).ravel()
        c = np.broadcast_to(np.asarray(consts["c"], dtype=np.float64), np.broadcast_shapes(R.shape, np.shape(consts["c"]))).ravel()
        worst = 0.0
        for Ri, Mi, ci in {(a, b, d) for a, b, d in zip(R, M, c)}:
            mu = Mi / 2.0**self.mul_shift
            for q in range(32):
                # t with floor(t*mu) == q lies in [q/mu, (q+1)/mu); f = t/R - q on that range
                t = np.linspace(q / mu, (q + 1) / mu, 4097)
                f = t / Ri - q
                ratio = (1 - f / 2) * np.exp2(ci * t - q)
                ratio = ratio[(1 - f / 2) > 0]
                if ratio.size:
                    worst = max(worst, float(np.max(np.abs(ratio - 1))))
        return ErrorBound(rel=worst, abs_lsb=1.5)

    def op_count(self):
        return OpCount(mul=2, shift=3, add=2)
