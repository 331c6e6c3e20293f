"""Fixed-point minimax polynomial exp2: integer part as a shift, ``2**-f`` by Horner.

Native input: ``u >= 0`` in units of ``2**-frac_bits`` octaves, ``u = q * 2**F + f``.
The polynomial ``p(f) ~= 2**-f`` on ``[0, 1]`` minimises the maximum *relative*
error with ``p(0) = 1`` and ``p(1) = 1/2`` fixed: ``e(0) = one`` exactly, and the
result is continuous across octaves (so monotone: the octave shift never makes it
jump up). It is fitted as a linear programme with ``scipy.optimize.linprog`` on a
dense grid, then its coefficients are rounded to integers at scale ``2**E``.
Degree 1 is then exactly the I-ViT line ``1 - f/2``.

Integer steps (F = frac_bits, E = out_bits, int32): ``h = C_d``; for
``i = d-1 .. 0``: ``h = C_i + ((h * f + 2**(F-1)) >> F)``; ``e = h >> q``.
``|h| <= 2**(E+1)`` and ``f < 2**F`` so ``h * f`` fits int32 when ``E + F <= 30``.
"""
from __future__ import annotations

import functools

from typing import ClassVar

import numpy as np

from ..strategy import register
from .base import ErrorBound, ExpStrategy, OpCount, check_bits


def relative_minimax(f, y, degree: int) -> tuple[float, ...]:
    """Coefficients ``c_0 = 1, c_1..c_d`` of ``p(f) = 1 + c_1 f + .. + c_d f**d`` minimising
    ``max |p(f) / y - 1|`` over the grid ``f`` (from 0 to 1) with ``p(1) = y[-1]``: a linear
    programme (``scipy.optimize.linprog``, HiGHS)."""
    from scipy.optimize import linprog

    powers = np.stack([f**i for i in range(1, degree + 1)], axis=1)  # unknowns c_1..c_d, then t
    # |1 + powers @ c - y| <= t * y  ->  two inequality rows per grid point
    A_ub = np.block([[powers, -y[:, None]], [-powers, -y[:, None]]])
    b_ub = np.concatenate([y - 1.0, 1.0 - y])
    cost = np.zeros(degree + 1)
    cost[-1] = 1.0
    A_eq = np.concatenate([np.ones(degree), [0.0]])[None, :]
    res = linprog(cost, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[y[-1] - 1.0],
                  bounds=[(None, None)] * degree + [(0, None)], method="highs")
    if not res.success:  # pragma: no cover - HiGHS solves this small LP reliably
        raise RuntimeError(f"minimax fit failed: {res.message}")
    return (1.0, *map(float, res.x[:degree]))


@functools.lru_cache(maxsize=None)
def minimax_exp2_coefficients(degree: int, grid: int = 4097) -> tuple[float, ...]:
    """Real coefficients ``c_0 = 1, c_1..c_d`` of the relative-minimax fit of ``2**-f`` on [0, 1]
    with ``p(1) = 1/2`` (``c_1 + ... + c_d = -1/2``)."""
    f = np.linspace(0.0, 1.0, grid)
    return relative_minimax(f, np.exp2(-f), degree)


@register("exp", "poly_exp2")
class PolyExp2(ExpStrategy):
    catalog: ClassVar[dict] = {"poly2": {"degree": 2}, "poly3": {"degree": 3}, "poly4": {"degree": 4}}
    search_space: ClassVar[dict] = {"degree": range(1, 5), "frac_bits": range(8, 16)}
    degree: int = 3
    frac_bits: int = 14
    out_bits: int = 15

    def _validate(self):
        check_bits(self, "degree", 1, 4)
        check_bits(self, "frac_bits", 1, 20)
        check_bits(self, "out_bits", 2, 24)
        self._check(self.out_bits + self.frac_bits <= 30, "out_bits",
                    f"out_bits + frac_bits must be <= 30 so Horner products fit int32 (frac_bits={self.frac_bits})")

    @property
    def coefficients(self) -> tuple[int, ...]:
        """Integer Horner coefficients ``C_i = round(c_i * 2**E)``, ``C_0 = 2**E``."""
        return tuple(int(round(c * 2**self.out_bits)) for c in minimax_exp2_coefficients(self.degree))

    def input_unit_octaves(self):
        return 2.0**-self.frac_bits

    def u_max(self):
        return (self.out_bits + 1) << self.frac_bits

    def golden(self, u, consts=None):
        F = self.frac_bits
        u = np.asarray(u, dtype=np.int64)
        q = u >> F
        f = u & ((1 << F) - 1)
        coefs = self.coefficients
        h = np.full_like(u, coefs[-1])
        for c in coefs[-2::-1]:
            h = c + ((h * f + (1 << (F - 1))) >> F)
        return h >> q

    def error_bound(self, consts=None):
        """rel: the integer-coefficient polynomial against ``2**-f`` (dense grid of a smooth
        function). abs: Horner's ``degree`` rounding shifts add at most 0.5 LSB each (later
        stages multiply earlier errors by ``f < 1``); the final ``>> q`` divides that by
        ``2**q`` and floors (``< 1 - 2**-q``), so the total is at most ``max(degree / 2, 1)``."""
        f = np.linspace(0.0, 1.0, 200001)
        coefs = np.array(self.coefficients, dtype=np.float64) / 2**self.out_bits
        p = np.polyval(coefs[::-1], f)
        rel = float(np.max(np.abs(p / np.exp2(-f) - 1)))
        return ErrorBound(rel=rel, abs_lsb=max(0.5 * self.degree, 1.0))

    def op_count(self):
        return OpCount(mul=self.degree, shift=self.degree + 2, add=2 * self.degree + 1)
