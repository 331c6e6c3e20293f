"""Triton twins of the integer exp strategies in :mod:`intsoftmax.exp`.

Each ``@triton.jit`` helper below is the kernel-side version of one golden model,
written in the same integer steps (int32 here, int64 arrays there) and checked
against it over the whole input domain by ``tests/test_kernel_exp.py``.
:func:`exp_spec` maps a strategy object to the constexprs that select and
parameterise its helper inside the kernel template.

Helper signature: ``(u, rc0, rc1, table)`` with ``u`` the native input (int32,
``0 <= u <= u_max``), ``rc0, rc1`` per-row integer constants (QFlash's ``R`` and
``exp_M``; unused elsewhere) and ``table`` a pointer (the LUT), then constexprs.
"""
from __future__ import annotations

import triton
import triton.language as tl

from intsoftmax.exp import FusedExp2, IBertExp, LutExp2, PolyExp2, QFlashExp2, ShiftLinearExp2, ShiftmaxExp
from intsoftmax.exp.fused import guard_bits

from .ptx import mul_wide, shr_clamp

# strategy kinds (constexpr globals, so the kernel can compare against them)
SHIFT_LINEAR, SHIFTMAX, IBERT, POLY, LUT, QFLASH, FUSED = (tl.constexpr(i) for i in range(7))


@triton.jit
def shift_linear_exp2(u, F: tl.constexpr, E: tl.constexpr):
    """:class:`intsoftmax.ShiftLinearExp2`: ``((2**(F+1) - f) << (E-F-1)) >> q``."""
    q = u >> F
    f = u & ((1 << F) - 1)
    return (((1 << (F + 1)) - f) << (E - F - 1)) >> q


@triton.jit
def shiftmax_exp(u, F: tl.constexpr, E: tl.constexpr):
    """:class:`intsoftmax.ShiftmaxExp`: ``x * 1.4375`` by shifts, then the shift-linear exp2."""
    x = -u
    x2 = x + (x >> 1) - (x >> 4)
    q = (-x2) >> F
    r = x2 + (q << F)
    return (((1 << F) + (r >> 1)) << (E - F)) >> q


@triton.jit
def ibert_exp(u, X0: tl.constexpr, B: tl.constexpr, C: tl.constexpr, M: tl.constexpr, S1: tl.constexpr,
              S2: tl.constexpr):
    """:class:`intsoftmax.IBertExp`: ``ln 2`` reduction, ``r (r + b) + c``, ``umulhi`` requantization."""
    q = u // X0
    r = q * X0 - u
    poly = r * (r + B) + C
    s = S2 + q
    return (tl.umulhi(poly << S1, M) + (1 << (s - 1))) >> s


@triton.jit
def poly_exp2(u, ARGS: tl.constexpr):
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


@triton.jit
def lut_exp2(u, table, F: tl.constexpr, K: tl.constexpr, INTERPOLATE: tl.constexpr):
    """:class:`intsoftmax.LutExp2`: table on the top ``K`` fraction bits, optional interpolation."""
    q = u >> F
    f = u & ((1 << F) - 1)
    idx = f >> (F - K)
    lo = tl.load(table + idx)
    if INTERPOLATE:
        rem = f & ((1 << (F - K)) - 1)
        hi = tl.load(table + idx + 1)
        lo = lo - (((lo - hi) * rem + ((1 << (F - K)) >> 1)) >> (F - K))
    return lo >> q


@triton.jit
def qflash_exp2(u, R, EXP_M, MUL_SHIFT: tl.constexpr):
    """:class:`intsoftmax.QFlashExp2`: ``q = (t * exp_M) >> 16``, ``max((r >> 1) + R, 0) >> q``."""
    q = (u * EXP_M) >> MUL_SHIFT
    r = q * R - u
    return tl.maximum((r >> 1) + R, 0) >> q


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


@triton.jit
def fused_exp2(u, M, ARGS: tl.constexpr):
    """:class:`intsoftmax.FusedExp2` at the scale of ``ARGS`` from distances ``0 <= u <= t_cap``
    (the rescale factor of online rules, and the exhaustive test)."""
    return (fused_y(u, M, ARGS, False) + 1) >> 1


@triton.jit
def exp_int(u, rc0, rc1, table, KIND: tl.constexpr, ARGS: tl.constexpr):
    """Dispatch to the strategy selected by ``KIND`` (constexpr: resolved at compile time)."""
    if KIND == SHIFT_LINEAR:
        e = shift_linear_exp2(u, ARGS[0], ARGS[1])
    elif KIND == SHIFTMAX:
        e = shiftmax_exp(u, ARGS[0], ARGS[1])
    elif KIND == IBERT:
        e = ibert_exp(u, ARGS[0], ARGS[1], ARGS[2], ARGS[3], ARGS[4], ARGS[5])
    elif KIND == POLY:
        e = poly_exp2(u, ARGS)
    elif KIND == LUT:
        e = lut_exp2(u, table, ARGS[0], ARGS[1], ARGS[2])
    elif KIND == QFLASH:
        e = qflash_exp2(u, rc0, rc1, ARGS[0])
    else:
        e = fused_exp2(u, rc0, ARGS)
    return e


def exp_spec(strategy) -> tuple[int, tuple]:
    """``(KIND, ARGS)`` constexprs for an integer exp strategy; ``TypeError`` for others."""
    if isinstance(strategy, ShiftLinearExp2):
        return SHIFT_LINEAR, (strategy.frac_bits, strategy.out_bits)
    if isinstance(strategy, ShiftmaxExp):
        return SHIFTMAX, (strategy.frac_bits, strategy.out_bits)
    if isinstance(strategy, IBertExp):
        (b, c), (m, _), (s1, s2) = strategy.poly_constants, strategy.out_multiplier, strategy.shifts
        return IBERT, (strategy.x0, b, c, m, s1, s2)
    if isinstance(strategy, PolyExp2):
        return POLY, (strategy.frac_bits, strategy.degree, *strategy.coefficients)
    if isinstance(strategy, LutExp2):
        return LUT, (strategy.frac_bits, strategy.index_bits, strategy.interpolate)
    if isinstance(strategy, QFlashExp2):
        return QFLASH, (strategy.mul_shift,)
    if isinstance(strategy, FusedExp2):
        return FUSED, fused_args(strategy, strategy.one())
    raise TypeError(f"the qflash kernel has no integer exp for {strategy.name}; "
                    "use one of the integer strategies in intsoftmax.available_strategies('exp')")


def fused_args(strategy: FusedExp2, top: int) -> tuple:
    """``(F, R, C_d, K_{d-1}, .., K_0)``: the constexprs of :class:`intsoftmax.FusedExp2` at output scale ``top``."""
    return (strategy.frac_bits, guard_bits(top), *strategy.coefficients(top))
