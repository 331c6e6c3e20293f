"""The contract every integer exp strategy implements.

Pipeline position. The attention golden model hands an exp strategy the
non-negative distance ``t = m - L`` (int32) of an integer logit ``L`` below
the row's reference max ``m``, in *QK units*: one unit is ``c`` octaves, with
``c = s_q * s_k * scale * log2(e)``. The strategy either

* declares a **native input unit** (:meth:`ExpStrategy.input_unit_octaves`,
  e.g. ``2**-14`` octaves), and a shared 32-bit *prescale* converts ``t`` to
  native units (:func:`prescale`, one ``umulhi``), or
* works on raw QK units (``input_unit_octaves() is None``), with per-row
  integer constants derived from ``c`` (:meth:`ExpStrategy.row_constants`).

It then evaluates ``e = golden(u) ~= one * 2**(-u * unit)`` with integer
operations only; ``one`` is the integer that stands for 1.0.

Contract for ``golden``: ``u`` is an int64 array in ``[0, u_max]``; the result
is in ``[0, one]``, every intermediate fits int32 (the kernel's width), and the
result is non-increasing in ``u``. The error contract is :class:`ErrorBound`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from ..fixedpoint import INT32_MAX, fixed_multiplier, mulhi
from ..strategy import Strategy

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
#: Largest prescale ratio (native units per QK unit); larger ratios are clamped, which
#: changes nothing because one QK unit is then already beyond every ``u_max``.
PRESCALE_MAX = 2.0**27
#: Every strategy's ``u_max`` must stay below this (see :func:`prescale`).
U_MAX_LIMIT = 2**27


@dataclasses.dataclass(frozen=True)
class ErrorBound:
    """``|e(u) - one * g(u)| <= rel * one * g(u) + abs_lsb`` for every ``u`` in the domain.

    ``g(u) = 2**(-u * unit)`` is the exact function; ``abs_lsb`` is in output LSBs.
    """

    rel: float
    abs_lsb: float

    def limit(self, exact_scaled):
        return self.rel * np.asarray(exact_scaled, dtype=np.float64) + self.abs_lsb


@dataclasses.dataclass(frozen=True)
class OpCount:
    """Integer operations per element (exp only; the shared prescale/requant are separate)."""

    mul: int = 0
    shift: int = 0
    add: int = 0  # add, sub, and, min/max, compare, select
    div: int = 0
    lut: int = 0

    @property
    def total(self) -> int:
        return self.mul + self.shift + self.add + self.div + self.lut

    def __add__(self, other: "OpCount") -> "OpCount":
        return OpCount(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class ExpPlan:
    """Integer constants of one exp strategy for given rows (arrays broadcast over rows).

    Prescale (prescaled strategies; all None for raw ones), see :func:`prescale`:
    pre_M (multiplier, ``< 2**31``), pre_l / pre_r (left / right shifts, ``<= 30``),
    t_cap (clamp of ``t`` so ``t << pre_l`` fits int32).
    u_max: clamp of the native input. one: integer value of 1.0 in the output.
    consts: strategy-specific per-row integer constants (name -> int64 array).
    """

    pre_M: object
    pre_l: object
    pre_r: object
    t_cap: object
    u_max: object
    one: object
    consts: dict


class ExpStrategy(Strategy):
    """Base class: an integer approximation of ``2**(-x)`` (or ``e**(-x)``) on ``x >= 0``."""

    #: False for float reference strategies, which the kernel does not compile.
    integer_only: ClassVar[bool] = True
    #: True when the strategy produces ``P`` itself (:meth:`fused_p`): no separate requantization.
    fuses_requant: ClassVar[bool] = False
    #: Its entries in :func:`intsoftmax.select.catalog`: short label -> field values.
    catalog: ClassVar[dict] = {}
    #: Where :func:`intsoftmax.testing.exp_strategies` draws its fields: field -> a ``range`` of
    #: ints or a tuple of values (fields not named keep their defaults).
    search_space: ClassVar[dict] = {}

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

    def row_constants(self, c) -> dict:
        """Per-row integer constants derived from ``c`` (octaves per QK unit, float64). Default: none."""
        return {}

    def requant_shift(self) -> int:
        """The requantization's binary point ``req_shift`` (the same for every scale)."""
        return self.out_bits

    def requant_constants(self, p_max: int, consts):
        """``(req_M, req_shift)`` turning ``e`` (scale ``1/one``) into ``P`` (scale ``1/p_max``):
        ``P = min(p_max, (e * req_M + 2**(req_shift-1)) >> req_shift)``, ``e * req_M < 2**31``."""
        return p_max, self.requant_shift()

    def golden(self, u, consts=None):
        """Integer-only evaluation; see the module docstring for the contract."""
        raise NotImplementedError

    def kernel_row_constants(self, consts, p_max: int):
        """The two per-row integers the kernel's twin of this strategy reads (``EXP_C0``,
        ``EXP_C1`` of :mod:`qflash.table`); ``None`` where unused."""
        return None, None

    def fused_p(self, u, consts, p_max: int):
        """``P`` in ``[0, p_max]`` straight from the native input (strategies that fuse the
        requantization, ``fuses_requant``)."""
        raise NotImplementedError

    def error_bound(self, consts=None) -> ErrorBound:
        raise NotImplementedError

    def op_count(self) -> OpCount:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------
    def exact(self, u, consts=None):
        """The float function approximated, scaled like the output: ``one * 2**(-u * unit)``."""
        unit = self.input_unit_octaves()
        unit = np.asarray(consts["c"], dtype=np.float64) if unit is None else unit
        return np.asarray(self.plan_one(consts), dtype=np.float64) * np.exp2(-np.asarray(u, np.float64) * unit)

    def plan_one(self, consts=None):
        """``one`` for given row constants (constant unless the strategy derives it per row)."""
        return self.one()

    def one_upper_bound(self) -> int:
        """Largest value ``one`` can take for any scale (for static overflow limits)."""
        return self.one()

    def min_octaves_per_unit(self) -> float:
        """The slowest decay the strategy's integer arithmetic expresses, in octaves per QK unit
        (0: any rate). Below it the exp decays at this rate whatever the scales say, so the lazy
        rule's headroom is capped at its octaves at this rate (:func:`intsoftmax.plan.headroom_limits`)."""
        return 0.0

    def native_per_nat(self) -> float | None:
        """Native input units per nat (the prescale's real factor), or None for raw strategies."""
        unit = self.input_unit_octaves()
        return None if unit is None else LOG2E / unit

    def plan(self, nat_unit) -> ExpPlan:
        """Constants for rows whose QK unit is ``nat_unit`` nats (float64 array or scalar)."""
        nat_unit = np.asarray(nat_unit, dtype=np.float64)
        k = self.native_per_nat()
        if k is None:
            consts = self.row_constants(nat_unit * LOG2E)
            u_max = consts.get("u_max", self.u_max())
            return ExpPlan(None, None, None, None, u_max, self.plan_one(consts), consts)
        ratio = np.minimum(nat_unit * k, PRESCALE_MAX)
        M, shift = fixed_multiplier(ratio)
        pre_l = np.maximum(32 - shift, 0)
        pre_r = np.maximum(shift - 32, 0)
        return ExpPlan(M, pre_l, pre_r, INT32_MAX >> pre_l, self.u_max(), self.one(), {})

    def domain(self, consts=None) -> np.ndarray:
        """Every native input of the domain, ``0 .. u_max`` (for exhaustive sweeps)."""
        u_max = consts["u_max"] if consts and "u_max" in consts else self.u_max()
        return np.arange(int(np.max(u_max)) + 1, dtype=np.int64)


