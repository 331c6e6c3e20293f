"""The one fused kernel template: integer-only attention, bit-exact with the golden model.

``_qflash_fwd`` runs :func:`intsoftmax.golden.attention_core` on a GPU. One program owns
``BLOCK_M`` query rows of one ``(batch, head)``:

1. ``L = Q8 . K8^T`` (int8 MMA, int32), plus the mask or bias; padded and masked keys get
   ``MASKED_LOGIT``;
2. the reference max: two-pass rules take the exact row max first (a row that fits one tile
   needs no extra pass); online rules move it tile by tile in the recipe's ``block_n`` tiles and
   release the scale of ``l`` and ``acc`` (int64 products) for the rows that moved;
3. ``P``: the strategy's exp then the requantization, or, for strategies that fuse them (the
   fused exp2 of the default recipes), ``P`` straight from ``L`` in ``6 + 2 degree`` instructions;
   ``acc += P . V8`` and ``l += sum P`` on the int8 MMA;
4. the output from the pair ``(acc, l)``: a float output (``PAIR_OUT``, the recipe's
   ``float_out="pair"``) is ``f32(acc) * f32(s_v / l)``, one multiply per output and a division
   per row (the only float ops); an integer one is ``o = round(acc * 2**F / l)`` through one
   integer reciprocal per row (``IMAD.WIDE`` and a shift per output), stored as int32,
   requantized to int8, or (``"rounded"``) dequantized. A row
   whose float bias holds NaN or +inf, or a slice whose static-range inputs held NaN or Inf,
   comes out NaN (integer outputs: -2**31, -128), never plausible numbers.

Two-pass integers do not depend on the tile order (integer sums are associative), so the
kernel picks its tiles freely: ``BLOCK_N`` keys, the last few in ``TAIL`` (32) key tiles.
``P`` reaches the MMA as an int8 (7 bits), as ``127 - P`` plus one constant MMA (8 bits, the
offset form: no column sums), or as ``P mod 128`` and ``P >> 7`` in two MMAs whose second result
is added 128 times (9-14 bits); the same operands against a tile of ones give ``l = sum P`` (two-pass
7 and 9-14 bits: ``dp4a`` on the operands' words, :data:`~qflash.spec.ALU_ROW_SUMS`).
Keys past ``NK`` in a padded tile read zero rows of K and carry ``P = 0``; V is read 16 keys at a
time where its storage allows (:func:`readable_keys`). Pass 2 reads each 32 rows of K in the order
that leaves ``P`` in the registers where the int8 MMA wants its operand (:func:`_key_order`,
``MMA_ORDER``): no shuffles between the two MMAs.

Everything that varies per recipe is a constexpr (:class:`~qflash.spec.KernelSpec`); sequence
lengths, batch and heads are runtime values, and of the key count only one bit is compiled in:
``ONE_TILE`` (two-pass rules, every key in one tile: Swin windows), whose kernel carries neither
the first pass nor the key loops (9-11 % faster on the Swin shapes than branching at run time).
Every integer constant comes from the constant table (:mod:`qflash.table`): scalars for
per-tensor and per-head scales, per-row vectors for per-token ones (``ROW_TABLE``), or, in small
calls with measured ranges, from each program's own derivation of its row (``DERIVE``, the table
kernel's :func:`~qflash.quantize.table_row`: one launch less); with ``Q_ROWS`` (Q per token,
quantized on load) each program measures its own rows' ranges and derives one row of constants
per query. Float inputs quantized on load
bring their ranges (``QUANT``); V per channel brings its scales (``SV_COLS``). ``HI_SUM``
(:attr:`~qflash.spec.KernelSpec.hi_sum`): two-pass sums as ``128 hi + lo`` in two int32s per
element, ``P >> 7``'s MMAs accumulating in ``hi`` (9-14-bit ``P``), added in the epilogue.
``ACC64``: the wide accumulator of ``TwoPass(acc_bits=64)`` in the same two int32s, ``lo``'s bits
above the seventh moved into ``hi`` every ``CHUNK`` keys, and the int64 sum formed at the end.

``FLOAT_SOFTMAX``: INT-FlashAttention's design as a baseline (:mod:`intsoftmax.intfa`), the one
exception to the integer pipeline: per-token Q and K scales, a float32 online softmax between the
two int8 MMAs, no constant table.

``SPLIT`` (two-pass rules, decoding): a call whose row blocks leave the GPU idle splits each
row's keys over a third grid dimension in two launches of this template: ``SPLIT_MAX`` stores
each split's row max; ``SPLIT_SUM`` takes the max of them (the row's exact max), sums its keys as
pass 2 does, stores its integers, and the last split of a row block to finish adds them all and
runs the epilogue (``docs/algorithms.md`` §4.2: the same integers as one program).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from intsoftmax.intfa import LOG2E as INTFA_LOG2E
from intsoftmax.plan import BIAS_MAX, MASKED_LOGIT

from .exp import fused_y
from .launcher import interpreted, launch as launch_kernel
from .plan import empty
from .ptx import floor_s8, mul_wide, pack_half_round, pack_s8, prefetch_l1, rcp_f64, shr_funnel, split_half
from .rows import frexp_exponent
from .quantize import bh_strides, f64_bits, scale_inv, table_row
from .spec import MaskKind, OutKind
from .table import Col

# constexpr globals: the only kind a Triton kernel may read
MASKED = tl.constexpr(MASKED_LOGIT)
BIAS_LIMIT = tl.constexpr(BIAS_MAX)
MASK_NONE, MASK_BOOL, MASK_FLOAT, MASK_CAUSAL = (tl.constexpr(int(k)) for k in
                                                 (MaskKind.NONE, MaskKind.BOOL, MaskKind.FLOAT, MaskKind.CAUSAL))
OUT_INT32, OUT_INT8 = (tl.constexpr(int(k)) for k in (OutKind.INT32, OutKind.INT8))
(PRE_M, PRE_L, PRE_R, T_CAP, U_MAX, REQ_M, REL_M, HEADROOM, EXP_C0, EXP_C1, BIAS_INV, OUT_M, OUT_SHIFT,
 DEQ) = (tl.constexpr(int(c)) for c in Col)
#: Width of the last key tiles of two-pass rules (the int8 MMA's smallest K).
TAIL = tl.constexpr(32)
#: The logit of a key whose float bias is NaN or +inf: above every real logit (|Q8.K8| <= 127**2 * 128
#: plus a bias <= 2**28 < 2**29), so it becomes its row's max and marks the row, whose output is then
#: NaN. Distances to it stay below 2**31 (real logits are >= -2**29), so the integers stay defined.
POISON = tl.constexpr(2**30)
#: log2(e) in float32, as the float softmax baseline's golden model rounds it (intsoftmax.intfa.LOG2E).
LOG2E = tl.constexpr(float(INTFA_LOG2E))
#: Split-key phases (``SPLIT``): one launch over all keys; the splits' row maxima; their sums.
SPLIT_NONE, SPLIT_MAX, SPLIT_SUM = (tl.constexpr(i) for i in range(3))
#: CUDA's largest grid extent along y and z: the (batch, head) slices of a call beyond it take
#: both dimensions (Swin-T at batch 342 has 65664 window-heads in its first stage).
GRID_YZ = 65535
#: Row launches (``ROW_LAUNCH``): every row block in one launch; the full row blocks of a call
#: whose last rows have their own launch; that launch (:func:`launch`'s ``tail_block_m``).
ROWS_ALL, ROWS_MAIN, ROWS_TAIL = (tl.constexpr(i) for i in range(3))


@triton.jit
def _rows(x, ROW_TABLE: tl.constexpr):
    """A per-row constant shaped to broadcast over a (BLOCK_M, N) tile (scalars already do)."""
    if ROW_TABLE:
        return x[:, None]
    else:
        return x


@triton.jit
def _exp(t, rc, lut, EXP_FN: tl.constexpr, ARGS: tl.constexpr, PRESCALED: tl.constexpr):
    """``e ~= one * 2**(-t * c)`` for QK-unit distances ``t >= 0``: the shared prescale
    (:func:`intsoftmax.exp.base.prescale`), then the strategy's integer exp (its registered
    Triton twin, :mod:`qflash.exp`). ``rc`` holds the
    row constants ``(pre_M, pre_l, pre_r, t_cap, u_max, exp_c0, exp_c1)`` shaped to broadcast with ``t``."""
    pre_M, pre_l, pre_r, t_cap, u_max, rc0, rc1 = rc
    if PRESCALED:
        t = tl.minimum(t, t_cap) << pre_l
        u = tl.minimum(tl.umulhi(t, tl.broadcast_to(pre_M, t.shape)) >> pre_r, u_max)
    else:
        u = tl.minimum(t, u_max)
    return EXP_FN(u, rc0, rc1, lut, ARGS)


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
def _quant(x, inv, QUANT: tl.constexpr, PTX: tl.constexpr):
    """``(x8, bad)``: a float tile quantized on load exactly as the golden model quantizes
    (``clip(floor(x * inv + 1/2), -127, 127)`` in float32, no fused multiply-add; the clip
    commutes with the floor), and ``x - x`` (NaN where ``x`` is NaN or infinite, else 0).
    Without ``QUANT`` the tile is int8 already."""
    if QUANT:
        x32 = x.to(tl.float32)
        x8 = floor_s8(tl.minimum(tl.maximum(x32 * inv + 0.5, -127.0), 127.0), PTX)
        return x8, x32 - x32
    else:
        return x, 0.0


@triton.jit
def _nan_max(a, b):
    """``max`` that returns NaN where either is NaN (``max.NaN``): a row's range is NaN wherever
    the row holds one, with no second reduction to find it."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _prefetch_tile(base, sn, sd, NK, ROWS: tl.constexpr, D: tl.constexpr, PTX: tl.constexpr):
    """L1 prefetches of the first ``ROWS`` rows (up to ``NK``) of a float tile, one per 128-byte
    line (a row of ``D`` elements spans ``D * bytes / 128`` of them, at least one)."""
    LINE: tl.constexpr = 1024 // base.dtype.element_ty.primitive_bitwidth  # elements per 128 bytes
    CHUNKS: tl.constexpr = max(D // LINE, 1)
    rows = tl.minimum(tl.arange(0, ROWS), NK - 1)
    prefetch_l1(base + rows[:, None] * sn + (tl.arange(0, CHUNKS) * LINE)[None, :] * sd, PTX)


@triton.jit
def _key_order(TILE: tl.constexpr, MMA_ORDER: tl.constexpr):
    """The key (offset in the tile) of each logit column: ``c``, or with ``MMA_ORDER`` the key that
    puts ``P`` in the int8 MMA's operand order without moving it (:func:`_mma_operand`). An MMA
    result gives a thread the columns ``8g + 2t + e`` of each 32 (``g``, ``t`` < 4, ``e`` < 2); the
    8-bit A operand wants ``16h + 4t + 2i + e`` from it. Column ``32b + 8g + 2t + e`` therefore holds
    key ``32b + 16 (g >> 1) + 4t + 2 (g & 1) + e``: the operand's order is the keys' own, and V is
    read as stored. Integer sums do not depend on the order of the keys."""
    c = tl.arange(0, TILE)
    if MMA_ORDER:
        g = (c >> 3) & 3
        c = (c & ~31) + ((g >> 1) << 4) + (((c >> 1) & 3) << 2) + ((g & 1) << 1) + (c & 1)
    return c


@triton.jit
def _mma_operand(p, MMA_ORDER: tl.constexpr):
    """``P`` (BLOCK_M, TILE) int8 as the operand of ``P . V`` with keys in their own order: with
    logit columns in :func:`_key_order`'s ``MMA_ORDER``, column ``16h + 4t + 2i + e`` of each 32 is
    column ``16h + 8i + 2t + e`` of ``p``. A relabelling of the registers each thread holds (the
    layout conversion to the MMA operand needs no shuffles: FlashAttention-3's permutation for
    8-bit ``P``, on K's rows instead of V's)."""
    if MMA_ORDER:
        M: tl.constexpr = p.shape[0]
        N: tl.constexpr = p.shape[1]
        p = tl.reshape(tl.permute(tl.reshape(p, (M, N // 32, 2, 2, 4, 2)), (0, 1, 2, 4, 3, 5)), (M, N))
    return p


@triton.jit
def _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_d, j, NQ, NK, bias_inv, inv_k,
                 D: tl.constexpr, WIDTH: tl.constexpr, TILE: tl.constexpr, MASK_KIND: tl.constexpr,
                 PADDED: tl.constexpr, MASK_PAD: tl.constexpr, ROW_TABLE: tl.constexpr, QUANT: tl.constexpr,
                 PTX: tl.constexpr, MMA_ORDER: tl.constexpr = False):
    """Integer logits of the key tile at ``j`` (BLOCK_M, TILE): ``Q8 . K8^T`` plus mask or bias,
    column ``c`` for key ``j + _key_order(TILE, MMA_ORDER)[c]``.
    In a padded tile, keys past ``NK`` or past ``WIDTH`` (zero padding for the MMA) read zero
    rows of K, and ``MASK_PAD`` masks them (their logit is 0 otherwise). ``QUANT``: K is float,
    quantized here with ``inv_k``; a key holding NaN or Inf gets the logit ``POISON``."""
    offs_n = _key_order(TILE, MMA_ORDER)
    n = j + offs_n
    key_ok = (n < NK) & (offs_n < WIDTH)
    k = _load(k_base + n[:, None] * skn + offs_d[None, :] * skd, key_ok, offs_d < D, PADDED, D < offs_d.shape[0])
    k, k_bad = _quant(k, inv_k, QUANT, PTX)
    s = tl.dot(q, tl.trans(k), out_dtype=tl.int32)
    if MASK_KIND == MASK_CAUSAL:  # by index: query i attends to keys j <= i
        s = tl.where(n[None, :] <= offs_m[:, None], s, MASKED)
    elif MASK_KIND != MASK_NONE:
        ptrs = mask_base + offs_m[:, None] * smm + n[None, :] * smn
        inside = (offs_m[:, None] < NQ) & key_ok[None, :]
        if MASK_KIND == MASK_BOOL:
            s = tl.where(tl.load(ptrs, mask=inside, other=0) != 0, s, MASKED)
        elif MASK_KIND == MASK_FLOAT:
            b = tl.load(ptrs, mask=inside, other=0.0).to(tl.float32)
            y = tl.floor(b * _rows(bias_inv, ROW_TABLE) + 0.5)  # the bias's input quantization
            masked = (b == float("-inf")) | (y < -BIAS_LIMIT)  # beyond the range: masked
            y = tl.minimum(tl.maximum(y, -BIAS_LIMIT), BIAS_LIMIT).to(tl.int32)
            s = tl.where(masked, MASKED, s + y)
            s = tl.where((b != b) | (b == float("inf")), POISON, s)  # NaN or +inf: the row's output is NaN
        else:  # int32 QK units: below -2**28 masked, above 2**28 saturated (never wraps)
            b = tl.load(ptrs, mask=inside, other=0)
            s = tl.where(b < -BIAS_LIMIT, MASKED, s + tl.minimum(b, BIAS_LIMIT))
    if QUANT:  # after the mask: a masked key holding NaN still makes the row NaN, as in SDPA
        key_sum = tl.sum(k_bad, 1)
        s = tl.where((key_sum != key_sum)[None, :], POISON, s)
    if PADDED and MASK_PAD:
        s = tl.where(key_ok[None, :], s, MASKED)
    return s


@triton.jit
def _tile_v(v_base, svn, svd, offs_d, j, NK_V, inv_v, D: tl.constexpr, WIDTH: tl.constexpr, TILE: tl.constexpr,
            PADDED: tl.constexpr, QUANT: tl.constexpr, PTX: tl.constexpr):
    """V8 of the key tile at ``j`` as a (TILE, D_PAD) operand, zero past ``NK_V`` and ``WIDTH``. It is
    read as a (D_PAD, TILE) tile: keys are the MMA's K dim, and int8 MMAs want K contiguous,
    which V stored (B, H, D, N) gives (the quantization kernel writes it so). ``NK_V``: the keys
    readable in V's storage, ``NK`` rounded up to 16 where the rows allow (16-byte loads; the
    keys past ``NK`` then carry ``P = 0``), else ``NK``. ``QUANT``: V is float, quantized here
    with ``inv_v``. Returns ``(v8, bad)``, ``bad`` NaN if the tile holds NaN or Inf, else 0."""
    offs_n = tl.arange(0, TILE)
    key_ok = ((j + offs_n) < NK_V) & (offs_n < WIDTH)
    vt = _load(v_base + offs_d[:, None] * svd + (j + offs_n)[None, :] * svn, offs_d < D, key_ok,
               D < offs_d.shape[0], PADDED)
    vt, v_bad = _quant(vt, inv_v, QUANT, PTX)
    if QUANT:
        v_bad = tl.sum(tl.sum(v_bad, 1), 0)
    return tl.trans(vt), v_bad


@triton.jit
def _row_max(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_d, NQ, NK, bias_inv, inv_k, keys,
             D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FULL_MASK: tl.constexpr,
             MASK_KIND: tl.constexpr, ROW_TABLE: tl.constexpr, QUANT: tl.constexpr, PTX: tl.constexpr,
             ROW_MAX_N: tl.constexpr):
    """Pass 1 of two-pass rules: the exact integer row max over the program's ``keys``
    (:func:`_key_range`): full tiles masked by ``FULL_MASK`` (``ROW_MAX_N`` keys at a time while
    they last, if not 0: :meth:`~qflash.spec.KernelSpec.row_max_keys`), then 32-key tiles."""
    n_lo, n_full, n_tail, n_end = keys
    n_wide = n_lo
    m = tl.full((BLOCK_M,), MASKED, tl.int32)
    if ROW_MAX_N:
        n_wide = n_lo + tl.maximum(n_full - n_lo, 0) // ROW_MAX_N * ROW_MAX_N
        for j in range(n_lo, n_wide, ROW_MAX_N):
            s = _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_d, j, NQ, NK, bias_inv, inv_k, D,
                             ROW_MAX_N, ROW_MAX_N, FULL_MASK, False, True, ROW_TABLE, QUANT, PTX)
            m = tl.maximum(m, tl.max(s, 1))
    for j in range(n_wide, n_full, BLOCK_N):
        s = _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_d, j, NQ, NK, bias_inv, inv_k, D,
                         BLOCK_N, BLOCK_N, FULL_MASK, False, True, ROW_TABLE, QUANT, PTX)
        m = tl.maximum(m, tl.max(s, 1))
    for j in range(n_tail, n_end, TAIL):
        s = _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_d, j, NQ, NK, bias_inv, inv_k, D,
                         TAIL, TAIL, MASK_KIND, True, True, ROW_TABLE, QUANT, PTX)
        m = tl.maximum(m, tl.max(s, 1))
    return m


@triton.jit
def _key_range(n_full, n_end, split, split_tiles, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr):
    """A two-pass program's keys ``(lo, full_end, tail_lo, end)``: full tiles over ``[lo, full_end)``,
    32-key tiles over ``[tail_lo, end)``. Unsplit: the row block's keys (``n_full`` of them in full
    tiles, up to ``n_end``); split: those of them in split ``split``'s ``split_tiles`` tiles of
    ``BLOCK_N`` keys (a split may be empty). Counted in tiles, ``lo`` is a known multiple of
    ``BLOCK_N``: the compiler keeps the loads vectorized and pipelined."""
    if SPLIT == SPLIT_NONE:
        return 0, n_full, n_full, n_end
    else:
        KS = split_tiles * BLOCK_N
        lo = split * KS
        hi = tl.minimum(lo + KS, n_end)
        return lo, tl.minimum(n_full, hi), tl.maximum(n_full, lo), hi


@triton.jit
def _shared_max(SplitM, rows, row_ok, n_rows, SPLITS):
    """The row max of a split call: the max of every split's (``SplitM``: int32 (splits, n_rows))."""
    m = tl.full(rows.shape, MASKED, tl.int32)
    for i in range(0, SPLITS):
        m = tl.maximum(m, tl.load(SplitM + i * n_rows + rows, mask=row_ok, other=MASKED))
    return m


@triton.jit
def _merge_splits(l, sums, bad, SplitL, SplitAcc, SplitCount, rows, row_ok, offs_d, n_rows, split, SPLITS,
                  D: tl.constexpr):
    """Split-key sums: each program stores its ``l`` (int32) and ``sums`` (``acc``, or the wide
    int64 sum) and counts itself done on its row block's counter (plus ``2**16`` if a V tile held
    NaN); the last of the ``SPLITS`` programs adds every split's integers, in split order (any
    order gives the same integers). Returns ``(l, sums, last, bad)``: the totals in the last
    program (zeros elsewhere), whether this program is it, and the merged NaN signal."""
    cols_ok = offs_d < D
    tl.store(SplitL + split * n_rows + rows, l, mask=row_ok)
    tile = (split * n_rows + rows).to(tl.int64)[:, None] * D + offs_d[None, :]
    tl.store(SplitAcc + tile, sums, mask=row_ok[:, None] & cols_ok[None, :])
    tl.debug_barrier()  # every thread's partial sums are written before the program counts itself done
    bad_bit = tl.max((bad != bad).to(tl.int32), 0)
    done = tl.atomic_add(SplitCount, 1 + (bad_bit << 16))  # acq_rel: the others' sums are visible
    last = (done & 0xFFFF) == SPLITS - 1
    l = tl.zeros_like(l)
    sums = tl.zeros_like(sums)
    for i in range(0, SPLITS):  # L2 reads (.cg): the partial sums came from other SMs
        l += tl.load(SplitL + i * n_rows + rows, mask=row_ok & last, other=0, cache_modifier=".cg")
        tile = (i * n_rows + rows).to(tl.int64)[:, None] * D + offs_d[None, :]
        sums += tl.load(SplitAcc + tile, mask=(row_ok & last)[:, None] & cols_ok[None, :], other=0,
                        cache_modifier=".cg")
    bad = tl.where((done >> 16) + bad_bit > 0, float("nan"), tl.zeros_like(bad))
    return l, sums, last, bad


@triton.jit
def _probabilities(s, m, ok, fx, rc, req_M, lut, EXP_FN: tl.constexpr, EXP_ARGS: tl.constexpr,
                   PRESCALED: tl.constexpr, FUSED: tl.constexpr, P_ARGS: tl.constexpr, REQ_SHIFT: tl.constexpr,
                   P_BITS: tl.constexpr, NEGATE: tl.constexpr, MASKING: tl.constexpr, PACKED: tl.constexpr,
                   ROW_TABLE: tl.constexpr, PTX: tl.constexpr):
    """``P`` of a tile of logits against the row references ``m`` (int32), 0 where ``MASKING`` and
    not ``ok``: the fused strategy from its row multiplier ``fx = M`` and constants at ``P_max``,
    else the exp and the requantization. ``NEGATE``: ``127 - P``. ``PACKED`` (fused): as ``y``
    (``P = (y + 1) >> 1``), which :func:`~qflash.ptx.pack_half_round` (7 bits) rounds into the int8
    MMA operand four at a time, or (9-14 bits) as ``y + 1``, which :func:`~qflash.ptx.split_half`
    splits into the two of ``P = 128 hi + lo`` (the ``+ 1`` here, not at the split: 48 SASS
    instructions fewer in the static Swin kernel with Q per token)."""
    if FUSED:
        y = fused_y(m[:, None] - s, fx, P_ARGS, PTX)
        if MASKING:
            y = tl.where(ok, y, 0)
        if NEGATE:
            p = (254 - y) >> 1
        elif PACKED and P_BITS <= 7:
            p = y
        elif PACKED:
            p = y + 1
        else:
            p = (y + 1) >> 1
    else:
        rc2 = (_rows(rc[0], ROW_TABLE), _rows(rc[1], ROW_TABLE), _rows(rc[2], ROW_TABLE), _rows(rc[3], ROW_TABLE),
               _rows(rc[4], ROW_TABLE), _rows(rc[5], ROW_TABLE), _rows(rc[6], ROW_TABLE))
        e = _exp(m[:, None] - s, rc2, lut, EXP_FN, EXP_ARGS, PRESCALED)
        p = tl.minimum((e * _rows(req_M, ROW_TABLE) + (1 << (REQ_SHIFT - 1))) >> REQ_SHIFT, (1 << P_BITS) - 1)
        if MASKING:
            p = tl.where(ok, p, 0)
        if NEGATE:
            p = 127 - p
    return p


@triton.jit
def _sums_tile(q, j, m, fx, sums, bad, k_base, v_base, mask_base, skn, skd, svn, svd, smm, smn, offs_m,
               offs_d, NQ, NK, NK_V, rc, req_M, rel_M, bias_inv, inv, lut, D: tl.constexpr, WIDTH: tl.constexpr,
               EXP_FN: tl.constexpr, EXP_ARGS: tl.constexpr, PRESCALED: tl.constexpr, FUSED: tl.constexpr,
               P_ARGS: tl.constexpr, REQ_SHIFT: tl.constexpr, P_BITS: tl.constexpr, MASK_KIND: tl.constexpr,
               PADDED: tl.constexpr, ROW_TABLE: tl.constexpr, PTX: tl.constexpr, QUANT: tl.constexpr,
               HI_SUM: tl.constexpr, ONLINE: tl.constexpr, REL_SHIFT: tl.constexpr, MMA_ORDER: tl.constexpr,
               ALU_SUMS: tl.constexpr):
    """One key tile into the MMA-held sums; returns ``(sums, bad, m)``. Two-pass: pass 2, the
    reference ``m`` fixed. ``ONLINE`` (``ScaleRelease(acc_bits=64)``): ``m`` moves to the tile's
    max first and the wide sums of the rows it moved are released (:func:`_release_wide`).
    ``sums = (l, acc, l_hi, acc_hi)``: the P.V MMAs
    into ``acc`` (BLOCK_M, D_PAD) and ``sum P`` into ``l`` (BLOCK_M, 16) by one more MMA against
    ones (its 16 columns are equal); with ``ALU_SUMS`` (7 and 9-14 bits) by ``dp4a`` in
    :func:`~qflash.ptx.pack_half_round` or :func:`~qflash.ptx.split_half` instead, ``l`` per value (BLOCK_M, TILE) over full tiles (row
    sums after their loop) and a row vector in padded tiles. 8-bit ``P`` runs as ``127 - P`` (``l`` and ``acc`` then hold
    ``sum (127 - P)`` and ``-sum P V``, corrected by the caller and by a constant MMA here); 9-14
    bits as ``P``'s low seven bits and ``P >> 7``, whose MMAs accumulate in ``l_hi`` and
    ``acc_hi`` (``HI_SUM``: the sums are ``128 hi + lo``, added in the epilogue) or are added 128
    times per tile (one IMAD per output; two registers fewer per output element).
    Masking: a user mask's keys by their logit; padding keys (zero rows of K, garbage or zero
    columns of V) by their index. ``inv``: ``(inv_k, inv_v)`` of float K and V (``QUANT``); ``bad``
    accumulates V's NaN signal (:func:`_tile_v`). Online, 8-bit ``P`` runs split like 9-14 bits
    (the offset form's sums do not rescale)."""
    USER_MASK: tl.constexpr = MASK_KIND != MASK_NONE
    # ``WIDTH`` keys per tile, padded to the int8 MMA's 32 (online rules take the recipe's block_n)
    TILE: tl.constexpr = WIDTH if WIDTH >= 32 else 32
    PAD: tl.constexpr = PADDED or WIDTH < 32
    s = _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_d, j, NQ, NK, bias_inv, inv[0], D, WIDTH,
                     TILE, MASK_KIND, PAD, USER_MASK or ONLINE, ROW_TABLE, QUANT, PTX, MMA_ORDER)
    if USER_MASK:
        ok = s > MASKED
    else:
        keys = _key_order(TILE, MMA_ORDER)
        ok = ((j + keys < NK) & (keys < WIDTH))[None, :]
    if ONLINE:
        m_new = tl.maximum(m, tl.max(s, 1))
        moved = (m_new > m) & (m > MASKED)
        if tl.sum(moved.to(tl.int32), 0) > 0:
            alpha = _exp(tl.where(moved, m_new - m, 0), rc, lut, EXP_FN, EXP_ARGS, PRESCALED)
            a = tl.where(moved, alpha * rel_M, 1 << REL_SHIFT).to(tl.int64)[:, None]  # (2**S: unchanged)
            l, acc, l_hi, acc_hi = sums
            l, l_hi = _release_wide(l, l_hi, a, REL_SHIFT)
            acc, acc_hi = _release_wide(acc, acc_hi, a, REL_SHIFT)
            sums = (l, acc, l_hi, acc_hi)
        m = m_new
    NEGATE: tl.constexpr = P_BITS == 8 and not ONLINE
    PACKED: tl.constexpr = FUSED and not NEGATE
    p = _probabilities(s, m, ok, fx, rc, req_M, lut, EXP_FN, EXP_ARGS, PRESCALED, FUSED, P_ARGS, REQ_SHIFT, P_BITS,
                       NEGATE, PAD or USER_MASK, PACKED, ROW_TABLE, PTX)
    v, v_bad = _tile_v(v_base, svn, svd, offs_d, j, NK_V, inv[1], D, WIDTH, TILE, PAD, QUANT, PTX)
    bad += v_bad
    ones = tl.full((TILE, 16), 1, tl.int8)
    l, acc, l_hi, acc_hi = sums
    # ALU_SUMS: l on the ALU (two-pass 7 and 9-14-bit P: the MMAs against ones and their waits
    # fewer), per value over the full tiles (BLOCK_M, TILE), summed into a row vector after their
    # loop; tail tiles add to that vector. Packed P's words give it by dp4a where they are made
    w = 0
    if PACKED:
        w = l if ALU_SUMS and not PADDED else tl.zeros(p.shape, tl.int32)
    if P_BITS <= 7 or NEGATE:  # one int8 operand (NEGATE: 127 - P)
        if PACKED:
            p8, p = pack_half_round(p, w, ALU_SUMS, PTX)
        else:
            p8 = pack_s8(p, PTX)
        p8 = _mma_operand(p8, MMA_ORDER)
    else:  # P = 128 hi + lo
        if PACKED:
            lo, hi, p = split_half(p, w, ALU_SUMS, PTX)
        else:
            lo = pack_s8(p & 127, PTX)
            hi = pack_s8(p >> 7, PTX)
        lo = _mma_operand(lo, MMA_ORDER)
        hi = _mma_operand(hi, MMA_ORDER)
    if ALU_SUMS:  # p: P (int32), or the packed words' sums added to l's values
        if PADDED:
            l += tl.sum(p, 1)
        elif PACKED:
            l = p
        else:
            l += p
    if P_BITS <= 7:
        acc = tl.dot(p8, v, acc, out_dtype=tl.int32)
        if not ALU_SUMS:
            l = tl.dot(p8, ones, l, out_dtype=tl.int32)
    elif NEGATE:  # sum P V = 127 sum V - sum (127 - P) V
        acc = tl.dot(p8, v, acc, out_dtype=tl.int32)
        acc = tl.dot(tl.full(p8.shape, -127, tl.int8), v, acc, out_dtype=tl.int32)
        l = tl.dot(p8, ones, l, out_dtype=tl.int32)
    else:
        acc = tl.dot(lo, v, acc, out_dtype=tl.int32)
        if not ALU_SUMS:
            l = tl.dot(lo, ones, l, out_dtype=tl.int32)
        if HI_SUM:
            acc_hi = tl.dot(hi, v, acc_hi, out_dtype=tl.int32)
            if not ALU_SUMS:
                l_hi = tl.dot(hi, ones, l_hi, out_dtype=tl.int32)
        else:
            acc += tl.dot(hi, v, out_dtype=tl.int32) * 128
            if not ALU_SUMS:
                l += tl.dot(hi, ones, out_dtype=tl.int32) * 128
    return (l, acc, l_hi, acc_hi), bad, m


