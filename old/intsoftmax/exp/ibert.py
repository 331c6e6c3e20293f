"""I-BERT i-exp: ``ln 2`` range reduction and a second-order polynomial.

Native input: ``z >= 0`` in units of ``S = 2**-frac_bits`` nats (``x = -z``).
Constants (from I-BERT's ``a p**2 + b p + c`` fit on ``[-ln 2, 0]``):
``x0 = floor(-ln2 / S)``, ``b_int = floor(b / (a S))``, ``c_int = floor(c / (a S**2))``.
``x0 * S != -ln 2``: each octave drifts by ``e**(|x0| S - ln 2)``, as in I-BERT.

Integer steps (F = frac_bits, E = out_bits, all int32):
``q = z // |x0|`` (division by a compile-time constant); ``r = q * |x0| - z`` in ``(x0, 0]``;
``poly = r * (r + b_int) + c_int`` (scale ``a * S**2``, ``0 < poly <= c_int``);
requantize to ``2**-E`` with the multiplier ``M * 2**-k ~= a * 2**(E - 2F)``:
``h = umulhi(poly << s1, M)`` (``s1`` puts ``poly`` just below ``2**30``), then
``e = (h + 2**(s2 - 1)) >> s2`` with ``s2 = k + q - 32 + s1``.
I-BERT uses a float ``QuantAct`` for this requantization; this is the integer
equivalent. ``u_max = (E + 2) * |x0|``.
"""
from __future__ import annotations

import math

from typing import ClassVar

import numpy as np

from ..fixedpoint import fixed_multiplier, mulhi
from ..strategy import register
from .base import LN2, ErrorBound, ExpStrategy, OpCount, check_bits

A, B, C = 0.35815147, 0.96963238, 1.0


@register("exp", "ibert_exp")
class IBertExp(ExpStrategy):
    catalog: ClassVar[dict] = {"ibert": {}}
    search_space: ClassVar[dict] = {"frac_bits": range(8, 11)}
    frac_bits: int = 10
    out_bits: int = 15

    def _validate(self):
        check_bits(self, "frac_bits", 4, 11)  # poly = r(r + b_int) + c_int must fit int32
        check_bits(self, "out_bits", 2, 24)
        s2_max = self.shifts[1] + self.out_bits + 2
        self._check(self.shifts[1] >= 1 and s2_max <= 31, "out_bits",
                    f"gives requantization shifts {self.shifts[1]}..{s2_max}, outside [1, 31]; "
                    "use out_bits closer to 2 * frac_bits - 5")

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

    @property
    def shifts(self) -> tuple[int, int]:
        """``(s1, s2 at q = 0)``: ``poly << s1 < 2**30``; ``s2 = k - 32 + s1 (+ q)``."""
        s1 = 30 - self.poly_constants[1].bit_length()
        return s1, self.out_multiplier[1] - 32 + s1

    def input_unit_octaves(self):
        return 2.0**-self.frac_bits / LN2

    def u_max(self):
        return (self.out_bits + 2) * self.x0

    def native_per_nat(self):
        return 2.0**self.frac_bits  # exact: the input is in 2**-F nats

    def golden(self, u, consts=None):
        z = np.asarray(u, dtype=np.int64)
        x0 = self.x0
        b_int, c_int = self.poly_constants
        M, _ = self.out_multiplier
        s1, s2 = self.shifts
        q = z // x0
        r = q * x0 - z
        poly = r * (r + b_int) + c_int
        s = s2 + q
        return (mulhi(poly << s1, M) + (np.int64(1) << (s - 1))) >> s

    def error_bound(self, consts=None):
        """rel = (1 + poly) * (1 + drift) * (1 + mult) - 1: ``poly`` is the quadratic with the
        floored integer constants against ``e**p`` on the reduced interval (dense grid of a
        smooth function), ``drift = e**(q_max * (|x0| S - ln 2)) - 1`` over the ``q_max = E + 1``
        octaves with a non-zero result, ``mult = 2**-30`` the multiplier's truncation;
        abs: the final rounding (0.5 LSB) plus the ``umulhi`` floor (``2**-s2`` LSB, <= 0.5)."""
        S = 2.0**-self.frac_bits
        b_int, c_int = self.poly_constants
        r = np.linspace(-self.x0, 0.0, 200001)
        approx = (r * (r + b_int) + c_int) * A * S * S
        poly = float(np.max(np.abs(approx / np.exp(r * S) - 1)))
        drift = math.exp((self.out_bits + 1) * (self.x0 * S - LN2)) - 1
        return ErrorBound(rel=(1 + poly) * (1 + drift) * (1 + 2.0**-30) - 1, abs_lsb=0.5 + 2.0**-self.shifts[1])

    def op_count(self):
        return OpCount(mul=3, shift=3, add=5, div=1)
