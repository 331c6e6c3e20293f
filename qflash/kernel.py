"""The one fused kernel template: integer-only online attention, bit-exact with the golden model.

``_qflash_fwd`` runs :func:`intsoftmax.golden.attention_core` on a GPU. One program owns
``BLOCK_M`` query rows of one ``(batch, head)`` and walks the key tiles in order:

1. ``L = Q8 . K8^T`` (int8 MMA, int32), plus the mask or bias; padded and masked keys get
   ``MASKED_LOGIT``;
2. online rules move the reference max (``m_new = L_max + headroom`` where the tile exceeds
   it) and, for the rows that moved, release the scale of ``l`` and ``acc`` in int64;
3. ``P = min(P_max, requant(exp(prescale(m - L))))`` in int32, then ``l += sum P`` and
   ``acc += P . V8`` on the int8 MMA (``P`` split in two for more than 8 bits);
4. ``o = round(acc * 2**F / l)`` through one int64 reciprocal per row; stored as int32,
   requantized to int8, or dequantized (the only float op) to the output dtype.

Everything that varies per recipe is a constexpr (:class:`~qflash.spec.KernelSpec`); the
sequence lengths, batch and heads are runtime values. Every integer constant comes from the
per-row table (:mod:`qflash.table`). Two-pass recipes first sweep the keys for the exact
row max and never rescale.
"""
from __future__ import annotations

import triton
import triton.language as tl

from intsoftmax.plan import BIAS_MAX, MASKED_LOGIT

from .exp import exp_int
from .launcher import launch as launch_kernel
from .spec import MaskKind, OutKind
from .table import Col

# constexpr globals: the only kind a Triton kernel may read
MASKED = tl.constexpr(MASKED_LOGIT)
BIAS_LIMIT = tl.constexpr(BIAS_MAX)
MASK_NONE, MASK_BOOL, MASK_FLOAT = (tl.constexpr(int(k)) for k in (MaskKind.NONE, MaskKind.BOOL, MaskKind.FLOAT))
OUT_INT32, OUT_INT8 = (tl.constexpr(int(k)) for k in (OutKind.INT32, OutKind.INT8))
(PRE_M, PRE_L, PRE_R, T_CAP, U_MAX, REQ_M, REL_M, HEADROOM, EXP_C0, EXP_C1, BIAS_INV, OUT_M, OUT_SHIFT,
 DEQ) = (tl.constexpr(int(c)) for c in Col)


@triton.jit
def _col(row_ptr, col: tl.constexpr):
    """One column of the constant table for this program's rows, shape (BLOCK_M,)."""
    return tl.load(row_ptr + col)


@triton.jit
def _exp(t, rc, lut, KIND: tl.constexpr, ARGS: tl.constexpr, PRESCALED: tl.constexpr):
    """``e ~= one * 2**(-t * c)`` for QK-unit distances ``t >= 0``: the shared prescale
    (:func:`intsoftmax.exp.base.prescale`), then the strategy's integer exp. ``rc`` holds the
    row constants ``(pre_M, pre_l, pre_r, t_cap, u_max, exp_c0, exp_c1)`` shaped to broadcast with ``t``."""
    pre_M, pre_l, pre_r, t_cap, u_max, rc0, rc1 = rc
    if PRESCALED:
        t = tl.minimum(t, t_cap) << pre_l
        u = tl.minimum(tl.umulhi(t, tl.broadcast_to(pre_M, t.shape)) >> pre_r, u_max)
    else:
        u = tl.minimum(t, u_max)
    return exp_int(u, rc0, rc1, lut, KIND, ARGS)


