"""Each exp strategy's per-row integer constants, derived on the device from a row's QK unit.

The twins of :meth:`intsoftmax.exp.ExpStrategy.plan` (and of the strategies' ``row_constants``),
registered with their strategy's Triton twin (:func:`qflash.exp.twin`) and called by the
constant-table kernel (:mod:`qflash.quantize`). Signature: ``(nat, zero, ARGS, PTX)`` with ``nat`` the
QK unit in nats (float64 per row), ``zero`` an int64 zero of the same shape, ``ARGS`` the
constexprs of its ``row_args(strategy, p_max)``, ``PTX`` whether inline PTX may run; returns int64 ``(pre_M, pre_l, pre_r, t_cap,
u_max, req_M, one, rc0, rc1)`` (:mod:`qflash.table`'s columns). Every float64 step is an IEEE
operation the host repeats bit for bit (no fused multiply-add: the table kernel disables it).
"""
from __future__ import annotations

import triton
import triton.language as tl

from intsoftmax import exp, fixedpoint

from .ptx import floor_u32

F64_LOG2E = tl.constexpr(exp.base.LOG2E)
LOG2E_2_32 = tl.constexpr(exp.base.LOG2E * 2.0**32)
PRESCALE_MAX = tl.constexpr(exp.base.PRESCALE_MAX)
MULT_BITS = tl.constexpr(fixedpoint.MULT_BITS)
MAX_MULT_SHIFT = tl.constexpr(fixedpoint.MAX_MULT_SHIFT)


@triton.jit
def frexp_exponent(x):
    """NumPy's ``frexp(x)[1]`` of a positive normal float64 (int64), from its exponent bits: the bit
    length of an integer below ``2**53`` held exactly; ``-1022`` for zero."""
    return ((x.to(tl.int64, bitcast=True) >> 52) & 0x7FF) - 1022


@triton.jit
def fixed_multiplier(real):
    """:func:`intsoftmax.fixedpoint.fixed_multiplier`: ``(M, shift)`` (int64) from the float's exponent bits."""
    expo = frexp_exponent(real)
    shift = tl.minimum(tl.maximum(MULT_BITS - expo, 0), MAX_MULT_SHIFT)
    shift = tl.where(real == 0, MULT_BITS, shift)
    pow2 = ((shift + 1023) << 52).to(tl.float64, bitcast=True)
    return tl.floor(real * pow2).to(tl.int64), shift


def prescaled_row_args(strategy, p_max: int) -> tuple:
    return (strategy.native_per_nat(), strategy.u_max(), strategy.one(), p_max)


@triton.jit
def prescaled_rows(nat, zero, ARGS: tl.constexpr, PTX: tl.constexpr):
    """Strategies fed by the shared prescale (:meth:`intsoftmax.exp.ExpStrategy.plan`):
    ``ARGS = (native_per_nat, u_max, one, p_max)``."""
    pre_M, shift = fixed_multiplier(tl.minimum(nat * ARGS[0], PRESCALE_MAX))
    pre_l = tl.maximum(32 - shift, 0)
    return (pre_M, pre_l, tl.maximum(shift - 32, 0), 2147483647 >> pre_l, zero + ARGS[1], zero + ARGS[3],
            zero + ARGS[2], zero, zero)


def fused_row_args(strategy, p_max: int) -> tuple:
    return (strategy.clamp_octaves(strategy.one()), strategy.one(), p_max)


@triton.jit
def fused_rows(nat, zero, ARGS: tl.constexpr, PTX: tl.constexpr):
    """:class:`intsoftmax.FusedExp2`: ``M = round(c 2**32)`` (``rc0``) and the clamp of its generic
    exp at ``one``, ``u_max = ceil(octaves 2**32 / M)``; ``ARGS = (clamp octaves, one, p_max)``."""
    # nat (log2(e) 2**32) equals (nat log2(e)) 2**32 bit for bit (a power-of-two scaling is exact);
    # round half up is the floor of x + 1/2 >= 0, clamped to 2**32 - 1
    M = floor_u32(nat * LOG2E_2_32 + 0.5, PTX)
    Md = tl.maximum(M, 1)
    u_max = tl.where(M > 0, tl.minimum(((zero + (ARGS[0] << 32)) + Md - 1) // Md, 2147483647), 2147483647)
    return zero, zero, zero, zero, u_max, zero + ARGS[2], zero + ARGS[1], M, zero


def qflash_row_args(strategy, p_max: int) -> tuple:
    return (strategy.mul_shift, p_max)


@triton.jit
def qflash_rows(nat, zero, ARGS: tl.constexpr, PTX: tl.constexpr):
    """:class:`intsoftmax.QFlashExp2`: ``R = round(1/c)`` (``one`` and ``rc0``), ``exp_M = round(c 2**16)``
    (``rc1``), ``req_M = round(P_max c 2**16)`` (at least 1); ``ARGS = (mul_shift, p_max)``."""
    SHIFT: tl.constexpr = ARGS[0]
    P_MAX: tl.constexpr = ARGS[1]
    c = nat * F64_LOG2E
    R = tl.minimum(tl.maximum(tl.floor(1.0 / c + 0.5), 1.0), 33554432.0).to(tl.int64)
    cc = tl.minimum(c, 16.0)
    exp_M = tl.maximum(tl.floor(cc * (1 << SHIFT) + 0.5), 1.0).to(tl.int64)
    cap = (P_MAX + 1) * (1 << SHIFT) * 1.0
    req_M = tl.maximum(tl.floor(tl.minimum(P_MAX * cc * (1 << SHIFT), cap) + 0.5), 1.0).to(tl.int64)
    u_max = ((32 << SHIFT) - 1) // exp_M
    return zero, zero, zero, zero, u_max, req_M, R, R, exp_M
