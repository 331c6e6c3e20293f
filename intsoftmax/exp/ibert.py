"""I-BERT i-exp: ``ln 2`` range reduction and a second-order polynomial.

Native input: ``z >= 0`` in units of ``S = 2**-frac_bits`` nats (``x = -z``).
Constants (from I-BERT's ``a p**2 + b p + c`` fit on ``[-ln 2, 0]``):
``x0 = floor(-ln2 / S)``, ``b_int = floor(b / (a S))``, ``c_int = floor(c / (a S**2))``.
``x0 * S != -ln 2``: each octave drifts by ``e**(|x0| S - ln 2)``, as in I-BERT.

Integer steps (F = frac_bits, E = out_bits):
``q = z // |x0|`` (division by a constant); ``r = q * |x0| - z`` in ``(x0, 0]``;
``poly = r * (r + b_int) + c_int`` (int32, scale ``a * S**2``);
``e = (poly * M_o + 2**(k_o + q - 1)) >> (k_o + q)`` (int64) where
``M_o * 2**-k_o ~= a * 2**(E - 2F)`` requantizes to ``2**-E`` (I-BERT uses a float
``QuantAct`` here; this is the integer equivalent). ``u_max = (E + 2) * |x0|``.
"""
from __future__ import annotations

import math

import numpy as np

from ..fixedpoint import fixed_multiplier
from ..strategy import register
from .base import LN2, LOG2E, ErrorBound, ExpStrategy, OpCount, check_bits

A, B, C = 0.35815147, 0.96963238, 1.0


@register("exp", "ibert_exp")
class IBertExp(ExpStrategy):
    frac_bits: int = 10
    out_bits: int = 15

    def _validate(self):
        check_bits(self, "frac_bits", 4, 11)  # poly = r(r + b_int) + c_int must fit int32
        check_bits(self, "out_bits", 2, 24)

    @property
    def x0(self) -> int:
        """``|x0| = -floor(-ln2 * 2**F)``: input units per (approximate) octave."""
        return -math.floor(-LN2 * 2**self.frac_bits)

    @property
    def poly_constants(self) -> tuple[int, int]:
        S = 2.0**-self.frac_bits
        return math.floor(B / (A * S)), math.floor(C / (A * S * S))

    @property
    def out_multiplier(self) -> tuple[int, int]:
        M, k = fixed_multiplier(A * 2.0 ** (self.out_bits - 2 * self.frac_bits))
        return int(M), int(k)

    def input_unit_octaves(self):
        return LOG2E * 2.0**-self.frac_bits

    def u_max(self):
        return (self.out_bits + 2) * self.x0

    def golden(self, u, consts=None):
        z = np.asarray(u, dtype=np.int64)
        x0 = self.x0
        b_int, c_int = self.poly_constants
        M, k = self.out_multiplier
        q = z // x0
        r = q * x0 - z
        poly = r * (r + b_int) + c_int
        s = k + q
        return (poly * M + (np.int64(1) << (s - 1))) >> s

    def error_bound(self, consts=None):
        """rel = (1 + poly) * (1 + drift) - 1: ``poly`` is the quadratic with the floored
        integer constants against ``e**p`` over the reduced interval (closed form,
        evaluated densely), ``drift = e**(q_max * (|x0| S - ln 2)) - 1`` over the
        ``q_max`` octaves that can give a non-zero result; abs: the requantizing
        multiplier's rounding (0.5 LSB) plus its ``2**-31`` relative error."""
        S = 2.0**-self.frac_bits
        b_int, c_int = self.poly_constants
        r = np.linspace(-self.x0, 0.0, 200001)
        approx = (r * (r + b_int) + c_int) * A * S * S
        poly = float(np.max(np.abs(approx / np.exp(r * S) - 1)))
        M, k = self.out_multiplier
        mult = abs(M * 2.0**-k / (A * 2.0 ** (self.out_bits - 2 * self.frac_bits)) - 1)
        q_max = self.out_bits + 1
        drift = math.exp(q_max * (self.x0 * S - LN2)) - 1
        return ErrorBound(rel=(1 + poly) * (1 + drift) * (1 + mult) - 1, abs_lsb=0.5)

    def op_count(self):
        return OpCount(mul=3, shift=1, add=4, div=1)