@triton.jit
def _load(ptrs, rows_ok, cols_ok, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    """A 2-D tile load, masked only along the dimensions that can be padded (an always-true
    mask would still cost vectorized loads)."""
    if MASK_ROWS and MASK_COLS:
        x = tl.load(ptrs, mask=rows_ok[:, None] & cols_ok[None, :], other=0)
    elif MASK_ROWS:
        x = tl.load(ptrs, mask=rows_ok[:, None], other=0)
    elif MASK_COLS:
        x = tl.load(ptrs, mask=cols_ok[None, :], other=0)
    else:
        x = tl.load(ptrs)
    return x


@triton.jit
def _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_n, offs_d, j, NQ, NK, bias_inv,
                 D: tl.constexpr, BLOCK_N: tl.constexpr, MASK_KIND: tl.constexpr, PADDED: tl.constexpr):
    """Integer logits of key tile ``j`` (BLOCK_M, TILE_N): ``Q8 . K8^T`` plus mask or bias. In a
    padded tile, keys past ``NK`` or past ``BLOCK_N`` (zero padding for the MMA) are masked."""
    n = j + offs_n
    key_ok = (n < NK) & (offs_n < BLOCK_N)
    k = _load(k_base + n[:, None] * skn + offs_d[None, :] * skd, key_ok, offs_d < D, PADDED, D < offs_d.shape[0])
    s = tl.dot(q, tl.trans(k), out_dtype=tl.int32)
    if MASK_KIND != MASK_NONE:
        ptrs = mask_base + offs_m[:, None] * smm + n[None, :] * smn
        inside = (offs_m[:, None] < NQ) & key_ok[None, :]
        if MASK_KIND == MASK_BOOL:
            s = tl.where(tl.load(ptrs, mask=inside, other=0) != 0, s, MASKED)
        elif MASK_KIND == MASK_FLOAT:
            b = tl.load(ptrs, mask=inside, other=0.0).to(tl.float32)
            y = tl.floor(b * bias_inv[:, None] + 0.5)  # the bias's input quantization
            y = tl.minimum(tl.maximum(y, -BIAS_LIMIT), BIAS_LIMIT).to(tl.int32)
            s = tl.where((b == float("-inf")) | (b != b), MASKED, s + y)
        else:
            b = tl.load(ptrs, mask=inside, other=0)
            s = tl.where(b == MASKED, MASKED, s + b)
    if PADDED:
        s = tl.where(key_ok[None, :], s, MASKED)
    return s


@triton.jit
def _pv(p, v, P_BITS: tl.constexpr):
    """``P . V8`` on int8 MMAs: ``P`` as int8 (<= 7 bits), offset by 128 with a column-sum
    correction (8 bits), or split as ``hi * 2**lo_bits + lo`` (9-14 bits)."""
    if P_BITS <= 7:
        pv = tl.dot(p.to(tl.int8), v, out_dtype=tl.int32)
    elif P_BITS == 8:
        pv = tl.dot((p - 128).to(tl.int8), v, out_dtype=tl.int32) + 128 * tl.sum(v.to(tl.int32), 0)[None, :]
    else:
        LO: tl.constexpr = P_BITS - 7
        pv = (tl.dot((p >> LO).to(tl.int8), v, out_dtype=tl.int32) << LO) + \
            tl.dot((p & ((1 << LO) - 1)).to(tl.int8), v, out_dtype=tl.int32)
    return pv


