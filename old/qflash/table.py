"""The per-row constant table: every integer constant the kernel reads, one row per query row.

A golden :class:`~intsoftmax.plan.AttentionPlan` holds the constants as arrays broadcast over
query rows. The kernel reads them from an int32 table of shape ``(T_B, T_M, NCOL)``:
``T_B`` is 1 or ``B * H`` and ``T_M`` is 1 or ``Nq``, depending on which scales vary (a
per-tensor recipe has a single row). Float constants (``bias_inv``, ``deq``) are stored as
their float32 bit patterns. :func:`host_table` builds it from a golden plan (static scales,
tests); :mod:`qflash.quantize` derives the same integers on the device (dynamic scales).
"""
from __future__ import annotations

import enum

import numpy as np

from intsoftmax.plan import AttentionPlan


class Col(enum.IntEnum):
    """Columns of the constant table (all int32)."""

    PRE_M = 0       # prescale multiplier (< 2**31)
    PRE_L = 1       # prescale left shift
    PRE_R = 2       # prescale right shift
    T_CAP = 3       # clamp of t before the left shift
    U_MAX = 4       # clamp of the native input
    REQ_M = 5       # requantization multiplier e -> P
    REL_M = 6       # scale-release multiplier floor(2**S / one)
    HEADROOM = 7    # lazy-rescale headroom in QK units (0: plain running max)
    EXP_C0 = 8      # strategy row constant (QFlash: R; fused exp: M)
    EXP_C1 = 9      # strategy row constant (QFlash: exp_M)
    BIAS_INV = 10   # float32 bits of 1 / nat_unit (float bias -> QK units)
    OUT_M = 11      # int8 output multiplier
    OUT_SHIFT = 12  # int8 output shift
    DEQ = 13        # float32 bits of s_v * 2**-out_frac_bits (float output)


NCOL = len(Col)


def table_shape(recipe, batch: int, heads: int, nq: int) -> tuple[int, int]:
    """``(T_B, T_M)``: per-row constants when Q's scale varies along rows, per ``(b, h)`` when
    any scale varies across heads, a single row for an all-per-tensor recipe."""
    grans = (recipe.q_granularity, recipe.k_granularity, recipe.v_granularity)
    per_row = not recipe.q_granularity.row_uniform
    per_head = per_row or any(g.block()[0] is not None for g in grans)
    return (batch * heads if per_head else 1), (nq if per_row else 1)


def _f32_bits(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).view(np.int32)


def host_table(recipe, plan: AttentionPlan, batch: int, heads: int, nq: int, s_v=None) -> np.ndarray:
    """The int32 table ``(T_B, T_M, NCOL)`` for a golden plan of a ``(batch, heads, nq)`` call.

    ``s_v`` (float32, broadcastable to ``(batch, heads, 1, 1)``) fills the ``DEQ`` column.
    """
    tb, tm = table_shape(recipe, batch, heads, nq)
    e = plan.exp
    rc0, rc1 = recipe.exp.kernel_row_constants(e.consts, recipe.p_max)
    columns = {
        Col.PRE_M: e.pre_M, Col.PRE_L: e.pre_l, Col.PRE_R: e.pre_r, Col.T_CAP: e.t_cap,
        Col.U_MAX: e.u_max, Col.REQ_M: plan.req_M, Col.REL_M: plan.rel_M, Col.HEADROOM: plan.headroom,
        Col.EXP_C0: rc0, Col.EXP_C1: rc1,
        Col.BIAS_INV: _f32_bits(plan.bias_inv), Col.OUT_M: plan.out_M, Col.OUT_SHIFT: plan.out_shift,
        Col.DEQ: None if s_v is None else _f32_bits(np.asarray(s_v, np.float32) * np.float32(2.0**-recipe.out_frac_bits)),
    }
    table = np.zeros((tb, tm, NCOL), dtype=np.int64)
    for col, value in columns.items():
        if value is None:
            continue
        full = np.broadcast_to(np.asarray(value), np.broadcast_shapes(np.shape(value), (batch, heads, nq, 1)))
        full = full.reshape(batch * heads, nq)
        table[:, :, col] = full[:tb, :tm]
    if table.min() < -(2**31) or table.max() >= 2**31:
        raise OverflowError("a kernel constant does not fit int32")  # unreachable by construction
    return table.astype(np.int32)