@triton.jit
def _release_wide(lo, hi, a, S: tl.constexpr):
    """Scale release of a wide sum ``x = 128 hi + lo`` (int32 halves): ``(x a + 2**(S-1)) >> S``
    exactly (:func:`intsoftmax.fixedpoint.mul_rshift_round`: ``x = 2**16 xh + xl``, two int64
    products below ``2**62``), returned as ``(x' & 127, x' >> 7)``. ``a = 2**S`` leaves ``x``."""
    x = (hi.to(tl.int64) << 7) + lo
    xh = x >> 16
    x = (xh * a + (((x & 65535) * a + (1 << (S - 1))) >> 16)) >> (S - 16)
    return (x & 127).to(tl.int32), (x >> 7).to(tl.int32)


@triton.jit
def _pv(p, v, P_BITS: tl.constexpr):
    """``P . V8`` of one tile for the online rules: ``P`` as int8 (<= 7 bits), offset by 128 with a
    column-sum correction (8 bits), or split as ``hi * 2**lo_bits + lo`` (9-14 bits)."""
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
def _online_tile(q, j, m, l, acc, bad, fx, k_base, v_base, mask_base, skn, skd, svn, svd, smm, smn, offs_m, offs_d,
                 NQ, NK, rc, req_M, rel_M, headroom, bias_inv, inv, lut,
                 D: tl.constexpr, BLOCK_N: tl.constexpr, TILE: tl.constexpr, EXP_FN: tl.constexpr,
                 EXP_ARGS: tl.constexpr, PRESCALED: tl.constexpr, FUSED: tl.constexpr, P_ARGS: tl.constexpr,
                 REQ_SHIFT: tl.constexpr, P_BITS: tl.constexpr, REL_SHIFT: tl.constexpr,
                 MASK_KIND: tl.constexpr, PADDED: tl.constexpr, ROW_TABLE: tl.constexpr, PTX: tl.constexpr,
                 QUANT: tl.constexpr):
    """One ``block_n`` key tile of an online rule; returns the new row state ``(m, l, acc, bad)``
    (``inv`` and ``bad`` as in :func:`_sums_tile`)."""
    s = _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_d, j, NQ, NK, bias_inv, inv[0], D,
                     BLOCK_N, TILE, MASK_KIND, PADDED, True, ROW_TABLE, QUANT, PTX)
    tile_max = tl.max(s, 1)
    m_new = tl.where(tile_max > m, tile_max + headroom, m)
    moved = (m_new > m) & (m > MASKED)
    if tl.sum(moved.to(tl.int32), 0) > 0:  # release the old scale, per row (int64 products)
        alpha = _exp(tl.where(moved, m_new - m, 0), rc, lut, EXP_FN, EXP_ARGS, PRESCALED)
        a = (alpha * rel_M).to(tl.int64)
        half: tl.constexpr = 1 << (REL_SHIFT - 1)
        acc = tl.where(moved[:, None], ((acc.to(tl.int64) * a[:, None] + half) >> REL_SHIFT).to(tl.int32), acc)
        l = tl.where(moved, ((l.to(tl.int64) * a + half) >> REL_SHIFT).to(tl.int32), l)
    m = m_new
    p = _probabilities(s, m, s > MASKED, fx, rc, req_M, lut, EXP_FN, EXP_ARGS, PRESCALED, FUSED, P_ARGS, REQ_SHIFT,
                       P_BITS, False, PADDED or MASK_KIND != MASK_NONE, False, ROW_TABLE, PTX)
    l += tl.sum(p, 1)
    v, v_bad = _tile_v(v_base, svn, svd, offs_d, j, NK, inv[1], D, BLOCK_N, TILE, PADDED, QUANT, PTX)
    acc += _pv(p, v, P_BITS)
    return m, l, acc, bad + v_bad