@triton.jit
def _attend_tile(q, j, m, l, acc, k_base, v_base, mask_base, skn, skd, svn, svd, smm, smn, offs_m, offs_n, offs_d,
                 NQ, NK, rc, req_M, rel_M, headroom, bias_inv, lut,
                 D: tl.constexpr, BLOCK_N: tl.constexpr, EXP_KIND: tl.constexpr, EXP_ARGS: tl.constexpr,
                 PRESCALED: tl.constexpr, REQ_SHIFT: tl.constexpr, P_BITS: tl.constexpr, TWO_PASS: tl.constexpr,
                 REL_SHIFT: tl.constexpr, MASK_KIND: tl.constexpr, PADDED: tl.constexpr):
    """One key tile of the online loop; returns the new row state ``(m, l, acc)``."""
    s = _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_n, offs_d, j, NQ, NK, bias_inv,
                     D, BLOCK_N, MASK_KIND, PADDED)
    if not TWO_PASS:
        tile_max = tl.max(s, 1)
        m_new = tl.where(tile_max > m, tile_max + headroom, m)
        moved = (m_new > m) & (m > MASKED)
        if tl.sum(moved.to(tl.int32), 0) > 0:  # release the old scale, per row (int64 products)
            alpha = _exp(tl.where(moved, m_new - m, 0), rc, lut, EXP_KIND, EXP_ARGS, PRESCALED)
            a = (alpha * rel_M).to(tl.int64)
            half: tl.constexpr = 1 << (REL_SHIFT - 1)
            acc = tl.where(moved[:, None], ((acc.to(tl.int64) * a[:, None] + half) >> REL_SHIFT).to(tl.int32), acc)
            l = tl.where(moved, ((l.to(tl.int64) * a + half) >> REL_SHIFT).to(tl.int32), l)
        m = m_new
    rc2 = (rc[0][:, None], rc[1][:, None], rc[2][:, None], rc[3][:, None], rc[4][:, None], rc[5][:, None],
           rc[6][:, None])
    e = _exp(m[:, None] - s, rc2, lut, EXP_KIND, EXP_ARGS, PRESCALED)
    p = tl.minimum((e * req_M[:, None] + (1 << (REQ_SHIFT - 1))) >> REQ_SHIFT, (1 << P_BITS) - 1)
    if PADDED or MASK_KIND != MASK_NONE:  # masked keys carry no weight (full unmasked tiles have none)
        p = tl.where(s > MASKED, p, 0)
    l += tl.sum(p, 1)
    # V as a (D, TILE_N) tile: keys are the MMA's K dim, and int8 MMAs want K contiguous, which
    # V stored (B, H, D, N) gives (the quantization kernel writes it so)
    key_ok = ((j + offs_n) < NK) & (offs_n < BLOCK_N)
    vt = _load(v_base + offs_d[:, None] * svd + (j + offs_n)[None, :] * svn, offs_d < D, key_ok,
               D < offs_d.shape[0], PADDED)
    acc += _pv(p, tl.trans(vt), P_BITS)
    return m, l, acc


