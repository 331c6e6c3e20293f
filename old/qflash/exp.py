"""Triton twins of the integer exp strategies in :mod:`intsoftmax.exp`, in a registry.

Each ``@triton.jit`` helper below is the kernel-side version of one golden model, written in the
same integer steps (int32 here, int64 arrays there), registered under its strategy's ``kind``
with :func:`twin` and checked against it over the whole input domain by
``tests/test_kernel_exp.py``. The kernel template takes the helper itself as a constexpr
(``EXP_FN``) with its arguments (``EXP_ARGS``): there is no dispatch chain, and a new strategy
is its golden class plus one registered twin.

Twin signature: ``(u, rc0, rc1, table, ARGS)`` with ``u`` the native input (int32,
``0 <= u <= u_max``), ``rc0, rc1`` per-row integer constants (QFlash's ``R`` and ``exp_M``, the
fused exp's multiplier ``M``; unused elsewhere), ``table`` a pointer (the LUT) and ``ARGS`` the
constexpr tuple its ``args(strategy)`` builds.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import triton
import triton.language as tl

from intsoftmax.exp.fused import guard_bits

from .ptx import mul_wide, shr_clamp
from .rows import fused_row_args, fused_rows, prescaled_row_args, prescaled_rows, qflash_row_args, qflash_rows


@dataclasses.dataclass(frozen=True)
class Twin:
    """A strategy's kernel side: ``fn`` (the ``@triton.jit`` twin of its exp) and ``args``
    (strategy -> its constexpr tuple); ``rows`` and ``row_args`` (strategy, p_max -> constexprs):
    the device derivation of its per-row constants (:mod:`qflash.rows`; by default the shared
    prescale's); ``gathers``: it reads a table (Triton's pipeliner rejects the gathers)."""

    fn: object
    args: Callable
    gathers: bool = False
    rows: object = prescaled_rows
    row_args: Callable = prescaled_row_args


#: strategy kind -> its Triton twin
TWINS: dict[str, Twin] = {}


def twin(kind: str, args: Callable, gathers: bool = False, rows=prescaled_rows, row_args: Callable = prescaled_row_args):
    """Register the decorated ``@triton.jit`` helper as the twin of the exp strategy ``kind``, with
    the device derivation of its row constants (``rows``, ``row_args``; see :class:`Twin`)."""
    def register(fn):
        if kind in TWINS:
            raise ValueError(f"duplicate Triton twin for exp strategy kind {kind!r}")
        TWINS[kind] = Twin(fn, args, gathers, rows, row_args)
        return fn
    return register


def exp_twin(strategy) -> Twin:
    """The registered twin of an integer exp strategy; ``TypeError`` for others."""
    found = TWINS.get(getattr(strategy, "kind", None))
    if found is None:
        raise TypeError(f"the qflash kernel has no integer exp for {strategy.name}; "
                        f"use one of the integer strategies with a Triton twin: {sorted(TWINS)}")
    return found


def exp_spec(strategy) -> tuple[str, tuple]:
    """``(kind, ARGS)``: the registry key and constexpr arguments of an integer exp strategy."""
    return strategy.kind, exp_twin(strategy).args(strategy)


@twin("exact_exp", lambda s: (), row_args=lambda s, p_max: ())
@triton.jit
def exact_exp2(u, rc0, rc1, table, ARGS: tl.constexpr):
    """:class:`intsoftmax.ExactExp` in the kernel: ``2**u`` in float32 on float ``u <= 0``. ExactExp
    is not integer-only, so no integer recipe compiles it; the float softmax baseline
    (:class:`intsoftmax.FloatSoftmax`, the kernel's ``FLOAT_SOFTMAX``) evaluates its exp with it."""
    return tl.math.exp2(u)


@twin("shift_linear_exp2", lambda s: (s.frac_bits, s.out_bits))
@triton.jit
def shift_linear_exp2(u, rc0, rc1, table, ARGS: tl.constexpr):
    """:class:`intsoftmax.ShiftLinearExp2`: ``((2**(F+1) - f) << (E-F-1)) >> q``; ``ARGS = (F, E)``."""
    F: tl.constexpr = ARGS[0]
    E: tl.constexpr = ARGS[1]
    q = u >> F
    f = u & ((1 << F) - 1)
    return (((1 << (F + 1)) - f) << (E - F - 1)) >> q


@twin("shiftmax_exp", lambda s: (s.frac_bits, s.out_bits))
@triton.jit
def shiftmax_exp(u, rc0, rc1, table, ARGS: tl.constexpr):
    """:class:`intsoftmax.ShiftmaxExp`: ``x * 1.4375`` by shifts, then the shift-linear exp2; ``ARGS = (F, E)``."""
    F: tl.constexpr = ARGS[0]
    E: tl.constexpr = ARGS[1]
    x = -u
    x2 = x + (x >> 1) - (x >> 4)
    q = (-x2) >> F
    r = x2 + (q << F)
    return (((1 << F) + (r >> 1)) << (E - F)) >> q


def _ibert_args(s) -> tuple:
    (b, c), (m, _), (s1, s2) = s.poly_constants, s.out_multiplier, s.shifts
    return (s.x0, b, c, m, s1, s2)


@twin("ibert_exp", _ibert_args)
@triton.jit
def ibert_exp(u, rc0, rc1, table, ARGS: tl.constexpr):
    """:class:`intsoftmax.IBertExp`: ``ln 2`` reduction, ``r (r + b) + c``, ``umulhi`` requantization;
    ``ARGS = (x0, b, c, M, s1, s2)``."""
    X0: tl.constexpr = ARGS[0]
    q = u // X0
    r = q * X0 - u
    poly = r * (r + ARGS[1]) + ARGS[2]
    s = ARGS[5] + q
    return (tl.umulhi(poly << ARGS[4], ARGS[3]) + (1 << (s - 1))) >> s


@twin("poly_exp2", lambda s: (s.frac_bits, s.degree, *s.coefficients))
@triton.jit
def poly_exp2(u, rc0, rc1, table, ARGS: tl.constexpr):
    """:class:`intsoftmax.PolyExp2`: Horner on the fraction; ``ARGS = (F, d, C_0, .., C_d)``."""
    F: tl.constexpr = ARGS[0]
    DEG: tl.constexpr = ARGS[1]
    q = u >> F
    f = u & ((1 << F) - 1)
    h = tl.zeros_like(u) + ARGS[2 + DEG]
    for i in tl.static_range(DEG):
        # == C_i + ((h * f + 2**(F-1)) >> F), exactly (C_i * 2**F is a multiple of 2**F): one IMAD, one shift
        h = (h * f + ((ARGS[1 + DEG - i] << F) + (1 << (F - 1)))) >> F
    return h >> q


@twin("lut_exp2", lambda s: (s.frac_bits, s.index_bits, s.interpolate), gathers=True)
@triton.jit
def lut_exp2(u, rc0, rc1, table, ARGS: tl.constexpr):
    """:class:`intsoftmax.LutExp2`: table on the top ``K`` fraction bits, optional interpolation;
    ``ARGS = (F, K, interpolate)``."""
    F: tl.constexpr = ARGS[0]
    K: tl.constexpr = ARGS[1]
    q = u >> F
    f = u & ((1 << F) - 1)
    idx = f >> (F - K)
    lo = tl.load(table + idx)
    if ARGS[2]:
        rem = f & ((1 << (F - K)) - 1)
        hi = tl.load(table + idx + 1)
        lo = lo - (((lo - hi) * rem + ((1 << (F - K)) >> 1)) >> (F - K))
    return lo >> q


@twin("qflash_exp2", lambda s: (s.mul_shift,), rows=qflash_rows, row_args=qflash_row_args)
@triton.jit
def qflash_exp2(u, rc0, rc1, table, ARGS: tl.constexpr):
    """:class:`intsoftmax.QFlashExp2` with ``rc0 = R``, ``rc1 = exp_M``: ``q = (t * exp_M) >> 16``,
    ``max((r >> 1) + R, 0) >> q``; ``ARGS = (mul_shift,)``."""
    q = (u * rc1) >> ARGS[0]
    r = q * rc0 - u
    return tl.maximum((r >> 1) + rc0, 0) >> q


@triton.jit
def fused_y(t, M, ARGS: tl.constexpr, PTX: tl.constexpr):
    """:class:`intsoftmax.FusedExp2` steps 1-3 up to ``y = y0 >> q`` for distances ``t >= 0``
    (int32) and the row multiplier ``M`` (uint32 bits); ``P = (y + 1) >> 1``.
    ``ARGS = (F, R, C_d, K_{d-1}, .., K_0)`` (:func:`fused_args`)."""
    F: tl.constexpr = ARGS[0]
    R: tl.constexpr = ARGS[1]
    DEG: tl.constexpr = len(ARGS) - 3
    x = mul_wide(t, M, True, PTX)
    q = (x >> 32).to(tl.int32)
    f = (x.to(tl.uint32) >> (32 - F)).to(tl.int32)
    h = tl.zeros_like(f) + ARGS[2]
    for i in tl.static_range(DEG - 1):
        h = (h * f + ARGS[3 + i]) >> F
    return shr_clamp((h * f + ARGS[2 + DEG]) >> (F + R - 1), q, PTX)  # the last step keeps one guard bit


def fused_args(strategy, top: int) -> tuple:
    """``(F, R, C_d, K_{d-1}, .., K_0)``: the constexprs of :class:`intsoftmax.FusedExp2` at output scale ``top``."""
    return (strategy.frac_bits, guard_bits(top), *strategy.coefficients(top))


@twin("fused_exp2", lambda s: fused_args(s, s.one()), rows=fused_rows, row_args=fused_row_args)
@triton.jit
def fused_exp2(u, rc0, rc1, table, ARGS: tl.constexpr):
    """:class:`intsoftmax.FusedExp2` at the scale of ``ARGS`` from distances ``0 <= u <= t_cap`` and
    the row multiplier ``rc0 = M`` (the rescale factor of online rules, and the exhaustive test)."""
    return (fused_y(u, rc0, ARGS, False) + 1) >> 1