@triton.jit
def _float_tile(q, j, m, l, acc, bad, a_row, k_base, v_base, mask_base, sk_base, sskn, skn, skd, svn, svd, smm, smn,
                offs_m, offs_d, NQ, NK, D: tl.constexpr, BLOCK_N: tl.constexpr, TILE: tl.constexpr, EXP_FN: tl.constexpr,
                P_BITS: tl.constexpr, MASK_KIND: tl.constexpr, PTX: tl.constexpr):
    """One ``block_n`` key tile of the float softmax baseline (:mod:`intsoftmax.intfa`, in the same
    float32 steps): base-2 logits ``f32(S) * a_row * s_k`` (+ the bias), ``-inf`` where masked; the
    running max ``m``, ``alpha = exp2(m - m')``, ``P = floor(P_max exp2(x - m') + 1/2)`` (int8 into
    the MMA), ``l`` and ``acc`` in float32. ``bad``: rows that met a NaN or ``+inf`` logit."""
    INT_MASK: tl.constexpr = MASK_NONE if MASK_KIND == MASK_FLOAT else MASK_KIND
    s = _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_d, j, NQ, NK, 1.0, 1.0, D, BLOCK_N, TILE,
                     INT_MASK, True, True, False, False, PTX)
    n = j + tl.arange(0, TILE)
    x = s.to(tl.float32) * a_row[:, None] * tl.load(sk_base + n * sskn, mask=n < NK, other=0.0)[None, :]
    if MASK_KIND == MASK_FLOAT:
        inside = (offs_m[:, None] < NQ) & (n[None, :] < NK)
        x = x + tl.load(mask_base + offs_m[:, None] * smm + n[None, :] * smn, mask=inside, other=0.0).to(tl.float32) * LOG2E
    x = tl.where(s > MASKED, x, float("-inf"))
    bad = bad | tl.max(((x != x) | (x == float("inf"))).to(tl.int32), 1)
    m_new = tl.maximum(m, tl.max(x, 1))
    live = m_new > float("-inf")
    alpha = tl.where(live, EXP_FN(m - m_new, 0, 0, 0, ()), 0.0)
    p = tl.where(live[:, None], EXP_FN(x - m_new[:, None], 0, 0, 0, ()), 0.0)
    P = tl.floor(p * ((1 << P_BITS) - 1) + 0.5)
    l = alpha * l + tl.sum(P, 1)
    v, _ = _tile_v(v_base, svn, svd, offs_d, j, NK, 1.0, D, BLOCK_N, TILE, True, False, PTX)
    acc = acc * alpha[:, None] + tl.dot(P.to(tl.int8), v, out_dtype=tl.int32).to(tl.float32)
    return m_new, l, acc, bad