@triton.jit
def _qflash_fwd(
    Q, K, V, Out, Tab, Mask, Lut,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod,
    stb, sth, stm, smb1, smb2, smh, smm, smn,
    H, B2, NQ, NK,
    D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_N: tl.constexpr,
    EXP_KIND: tl.constexpr, EXP_ARGS: tl.constexpr, PRESCALED: tl.constexpr, REQ_SHIFT: tl.constexpr,
    P_BITS: tl.constexpr, TWO_PASS: tl.constexpr, REL_SHIFT: tl.constexpr, MASK_KIND: tl.constexpr,
    OUT_KIND: tl.constexpr, OUT_FRAC: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, TILE_N)
    offs_d = tl.arange(0, D_PAD)
    row_ok = offs_m < NQ

    # per-row integer constants, (BLOCK_M,) vectors (a broadcast row when the table has one)
    trow = Tab + b * stb + h * sth + tl.minimum(offs_m, NQ - 1) * stm
    rc = (_col(trow, PRE_M), _col(trow, PRE_L), _col(trow, PRE_R), _col(trow, T_CAP), _col(trow, U_MAX),
          _col(trow, EXP_C0), _col(trow, EXP_C1))
    req_M = _col(trow, REQ_M)
    rel_M = _col(trow, REL_M)
    headroom = _col(trow, HEADROOM)
    bias_inv = _col(trow, BIAS_INV).to(tl.float32, bitcast=True)

    q = _load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd, row_ok, offs_d < D, True,
              D < D_PAD)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    mask_base = Mask + (b // B2) * smb1 + (b % B2) * smb2 + h * smh

    # row state: reference max, sum of P, accumulator
    m = tl.full((BLOCK_M,), MASKED, tl.int32)
    l = tl.zeros((BLOCK_M,), tl.int32)
    acc = tl.zeros((BLOCK_M, D_PAD), tl.int32)
    if TWO_PASS:  # the exact row max first (not software-pipelined: the pipeliner rejects this loop)
        for j in tl.range(0, NK, BLOCK_N, num_stages=1):
            s = _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_n, offs_d, j, NQ, NK, bias_inv,
                             D, BLOCK_N, MASK_KIND, True)
            m = tl.maximum(m, tl.max(s, 1))
    # full tiles need no padding (and, unmasked, no masking); the last partial tile does
    n_full = (NK // BLOCK_N) * BLOCK_N if TILE_N == BLOCK_N else 0
    for j in range(0, n_full, BLOCK_N):
        m, l, acc = _attend_tile(q, j, m, l, acc, k_base, v_base, mask_base, skn, skd, svn, svd, smm, smn, offs_m,
                                 offs_n, offs_d, NQ, NK, rc, req_M, rel_M, headroom, bias_inv, Lut, D, BLOCK_N,
                                 EXP_KIND, EXP_ARGS, PRESCALED, REQ_SHIFT, P_BITS, TWO_PASS, REL_SHIFT, MASK_KIND,
                                 False)
    for j in range(n_full, NK, BLOCK_N):
        m, l, acc = _attend_tile(q, j, m, l, acc, k_base, v_base, mask_base, skn, skd, svn, svd, smm, smn, offs_m,
                                 offs_n, offs_d, NQ, NK, rc, req_M, rel_M, headroom, bias_inv, Lut, D, BLOCK_N,
                                 EXP_KIND, EXP_ARGS, PRESCALED, REQ_SHIFT, P_BITS, TWO_PASS, REL_SHIFT, MASK_KIND,
                                 True)

    # o = round(clamp(acc, +-128 l) * 2**F / l) through r = 2**54 // l (int64, one division per row)
    l64 = l.to(tl.int64)[:, None]
    r = tl.full((BLOCK_M, 1), 1 << 54, tl.int64) // tl.maximum(l64, 1)
    a64 = tl.minimum(tl.maximum(acc.to(tl.int64), -128 * l64), 128 * l64)
    o = (a64 * r + (1 << (53 - OUT_FRAC))) >> (54 - OUT_FRAC)

    out_ptrs = Out + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod
    out_mask = row_ok[:, None] & (offs_d[None, :] < D)
    if OUT_KIND == OUT_INT32:
        tl.store(out_ptrs, o.to(tl.int32), mask=out_mask)
    elif OUT_KIND == OUT_INT8:
        out_M = _col(trow, OUT_M).to(tl.int64)[:, None]
        out_shift = _col(trow, OUT_SHIFT).to(tl.int64)[:, None]
        rounding = tl.where(out_shift > 0, tl.full(out_shift.shape, 1, tl.int64) << tl.maximum(out_shift - 1, 0), 0)
        o8 = tl.minimum(tl.maximum((o * out_M + rounding) >> out_shift, -127), 127)
        tl.store(out_ptrs, o8.to(tl.int8), mask=out_mask)
    else:
        deq = _col(trow, DEQ).to(tl.float32, bitcast=True)[:, None]
        tl.store(out_ptrs, (o.to(tl.float32) * deq).to(Out.dtype.element_ty), mask=out_mask)


def launch(spec, q8, k8, v8, table, out, mask=None, lut=None, batch2: int = 1, block_m: int = 64, num_warps: int = 4,
           num_stages: int = 2, launcher=launch_kernel, **options):
    """Launch the kernel on int8 ``(B, H, N, D)`` tensors (any strides) and a constant table.

    ``mask``: a tensor already broadcast (by strides) to ``(B // batch2, batch2, H, Nq, Nk)``
    of the spec's mask kind. ``out``: ``(B, H, Nq, D)`` of the spec's output kind.
    ``launcher``: how to launch (:func:`qflash.launcher.launch`; the benchmark compares it
    with Triton's own ``kernel[grid](...)``).
    """
    B, H, NQ, D = q8.shape
    NK = k8.shape[2]
    block_n = spec.block_n if not spec.two_pass else 64
    # table rows: one, per head (static scales), or per (batch, head); times Nq when per row
    tab_b = table.stride(0) * H if table.shape[0] == B * H and table.shape[0] > H else 0
    tab_h = table.stride(0) if table.shape[0] > 1 else 0
    tab_m = table.stride(1) if table.shape[1] > 1 else 0
    mstrides = mask.stride() if mask is not None else (0, 0, 0, 0, 0)
    grid = (triton.cdiv(NQ, block_m), B * H)
    launcher(
        _qflash_fwd, grid, q8, k8, v8, out, table, mask if mask is not None else q8, lut if lut is not None else table,
        *q8.stride(), *k8.stride(), *v8.stride(), *out.stride(),
        tab_b, tab_h, tab_m, *mstrides,
        H, batch2, NQ, NK,
        BLOCK_M=block_m, BLOCK_N=block_n, TILE_N=max(block_n, 32), num_warps=num_warps, num_stages=num_stages,
        enable_fp_fusion=False, **spec.constexprs(), **options,
    )
    return out
