"""The contract every integer exp strategy implements.

Pipeline position. The attention golden model hands an exp strategy the
non-negative distance ``t = m_ref - L`` of an integer logit ``L`` below the
row's reference max, in *QK units*: one unit is ``c`` octaves, with
``c = s_q * s_k * scale * log2(e)``. The strategy

1. declares its **native input unit** (:meth:`ExpStrategy.input_unit_octaves`),
   e.g. ``2**-14`` octaves; a shared fixed-point *prescale* converts
   ``t`` into native units ``u = min(round(t * c / unit), u_max)`` (one int64
   multiply by a 31-bit multiplier and a rounding shift);
2. evaluates ``e = golden(u) ~= one * 2**(-u * unit)`` with integer
   operations only, where ``one`` is the integer that stands for 1.0
   (``2**out_bits`` for fixed-point strategies).

Contract for ``golden``: ``u`` is an int64 array in ``[0, u_max]``; the result
is an int64 array in ``[0, 2**31)`` (every intermediate fits the width its
docstring states, int32 unless said otherwise), and it is monotone
non-increasing in ``u``. The error contract is :class:`ErrorBound`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from ..arrayops import NUMPY
from ..fixedpoint import fixed_multiplier
from ..strategy import Strategy

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@dataclasses.dataclass(frozen=True)
class ErrorBound:
    """``|e(u) - one * g(u)| <= rel * one * g(u) + abs_lsb`` for every ``u`` in the domain.

    ``g(u) = 2**(-u * unit)`` is the exact function; ``abs_lsb`` is in output LSBs.
    """

    rel: float
    abs_lsb: float

    def limit(self, exact_scaled):
        return self.rel * exact_scaled + self.abs_lsb


@dataclasses.dataclass(frozen=True)
class OpCount:
    """Integer operations per element (exp only; the shared prescale/requant are separate)."""

    mul: int = 0
    shift: int = 0
    add: int = 0  # add, sub, and, min/max, compare
    div: int = 0
    lut: int = 0

    @property
    def total(self) -> int:
        return self.mul + self.shift + self.add + self.div + self.lut

    def __add__(self, other: "OpCount") -> "OpCount":
        return OpCount(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class ExpPlan:
    """Integer constants of one exp strategy for given row scales (arrays broadcast over rows).

    pre_M, pre_shift: prescale multiplier, ``u = (t * pre_M + 2**(pre_shift-1)) >> pre_shift``.
    u_max: clamp of the native input (int64).
    one: integer value of 1.0 in the output (int64 array or int).
    consts: strategy-specific per-row integer constants (name -> int64 array).
    """

    pre_M: np.ndarray
    pre_shift: np.ndarray
    u_max: object
    one: object
    consts: dict


class ExpStrategy(Strategy):
    """Base class: an integer approximation of ``2**(-x)`` (or ``e**(-x)``) on ``x >= 0``."""

    #: False for float reference strategies, which the kernel does not compile.
    integer_only: ClassVar[bool] = True

    # -- what subclasses define -------------------------------------------------
    def input_unit_octaves(self) -> float | None:
        """Octaves per native input unit, or ``None`` for raw QK units (no prescale)."""
        raise NotImplementedError

    def u_max(self) -> int:
        """Largest native input; larger inputs are clamped to it (its output is 0 or ~0)."""
        raise NotImplementedError

    def one(self) -> int:
        """Integer value of 1.0 in the output."""
        return 2**self.out_bits

    def row_constants(self, c, ops=NUMPY) -> dict:
        """Per-row integer constants derived from ``c`` (octaves per QK unit). Default: none."""
        return {}

    def requant_constants(self, p_max: int, consts, ops=NUMPY):
        """``(req_M, req_shift)`` turning ``e`` (scale ``1/one``) into ``P`` (scale ``1/p_max``)."""
        return p_max, self.out_bits

    def golden(self, u, consts=None):
        """Integer-only evaluation; see the module docstring for the contract."""
        raise NotImplementedError

    def error_bound(self, consts=None) -> ErrorBound:
        raise NotImplementedError

    def op_count(self) -> OpCount:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------
    def exact(self, u, consts=None):
        """The float function approximated, scaled like the output: ``one * 2**(-u * unit)``."""
        return np.asarray(self.plan_one(consts), dtype=np.float64) * np.exp2(
            -np.asarray(u, dtype=np.float64) * self._unit(consts)
        )

    def _unit(self, consts):
        unit = self.input_unit_octaves()
        return unit if unit is not None else np.asarray(consts["c"], dtype=np.float64)

    def plan_one(self, consts=None):
        return self.one()

    def one_upper_bound(self) -> int:
        """Largest value ``one`` can take for any scale (for static overflow limits)."""
        return self.one()

    def plan(self, c, ops=NUMPY) -> ExpPlan:
        """Constants for rows whose QK unit is ``c`` octaves (float array or scalar)."""
        consts = self.row_constants(c, ops)
        unit = self.input_unit_octaves()
        if unit is None:  # native QK units: identity prescale
            pre_M, pre_shift = ops.i64(ops.f64(c) * 0 + 1), ops.i64(ops.f64(c) * 0)
            u_max = consts.get("u_max", self.u_max()) if consts else self.u_max()
        else:
            pre_M, pre_shift = fixed_multiplier(ops.f64(c) / unit, ops)
            u_max = self.u_max()
        return ExpPlan(pre_M, pre_shift, u_max, self.plan_one(consts), consts)

    def domain(self, consts=None) -> np.ndarray:
        """Every native input of the domain, ``0 .. u_max`` (for exhaustive sweeps)."""
        u_max = consts["u_max"] if consts and "u_max" in consts else self.u_max()
        return np.arange(int(np.max(u_max)) + 1, dtype=np.int64)


def prescale(t, plan: ExpPlan):
    """QK-unit distance ``t >= 0`` -> native input ``u`` (int64), clamped to ``plan.u_max``.

    ``t < 2**31`` and ``pre_M < 2**31`` so ``t * pre_M < 2**62`` fits int64.
    """
    t = np.asarray(t, dtype=np.int64)
    prod = t * plan.pre_M
    half = np.where(plan.pre_shift > 0, np.left_shift(np.int64(1), np.maximum(plan.pre_shift - 1, 0)), 0)
    return np.minimum(np.right_shift(prod + half, plan.pre_shift), plan.u_max)


def evaluate(strategy: ExpStrategy, t, plan: ExpPlan):
    """``e ~= one * 2**(-t * c)`` for QK-unit distances ``t >= 0``: prescale, then the strategy."""
    return strategy.golden(prescale(t, plan), plan.consts)


def linear_max_rel() -> float:
    """Max of ``(1 - f/2) * 2**f - 1`` on [0, 1], at ``f = 2 - 1/ln 2`` (the I-ViT line's error)."""
    f = 2 - 1 / LN2
    return (1 - f / 2) * 2**f - 1


def check_bits(strategy: Strategy, field: str, lo: int, hi: int) -> None:
    value = getattr(strategy, field)
    strategy._check(lo <= value <= hi, field, f"must be in [{lo}, {hi}]")


def ceil_log2(x: float) -> int:
    return math.ceil(math.log2(x))