@triton.jit
def _narrow(wide, l):
    """:func:`intsoftmax.golden.narrow` and the clamp to ``+-128 l`` after it: int64 ``wide`` and
    int32 ``l`` to an int32 ``acc`` and an ``l`` below ``2**24``. ``bitlen(l)`` from ``l``'s
    float64 exponent (exact); ``l = 0`` gives ``sh = 0``."""
    sh = tl.maximum(frexp_exponent(l.to(tl.float64)) - 24, 0)
    rounded = ((wide >> tl.maximum(sh - 1, 0)[:, None]) + 1) >> 1
    acc = tl.where(sh[:, None] > 0, rounded, wide)
    l = (l >> sh).to(tl.int32)
    bound = 128 * l.to(tl.int64)[:, None]
    return tl.minimum(tl.maximum(acc, -bound), bound).to(tl.int32), l


@triton.jit
def _normalize(acc, l, ROUNDING: tl.constexpr, OUT_FRAC: tl.constexpr, PTX: tl.constexpr):
    """:func:`intsoftmax.golden.normalize`: ``o = (acc r + 2**(s-1)) >> s`` as
    ``((acc r) >> (s - 1) + 1) >> 1``, one ``IMAD.WIDE``, a funnel shift (``s - 1 <= 32``), an add
    and a shift per output. Per row: ``e = min(floor(log2 l), F + 3)`` read from ``l``'s float64
    exponent, ``r = 2**(30 + e) // l`` (at most ``2**30``) from the hardware's float64 reciprocal
    refined by one Newton step (relative error ~``2**-40``, so the product is within one of the
    quotient), then corrected to the floor exactly in int64. ``ROUNDING``: clamp ``acc`` to
    ``+-128 l`` (a no-op unless online rescales rounded)."""
    l64 = l.to(tl.int64)
    lf = tl.maximum(l64, 1).to(tl.float64)
    e = tl.minimum(frexp_exponent(lf) - 1, OUT_FRAC + 3)
    num = ((e + 30 + 1023) << 52).to(tl.float64, bitcast=True)
    inv = rcp_f64(lf, PTX)
    inv = inv + inv * (1.0 - lf * inv)
    r = (num * inv).to(tl.int64)
    n64 = num.to(tl.int64)
    r = tl.where(r * l64 > n64, r - 1, tl.where((r + 1) * l64 <= n64, r + 1, r))
    r = tl.where(l64 > 0, r, 0).to(tl.int32)
    sh1 = (e + (29 - OUT_FRAC)).to(tl.int32)
    if ROUNDING:
        acc = tl.minimum(tl.maximum(acc, -128 * l[:, None]), 128 * l[:, None])
    x = mul_wide(acc, r[:, None], False, PTX)
    return (shr_funnel(x, sh1[:, None], PTX) + 1) >> 1