def prescale(t, plan: ExpPlan):
    """QK-unit distance ``0 <= t < 2**31`` -> native input ``u`` (int64), clamped to ``plan.u_max``.

    ``u = min(mulhi(min(t, t_cap) << pre_l, pre_M) >> pre_r, u_max)``, i.e.
    ``floor(t * pre_M * 2**-shift)`` with ``shift = 32 - pre_l + pre_r``: all
    int32, one ``umulhi``. Clamping ``t`` to ``t_cap = (2**31 - 1) >> pre_l``
    is exact: when ``pre_l > 0``, ``u(t_cap) >= 2**29 - 2**26 > u_max``.
    Raw strategies: ``u = min(t, u_max)``.
    """
    t = np.asarray(t, dtype=np.int64)
    if plan.pre_M is None:
        return np.minimum(t, plan.u_max)
    u = mulhi(np.minimum(t, plan.t_cap) << plan.pre_l, plan.pre_M) >> plan.pre_r
    return np.minimum(u, plan.u_max)


def prescale_error_octaves(strategy: ExpStrategy) -> float:
    """Largest ``t * c - u * unit`` (octaves, never negative) for unclamped ``u``: the floor
    (one native unit) plus the multiplier's truncation (relative ``2**-30`` of ``t * c``,
    and ``t * c < (u_max + 1) * unit``). Zero for raw strategies."""
    unit = strategy.input_unit_octaves()
    return 0.0 if unit is None else unit * (1.0 + (strategy.u_max() + 1) * 2.0**-30)


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