@triton.jit
def _dequantize(acc, l, deq, cols, PAIR: tl.constexpr, ROUNDING: tl.constexpr, OUT_FRAC: tl.constexpr,
                SV_COLS: tl.constexpr, PTX: tl.constexpr):
    """The float output of a row's pair ``(acc, l)``; ``deq = s_v 2**-F`` (NaN on poisoned rows),
    ``cols``: V's scales per channel (``SV_COLS``). ``PAIR`` (:func:`intsoftmax.golden.dequantize_pair`):
    ``f32(acc) * f32(s_v / l)``, one multiply per output and one division per row (``l < 2**24``
    is exact in float32; ``deq 2**F`` is ``s_v`` exactly); per channel ``(f32(acc) * f32(1 / l)) *
    s_c``; 0 where ``l = 0``. Else the integer output ``o = round(acc 2**F / l)`` dequantized:
    ``o deq``, per channel ``o s_c 2**-F``. (``deq - deq`` carries only a NaN.)"""
    if PAIR:
        if ROUNDING:  # the online rules' rounding excess, clamped as golden.row_sums does
            acc = tl.minimum(tl.maximum(acc, -128 * l[:, None]), 128 * l[:, None])
        lf = l.to(tl.float32)[:, None]
        if SV_COLS:
            num = 1.0 + (deq - deq) + tl.zeros_like(lf)
        else:
            num = deq * (2.0 ** OUT_FRAC) + tl.zeros_like(lf)
        w = tl.where(lf > 0, tl.math.div_rn(num, tl.maximum(lf, 1.0)), deq - deq)
        res = acc.to(tl.float32) * w
        if SV_COLS:
            res = res * cols
    else:
        o = _normalize(acc, l, ROUNDING, OUT_FRAC, PTX).to(tl.float32)
        if SV_COLS:
            res = o * (cols * (2.0 ** -OUT_FRAC)) + (deq - deq)
        else:
            res = o * deq
    return res


@triton.jit
def _constant(trow, derived, COL: tl.constexpr, DERIVE: tl.constexpr):
    """Column ``COL`` of this program's constant row: loaded from the table, or ``DERIVE``d in
    the prologue (:func:`qflash.quantize.table_row`)."""
    if DERIVE:
        return derived[COL]
    else:
        return tl.load(trow + COL)


@triton.jit(do_not_specialize=["scale_bits", "split_tiles", "H_M", "H_SH"])
def _qflash_fwd(
    Q, K, V, Out, Tab, Mask, Lut, Flags, AmaxQ, AmaxK, AmaxV, Voff, SvCols, SplitM, SplitL, SplitAcc, SplitCount,
    SqRows, SkCols,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod,
    stb, sth, stm, smb1, smb2, smh, smm, smn, sabq, sahq, sabk, sahk, sabv, sahv,
    ssqb, ssqh, ssqm, sskb, sskh, sskn, ssvb, ssvh, ssvd,
    H, H_M, H_SH, BH, B2, NQ, NK, NK_V, scale_bits, split_tiles, row0,
    D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_N: tl.constexpr,
    EXP_FN: tl.constexpr, EXP_ARGS: tl.constexpr, PRESCALED: tl.constexpr, FUSED: tl.constexpr,
    P_ARGS: tl.constexpr, REQ_SHIFT: tl.constexpr, ROW_FN: tl.constexpr, ROW_ARGS: tl.constexpr,
    HEADROOM_LIMITS: tl.constexpr, P_BITS: tl.constexpr,
    TWO_PASS: tl.constexpr, REL_SHIFT: tl.constexpr, MASK_KIND: tl.constexpr, OUT_KIND: tl.constexpr,
    OUT_FRAC: tl.constexpr, ROW_TABLE: tl.constexpr, PTX: tl.constexpr, FLAGS: tl.constexpr, QUANT: tl.constexpr,
    VOFF: tl.constexpr, ONE_TILE: tl.constexpr, SV_COLS: tl.constexpr, ACC64: tl.constexpr, CHUNK: tl.constexpr,
    DERIVE: tl.constexpr, SPLIT: tl.constexpr, FLOAT_SOFTMAX: tl.constexpr, Q_ROWS: tl.constexpr,
    HI_SUM: tl.constexpr, PAIR_OUT: tl.constexpr, ROW_LAUNCH: tl.constexpr, SCALES: tl.constexpr,
    MMA_ORDER: tl.constexpr, ROW_MAX_N: tl.constexpr, ALU_SUMS: tl.constexpr, PREFETCH: tl.constexpr,
):
    if PTX and ROW_LAUNCH == ROWS_MAIN:  # the last rows' launch may start as this launch's last wave runs
        gdc_launch_dependents()
    pid_m = tl.program_id(0)
    if SPLIT == SPLIT_NONE:  # the (batch, head) slices over grid dims 1 and 2 (each at most GRID_YZ)
        bh = tl.program_id(1) + tl.program_id(2) * tl.num_programs(1)
        split = 0
    else:
        bh = tl.program_id(1)
        split = tl.program_id(2)  # which range of keys this program takes
    live = bh < BH  # (spare programs of the last slab recompute the last slice and store nothing)
    bh = tl.minimum(bh, BH - 1)
    b = (mul_wide(bh, H_M, True, PTX) >> H_SH).to(tl.int32)  # bh // H by a multiply (div_magic)
    h = bh - b * H
    row_lo = row0 + pid_m * BLOCK_M
    offs_m = row_lo + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    row_ok = offs_m < NQ
    logit_scale = scale_bits.to(tl.int64).to(tl.float64, bitcast=True)  # (DERIVE and FLOAT_SOFTMAX read it)

    q = _load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd, row_ok, offs_d < D, True,
              D < D_PAD)
    if ONE_TILE and QUANT and PREFETCH:  # the program's only K and V tiles on their way during the prologue
        _prefetch_tile(K + b * skb + h * skh, skn, skd, NK, BLOCK_N, D_PAD, PTX)
        _prefetch_tile(V + b * svb + h * svh, svn, svd, NK, BLOCK_N, D_PAD, PTX)
    # QUANT: float q, k, v quantized on load with their ranges (per tensor or per head; Q_ROWS: Q's
    # per token, measured here on the rows the program loaded, NaN where a row holds one)
    inv = (1.0, 1.0)
    inv_q = 1.0
    derived = 0
    if QUANT:
        # every range loaded before the first division: a division's slow path is a branch, which
        # no later load passes (loaded one after another, their latencies added up)
        amax_k = tl.load(AmaxK + b * sabk + h * sahk)
        amax_v = tl.load(AmaxV + b * sabv + h * sahv)
        if not Q_ROWS:
            amax_q = tl.load(AmaxQ + b * sabq + h * sahq)
        s_k, inv_k = scale_inv(amax_k)
        s_v, inv_v = scale_inv(amax_v)
        if Q_ROWS:
            amax_q = tl.reduce(tl.abs(q.to(tl.float32)), 1, _nan_max)
        s_q, inv_q = scale_inv(amax_q)
        if Q_ROWS:
            inv_q = inv_q[:, None]
        inv = (inv_k, inv_v)
        if DERIVE:  # the constant row from the ranges, as the table kernel derives it (no table launch)
            derived = table_row(s_q, s_k, s_v, logit_scale, 1.0,
                                ROW_FN, ROW_ARGS, REL_SHIFT, HEADROOM_LIMITS, OUT_FRAC, False, PTX)
    elif SCALES:  # int8 inputs with their float32 scales: the constants derived here too (no table launch)
        if Q_ROWS:  # Q per token: one constant row per query
            s_q = tl.load(SqRows + b * ssqb + h * ssqh + tl.minimum(offs_m, NQ - 1) * ssqm)
        else:
            s_q = tl.load(AmaxQ + b * sabq + h * sahq)
        derived = table_row(s_q, tl.load(AmaxK + b * sabk + h * sahk), tl.load(AmaxV + b * sabv + h * sahv),
                            logit_scale, 1.0, ROW_FN, ROW_ARGS, REL_SHIFT, HEADROOM_LIMITS, OUT_FRAC, False, PTX)
    # the integer constants: scalars (one table row per program), or per query row
    trow = Tab + b * stb + h * sth
    if ROW_TABLE:
        trow = trow + tl.minimum(offs_m, NQ - 1) * stm
    rc = (_constant(trow, derived, PRE_M, DERIVE), _constant(trow, derived, PRE_L, DERIVE),
          _constant(trow, derived, PRE_R, DERIVE), _constant(trow, derived, T_CAP, DERIVE),
          _constant(trow, derived, U_MAX, DERIVE), _constant(trow, derived, EXP_C0, DERIVE),
          _constant(trow, derived, EXP_C1, DERIVE))
    req_M = _constant(trow, derived, REQ_M, DERIVE)
    bias_inv = _constant(trow, derived, BIAS_INV, DERIVE).to(tl.float32, bitcast=True)

    q, q_bad = _quant(q, inv_q, QUANT, PTX)
    bad = tl.zeros((BLOCK_M,), tl.float32)  # NaN once a V tile held NaN or Inf (QUANT)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    mask_base = Mask + (b // B2) * smb1 + (b % B2) * smb2 + h * smh

    acc = tl.zeros((BLOCK_M, D_PAD), tl.int32)
    # keys [0, n_full) in full tiles (masked only by a user mask), the rest up to n_end in
    # masked tiles; causal rows skip the keys past their block's last row
    if MASK_KIND == MASK_CAUSAL:
        n_end = tl.minimum(NK, row_lo + BLOCK_M)
        n_full = tl.minimum(row_lo + 1, NK) // BLOCK_N * BLOCK_N
    else:
        n_end = NK
        n_full = (NK // BLOCK_N) * BLOCK_N
    FULL_MASK: tl.constexpr = MASK_NONE if MASK_KIND == MASK_CAUSAL else MASK_KIND
    fx = _rows(rc[5], ROW_TABLE)  # the fused exp's row multiplier
    if FLOAT_SOFTMAX:  # INT-FlashAttention's baseline: per-token scales, a float32 online softmax
        a_row = tl.load(SqRows + b * ssqb + h * ssqh + offs_m * ssqm, mask=row_ok, other=0.0) * \
            logit_scale.to(tl.float32) * LOG2E
        m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D_PAD), tl.float32)
        nan_rows = tl.zeros((BLOCK_M,), tl.int32)
        for j in range(0, n_end, BLOCK_N):
            m, l, acc, nan_rows = _float_tile(q, j, m, l, acc, nan_rows, a_row, k_base, v_base, mask_base,
                                              SkCols + b * sskb + h * sskh, sskn, skn, skd, svn, svd, smm, smn, offs_m,
                                              offs_d, NQ, NK,
                                              D, BLOCK_N, TILE_N, EXP_FN, P_BITS, MASK_KIND, PTX)
    elif TWO_PASS or ACC64:
        # sum P in each of 16 equal columns (an MMA against ones), sum P V; HI_SUM: each as 128 hi + lo
        # (P's high part's MMAs, and ACC64's carries from acc, go to hi). ACC64 without TWO_PASS: the
        # online wide rule (ScaleRelease(acc_bits=64)), the same loops with the reference moving
        ONLINE: tl.constexpr = not TWO_PASS
        rel_M = _constant(trow, derived, REL_M, DERIVE) if ONLINE else 0
        if ALU_SUMS:  # sum P on the ALU: per value of a full tile (row sums after its loop), or in 16 equal columns
            l2 = tl.zeros((BLOCK_M,), tl.int32) if ONE_TILE else tl.zeros((BLOCK_M, TILE_N), tl.int32)
            l2_hi = 0
        else:
            l2 = tl.zeros((BLOCK_M, 16), tl.int32)
            l2_hi = tl.zeros((BLOCK_M, 16), tl.int32)
        if HI_SUM:
            sums = (l2, acc, l2_hi, tl.zeros((BLOCK_M, D_PAD), tl.int32))
        else:
            sums = (l2, acc, 0, 0)
        if ONE_TILE:  # (two-pass only) the tile's own max is the row max: no first pass
            s = _tile_logits(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_d, 0, NQ, NK, bias_inv, inv[0], D,
                             BLOCK_N, BLOCK_N, MASK_KIND, True, True, ROW_TABLE, QUANT, PTX, MMA_ORDER)  # (_sums_tile's)
            m = tl.max(s, 1)
            sums, bad, m = _sums_tile(q, 0, m, fx, sums, bad, k_base, v_base, mask_base, skn, skd, svn, svd,
                                      smm, smn, offs_m, offs_d, NQ, NK, NK_V, rc, req_M, rel_M, bias_inv, inv, Lut, D,
                                      BLOCK_N, EXP_FN, EXP_ARGS, PRESCALED, FUSED, P_ARGS, REQ_SHIFT, P_BITS,
                                      MASK_KIND, True, ROW_TABLE, PTX, QUANT, HI_SUM, False, REL_SHIFT, MMA_ORDER, ALU_SUMS)
        else:
            keys = _key_range(n_full, n_end, split, split_tiles, BLOCK_N, SPLIT)
            n_rows = tl.num_programs(1) * NQ  # split-key scratch: one entry per (batch, head, query row)
            rows = bh * NQ + offs_m
            if ONLINE:
                m = tl.full((BLOCK_M,), MASKED, tl.int32)
            elif SPLIT == SPLIT_SUM:  # the splits' maxima, from the launch before
                m = _shared_max(SplitM, rows, row_ok, n_rows, tl.num_programs(2))
            else:
                m = _row_max(q, k_base, skn, skd, mask_base, smm, smn, offs_m, offs_d, NQ, NK, bias_inv, inv[0],
                             keys, D, BLOCK_M, BLOCK_N, FULL_MASK, MASK_KIND, ROW_TABLE, QUANT, PTX, ROW_MAX_N)
            if SPLIT == SPLIT_MAX:
                tl.store(SplitM + split * n_rows + rows, m, mask=row_ok)
            else:  # pass 2 over the same keys (online: the only pass)
                for j in range(keys[0], keys[1], BLOCK_N):
                    sums, bad, m = _sums_tile(q, j, m, fx, sums, bad, k_base, v_base, mask_base, skn, skd, svn, svd,
                                              smm, smn, offs_m, offs_d, NQ, NK, NK_V, rc, req_M, rel_M, bias_inv, inv,
                                              Lut, D, BLOCK_N, EXP_FN, EXP_ARGS, PRESCALED, FUSED, P_ARGS, REQ_SHIFT,
                                              P_BITS, FULL_MASK, False, ROW_TABLE, PTX, QUANT, HI_SUM, ONLINE, REL_SHIFT,
                                              MMA_ORDER, ALU_SUMS)
                    if ACC64:  # every CHUNK keys: acc's bits above 7 into acc_hi (acc keeps 0 <= acc < 128)
                        if (j + BLOCK_N) % CHUNK == 0:
                            l2, acc, l2_hi, acc_hi = sums
                            sums = (l2, acc & 127, l2_hi, acc_hi + (acc >> 7))
                if ALU_SUMS:  # the full tiles' sums per value to row sums
                    sums = (tl.sum(sums[0], 1), sums[1], sums[2], sums[3])
                # the last keys in 32-key tiles (two-pass sums do not depend on the tiles), online in the
                # recipe's tiles, as the golden model's rescales fall
                TAIL_N: tl.constexpr = BLOCK_N if ONLINE else TAIL
                for j in range(keys[2], keys[3], TAIL_N):
                    sums, bad, m = _sums_tile(q, j, m, fx, sums, bad, k_base, v_base, mask_base, skn, skd, svn, svd,
                                              smm, smn, offs_m, offs_d, NQ, NK, NK_V, rc, req_M, rel_M, bias_inv, inv,
                                              Lut, D, TAIL_N, EXP_FN, EXP_ARGS, PRESCALED, FUSED, P_ARGS, REQ_SHIFT,
                                              P_BITS, MASK_KIND, True, ROW_TABLE, PTX, QUANT, HI_SUM, ONLINE, REL_SHIFT,
                                              MMA_ORDER, ALU_SUMS)
        l2, acc, l2_hi, acc_hi = sums
        if not ALU_SUMS:
            l = tl.max(l2, 1)
        elif SPLIT == SPLIT_MAX:  # (no pass 2: no sums)
            l = tl.zeros((BLOCK_M,), tl.int32)
        else:
            l = l2
        if HI_SUM:  # (l fits int32, and acc unless ACC64: the recipe's key limit)
            if not ALU_SUMS:
                l += tl.max(l2_hi, 1) << 7
            if ACC64:
                wide = (acc_hi.to(tl.int64) << 7) + acc.to(tl.int64)
            else:
                acc += acc_hi << 7
        if P_BITS == 8 and TWO_PASS:  # undo the offset form: l held sum (127 - P) over the tiled keys, acc -sum P V
            if ONE_TILE:
                n_tiled = BLOCK_N
            else:  # (a split's ranges may be empty)
                n_tiled = tl.maximum(keys[1] - keys[0], 0) + tl.maximum(tl.cdiv(keys[3] - keys[2], TAIL), 0) * TAIL
            l = 127 * n_tiled - l
            acc = -acc
            if ACC64:
                wide = -wide
        if SPLIT == SPLIT_SUM:
            count = SplitCount + bh * tl.num_programs(0) + pid_m
            if ACC64:
                l, wide, last, bad = _merge_splits(l, wide, bad, SplitL, SplitAcc, count, rows, row_ok, offs_d, n_rows,
                                                   split, tl.num_programs(2), D)
            else:
                l, acc, last, bad = _merge_splits(l, acc, bad, SplitL, SplitAcc, count, rows, row_ok, offs_d, n_rows,
                                                  split, tl.num_programs(2), D)
        if ACC64:  # l to 24 bits, acc to its scale: int32 again
            acc, l = _narrow(wide, l)
    else:
        l = tl.zeros((BLOCK_M,), tl.int32)
        rel_M = _constant(trow, derived, REL_M, DERIVE)
        headroom = _constant(trow, derived, HEADROOM, DERIVE)
        m = tl.full((BLOCK_M,), MASKED, tl.int32)
        # full tiles need no padding (and, unmasked, no masking); the last partial tile does.
        # Tiles start at multiples of block_n, as the golden model's (online integers depend on them)
        n_full = n_full if TILE_N == BLOCK_N else 0
        for j in range(0, n_full, BLOCK_N):
            m, l, acc, bad = _online_tile(q, j, m, l, acc, bad, fx, k_base, v_base, mask_base, skn, skd, svn, svd, smm,
                                          smn, offs_m, offs_d, NQ, NK, rc, req_M, rel_M, headroom, bias_inv, inv, Lut,
                                          D, BLOCK_N, TILE_N, EXP_FN, EXP_ARGS, PRESCALED, FUSED, P_ARGS, REQ_SHIFT,
                                          P_BITS, REL_SHIFT, FULL_MASK, False, ROW_TABLE, PTX, QUANT)
        for j in range(n_full, n_end, BLOCK_N):
            m, l, acc, bad = _online_tile(q, j, m, l, acc, bad, fx, k_base, v_base, mask_base, skn, skd, svn, svd, smm,
                                          smn, offs_m, offs_d, NQ, NK, rc, req_M, rel_M, headroom, bias_inv, inv, Lut,
                                          D, BLOCK_N, TILE_N, EXP_FN, EXP_ARGS, PRESCALED, FUSED, P_ARGS, REQ_SHIFT,
                                          P_BITS, REL_SHIFT, MASK_KIND, True, ROW_TABLE, PTX, QUANT)

    if SPLIT != SPLIT_MAX:  # (the max launch of a split call stores only its maxima)
        out_ptrs = Out + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod
        out_mask = (row_ok & live)[:, None] & (offs_d[None, :] < D)
        if SPLIT == SPLIT_SUM:  # the last split's program stores the row block
            out_mask = out_mask & last
        if FLOAT_SOFTMAX:  # acc / l * s_v (0 where no key is live); rows that met NaN or +inf: NaN
            s_v = tl.load(SvCols + b * ssvb + h * ssvh + offs_d * ssvd, mask=offs_d < D, other=0.0)
            res = tl.where((l > 0)[:, None], tl.math.div_rn(acc, l[:, None]), 0.0) * s_v[None, :]
            res = tl.where((nan_rows != 0)[:, None], float("nan"), res)
            tl.store(out_ptrs, res.to(Out.dtype.element_ty), mask=out_mask)
        else:
            # rows that met a NaN / +inf bias or key (their max is POISON), slices whose static-range
            # inputs held NaN / Inf (Flags, or found on load): NaN out, or the value no integer output
            # takes (-2**31, -128)
            POISONABLE: tl.constexpr = MASK_KIND == MASK_FLOAT or FLAGS or QUANT
            if POISONABLE:
                poisoned = m >= POISON
                if FLAGS:
                    poisoned = poisoned | (tl.load(Flags + bh) != 0)
                if QUANT:  # NaN / Inf in q or v: every row, as the quantization flags do (K's rows have POISON)
                    if not Q_ROWS:  # (a Q row's own NaN range makes its constants, and so its output, NaN)
                        bad += tl.sum(tl.sum(q_bad, 1), 0)
                    poisoned = poisoned | (bad != bad)
                poisoned = poisoned[:, None]
            if OUT_KIND == OUT_INT32:
                o = _normalize(acc, l, not TWO_PASS, OUT_FRAC, PTX)  # (a narrowed acc is clamped already)
                if POISONABLE:
                    o = tl.where(poisoned, -2**31, o)
                tl.store(out_ptrs, o, mask=out_mask)
            elif OUT_KIND == OUT_INT8:
                o = _normalize(acc, l, not TWO_PASS, OUT_FRAC, PTX).to(tl.int64)
                out_M = _rows(tl.load(trow + OUT_M), ROW_TABLE).to(tl.int64)
                out_shift = _rows(tl.load(trow + OUT_SHIFT), ROW_TABLE).to(tl.int64)
                rounding = tl.where(out_shift > 0, tl.full(out_shift.shape, 1, tl.int64) << tl.maximum(out_shift - 1, 0), 0)
                o8 = tl.minimum(tl.maximum((o * out_M + rounding) >> out_shift, -127), 127)
                if POISONABLE:
                    o8 = tl.where(poisoned, -128, o8)
                tl.store(out_ptrs, o8.to(tl.int8), mask=out_mask)
            else:
                deq = _rows(_constant(trow, derived, DEQ, DERIVE).to(tl.float32, bitcast=True), ROW_TABLE)
                if POISONABLE:
                    deq = tl.where(poisoned, float("nan"), deq)
                cols = 1.0
                if SV_COLS:  # V per channel: each output channel has its own scale
                    cols = tl.load(SvCols + b * ssvb + h * ssvh + offs_d * ssvd, mask=offs_d < D, other=0.0)[None, :]
                res = _dequantize(acc, l, deq, cols, PAIR_OUT, not TWO_PASS, OUT_FRAC, SV_COLS, PTX)
                if VOFF:  # a value offset taken from V (input transforms), back on the rows that attend to a key
                    c = tl.load(Voff + bh * D + offs_d, mask=offs_d < D, other=0.0)
                    res += tl.where((l > 0)[:, None], c[None, :], 0.0)
                tl.store(out_ptrs, res.to(Out.dtype.element_ty), mask=out_mask)
    if PTX and ROW_LAUNCH == ROWS_TAIL:  # done only once the main launch is: later work sees both
        gdc_wait()


def readable_keys(v8) -> int:
    """Keys of ``v8`` (a (B, H, N, D) view) the kernel may read per row: ``N`` rounded up to 16
    when each row of keys is contiguous, 16-byte aligned and followed in its storage by the
    padding (as :func:`qflash.quantize.quantize_qkv` stores V), so the kernel loads 16 keys at a
    time; else ``N``. Only tensor metadata is read."""
    B, H, N, D = v8.shape
    n16 = -(-N // 16) * 16
    sb, sh, sn, sd = v8.stride()
    if n16 == N or sn != 1 or sd % 16 or v8.data_ptr() % 16 or (D > 1 and sd < n16):
        return N
    last = v8.storage_offset() + (B - 1) * sb + (H - 1) * sh + (D - 1) * sd + n16
    return n16 if last <= v8.untyped_storage().nbytes() else N


def launch(spec, q8, k8, v8, table, out, mask=None, lut=None, batch2: int = 1, block_m: int = 64,
           block_n: int | None = None, num_warps: int = 4, num_stages: int = 2, launcher=launch_kernel, flags=None,
           amax=None, voff=None, s_v=None, derive_scale: float | None = None, splits: int = 1, float_scales=None,
           q_rows: bool = False, tail_block_m: int = 0, scales=None, **options):
    """Launch the kernel on int8 ``(B, H, N, D)`` tensors (any strides) and a constant table.

    ``mask``: a tensor already broadcast (by strides) to ``(B // batch2, batch2, H, Nq, Nk)``
    of the spec's mask kind. ``out``: ``(B, H, Nq, D)`` of the spec's output kind. ``flags``:
    int32 (B*H,), nonzero where a slice's output must be NaN (:func:`qflash.quantize.quantize_qkv`).
    ``amax``: ranges ``(amax_q, amax_k, amax_v)``, float32 of shape (1,), (H,) (static) or (B*H,)
    (measured); then q8, k8, v8 are float tensors the kernel quantizes on load (bit-exact with the
    golden model).
    ``voff``: float32 (B*H, D) offsets added to the float output of every row with a live key
    (the value offset of :mod:`intsoftmax.transforms`). ``s_v``: float32 (B*H, D), V's scale per
    channel (V per channel; float output, each channel dequantized by its own).
    ``derive_scale``: with ``amax`` and no ``table`` (None), each program derives its constant row
    from the ranges and this logit scale (float output; one launch less than the table kernel).
    ``q_rows`` (with ``derive_scale``): Q is per token, its ranges measured by each program on the
    rows it loads (``amax[0]`` unread), or its scales read per row from ``scales[0]``; the derived
    constants are then one per query row.
    ``scales`` (with ``derive_scale``, no ``amax``): int8 inputs' float32 scales ``(s_q, s_k, s_v)``
    as :func:`qflash.quantize.quantize_qkv` gives them (``s_q`` (B*H, Nq) with ``q_rows``), from
    which each program derives its constants as the table kernel would: no table launch, and no
    per-row table to write and read (Q per token: 64 B per query row).
    ``block_n``: keys per tile of two-pass rules (online rules use the recipe's ``block_n``).
    ``float_scales``: the float softmax baseline's float32 scales ``(s_q, s_k, s_v)``, each of shape
    (1,), (B*H,), or (B*H, n) per row, key or channel (as :func:`qflash.quantize.quantize_qkv` gives
    them), and its logit scale ``float_scales[3]`` (no table: pass ``table=None``).
    ``splits``: split-key (two-pass rules, more than one key tile): the keys in about this many
    ranges of whole tiles, each its own program, in two launches (the splits' row maxima; then
    their sums, added by the last program of each row block); bit-exact with one launch.
    ``tail_block_m`` (two-pass rules, one launch of several key tiles): when the last row block
    holds at most this many rows, it runs as a second launch of ``tail_block_m``-row programs of
    one warp (``mma.sync``; keys tiled as :func:`tail_config` says), instead of padding it to
    ``block_m`` rows of four: ViT's 197 queries cost 3 x 64 + 16 rows, not 4 x 64. On a GPU that
    launch is programmatically dependent (PDL): it starts as the first one's last wave runs, and
    ends after it. Bit-exact either way.
    ``launcher``: how to launch (:func:`qflash.launcher.launch`; the benchmark compares it
    with Triton's own ``kernel[grid](...)``).
    """
    B, H, NQ, D = q8.shape
    NK = k8.shape[2]
    if spec.two_pass:
        block_n = block_n or 64
    else:
        block_n = spec.block_n
    derive = derive_scale is not None
    if derive and ((amax is None) == (scales is None) or table is not None or spec.out_kind == OutKind.INT8):
        raise ValueError("derive_scale needs ranges (amax) or int8 scales (scales), no table and a float or int32 "
                         "output")
    if (q_rows or scales is not None) and not derive:
        raise ValueError("q_rows and scales derive the constants in the kernel: pass derive_scale")
    if spec.float_softmax != (float_scales is not None):
        raise ValueError("the float softmax baseline takes float_scales and no table; integer recipes the reverse")
    if derive:
        table, tab_b, tab_h, tab_m = (amax or scales)[1], 0, 0, 0  # (the pointer is never read)
    elif spec.float_softmax:
        table, tab_b, tab_h, tab_m = float_scales[2], 0, 0, 0  # (never read: no integer constants)
    else:  # table rows: one, per head (static scales), or per (batch, head); times Nq when per row
        tab_b = table.stride(0) * H if table.shape[0] == B * H and table.shape[0] > H else 0
        tab_h = table.stride(0) if table.shape[0] > 1 else 0
        tab_m = table.stride(1) if table.shape[1] > 1 else 0
    mstrides = mask.stride() if mask is not None else (0, 0, 0, 0, 0)
    one_tile = spec.two_pass and NK <= block_n
    keys_per_split = split_keys(NK, block_n, splits) if spec.two_pass and not one_tile else NK
    n_splits = triton.cdiv(NK, keys_per_split)
    if n_splits > 1:  # grid dim 2: the splits
        if B * H > GRID_YZ:
            raise ValueError(f"a split-key call takes at most {GRID_YZ} (batch, head) slices, got {B * H}; "
                             "pass splits=1")
        grid = (triton.cdiv(NQ, block_m), B * H, n_splits)
    else:  # the slices over dims 1 and 2, as evenly as CUDA's limit on each allows
        slabs = triton.cdiv(B * H, GRID_YZ)
        grid = (triton.cdiv(NQ, block_m), triton.cdiv(B * H, slabs), slabs)
    scratch = (table,) * 4
    if n_splits > 1:  # per split and (batch, head, query row): the row max, l and acc; a counter per row block
        n_rows = B * H * NQ
        scratch = (empty((grid[2], n_rows), torch.int32, q8.device), empty((grid[2], n_rows), torch.int32, q8.device),
                   empty((grid[2], n_rows, D), torch.int64 if spec.acc_bits == 64 else torch.int32, q8.device),
                   empty((grid[0] * grid[1],), torch.int32, q8.device, zero=True))
    ranges = amax or scales  # the kernel's AmaxQ/K/V: ranges to quantize on load, or int8 inputs' scales
    range_strides = [x for a in ranges for x in bh_strides(a, H)] if ranges is not None else [0] * 6
    s_cols = float_scales[2] if spec.float_softmax else s_v  # V's scales, read per output channel (or None)

    def scale_strides(t):  # (b, h, row or channel) strides of a scale vector; 0 where it repeats
        return [0] * 3 if t is None else [*bh_strides(t, H), int(t.dim() == 2)]
    if spec.float_softmax:
        float_strides = scale_strides(float_scales[0]) + scale_strides(float_scales[1])
    else:  # (SqRows: Q's scales per row for the derivation from scales)
        float_strides = scale_strides(scales[0] if scales is not None else None) + [0] * 3
    ptx = not interpreted(_qflash_fwd)
    # (split phase, grid, first row, row launch, BLOCK_M, warps and launch options) of each launch
    blocks = dict(BLOCK_M=block_m, num_warps=num_warps, BLOCK_N=block_n, TILE_N=max(block_n, 32), ONE_TILE=one_tile)
    if n_splits > 1:  # split keys: two launches over every row block
        launches = [(SPLIT_MAX, grid, 0, ROWS_ALL, blocks), (SPLIT_SUM, grid, 0, ROWS_ALL, blocks)]
    elif spec.two_pass and not one_tile and NQ > block_m and 0 < NQ % block_m <= tail_block_m:
        full = NQ // block_m * block_m
        tail = dict(BLOCK_M=tail_block_m, **tail_config(NK, block_n), **({"launch_pdl": True} if ptx else {}))
        launches = [(SPLIT_NONE, (full // block_m,) + grid[1:], 0, ROWS_MAIN, blocks),
                    (SPLIT_NONE, (triton.cdiv(NQ - full, tail_block_m),) + grid[1:], full, ROWS_TAIL, tail)]
    else:
        launches = [(SPLIT_NONE, grid, 0, ROWS_ALL, blocks)]
    for phase, grid, row0, row_launch, config in launches:
        launcher(
            _qflash_fwd, grid, q8, k8, v8, out, table, mask if mask is not None else q8,
            lut if lut is not None else table, flags if flags is not None else table,
            *(ranges if ranges is not None else (table,) * 3), voff if voff is not None else table,
            s_cols if s_cols is not None else table, *scratch,
            *(float_scales[:2] if spec.float_softmax else (scales[0] if scales is not None else table, table)),
            *q8.stride(), *k8.stride(), *v8.stride(), *out.stride(),
            tab_b, tab_h, tab_m, *mstrides, *range_strides, *float_strides, *scale_strides(s_cols),
            H, *div_magic(H), B * H, batch2, NQ, NK, readable_keys(v8),
            f64_bits(float_scales[3] if spec.float_softmax else derive_scale or 1.0), keys_per_split // block_n, row0,
            enable_fp_fusion=False, ROW_TABLE=q_rows or not derive and not spec.float_softmax and table.shape[1] > 1,
            DERIVE=derive, Q_ROWS=q_rows, SCALES=scales is not None,
            PTX=ptx, FLAGS=flags is not None, QUANT=amax is not None, VOFF=voff is not None,
            SV_COLS=s_v is not None, CHUNK=spec.chunk_keys(block_n), SPLIT=phase.value, MMA_ORDER=MMA_ORDER,
            PREFETCH=PREFETCH_ONE_TILE,
            ROW_MAX_N=spec.row_max_keys(k8.element_size()), ROW_LAUNCH=row_launch.value, **spec.constexprs(),
            **{"num_stages": num_stages, **options, **config},
        )
    return out


#: Two-pass key tiles read K's rows in the order that leaves ``P`` where the int8 MMA wants its
#: operand (:func:`_key_order`); off (for timing), the layout conversion moves ``P`` between threads.
MMA_ORDER = True
#: One-tile programs on float inputs (Swin's windows, quantized on load) prefetch their K and V
#: tiles into L1 before the ranges' divisions, whose slow paths are branches no load passes
#: (measurements: docs/performance.md).
PREFETCH_ONE_TILE = True
#: Keys up to which the last rows' launch takes every key in one tile (``ONE_TILE``): no first
#: pass and one step with all its MMAs independent, instead of two chains of key tiles whose
#: latency the one-warp programs of that launch cannot hide. (Triton lays the warps of chained
#: MMAs along the rows, so a 16-row program has one warp whatever it asks.)
TAIL_ONE_TILE_KEYS = 0
#: Launch options of the last rows' launch: no register cap (one warp holds 167 registers at
#: D = 64, where the main launch's cap of 128 spilled) and two stages. H200, kernel only, batch
#: 256 (docs/performance.md): A1 / A2 / A3 `fast` 55.8 / 102.4 / 199.4 -> 50.2 / 97.9 / 192.0 us.
TAIL_OPTIONS: dict = {"maxnreg": None, "num_stages": 2}


def tail_config(nk: int, block_n: int) -> dict:
    """Warps, key tiles and options of the last rows' launch (:func:`launch`'s ``tail_block_m``):
    one warp; up to :data:`TAIL_ONE_TILE_KEYS` keys every key in one tile of a power of two (at
    least 64), else ``block_n`` tiles. Two-pass sums do not depend on the tiles: either is
    bit-exact."""
    one_tile = nk <= TAIL_ONE_TILE_KEYS
    n = max(64, triton.next_power_of_2(nk)) if one_tile else block_n
    return dict(num_warps=1, BLOCK_N=n, TILE_N=max(n, 32), ONE_TILE=one_tile, **TAIL_OPTIONS)


def div_magic(d: int) -> tuple[int, int]:
    """``(M, s)`` with ``n // d == (n * M) >> s`` for every ``0 <= n < 2**31`` (``M`` as int32 bits of
    an unsigned 32-bit multiplier): ``l = ceil(log2 d)``, ``M = floor(2**(31 + l) / d) + 1``, ``s =
    31 + l``. ``M d - 2**s`` is in ``(0, d]``, at most ``2**l``, so the error ``n (M d - 2**s) / d``
    stays below ``2**s / d`` and never reaches the next multiple (Granlund and Montgomery's
    round-up method). For ``1 <= d <= 2**16`` ``M < 2**32``. The kernel's ``b = bh // H``: one
    ``IMAD.WIDE.U32`` and a shift instead of Triton's division by a run-time integer."""
    if not 1 <= d <= 2**16:
        raise ValueError(f"head count {d} out of range: 1 to 65536 heads")
    l = (d - 1).bit_length()
    m = (1 << (31 + l)) // d + 1
    return (m - (1 << 32) if m >= 1 << 31 else m), 31 + l


def split_keys(nk: int, block_n: int, splits: int) -> int:
    """Keys per split when ``nk`` keys go in about ``splits`` ranges: whole ``block_n`` tiles (the
    last range takes the rest)."""
    return triton.cdiv(triton.cdiv(nk, max(1, splits)), block_n) * block_n
