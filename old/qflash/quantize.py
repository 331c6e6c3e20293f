"""Device-side INT8 quantization and constant derivation, bit-exact with the host (golden) versions.

Three small kernels, each the twin of a NumPy function in ``intsoftmax``:

* ``_amax_kernel``: per-tensor or per-head ``max |x|`` of q, k and v in one launch (atomic max
  on the float bits, which order like the floats for non-negative values) - :meth:`Granularity.amax`;
* ``_quantize_kernel``: ``x8 = clip(floor(x * inv + 1/2), -127, 127)`` with ``inv = 127 / amax``
  (IEEE division, no fused multiply-add) for q, k and v in one launch; per-token and per-block
  ranges are reduced in the same program - :func:`intsoftmax.granularity.quantize`;
* ``_table_kernel``: every integer constant of the per-row table from the ranges -
  :func:`intsoftmax.plan.derive_plan` and :func:`qflash.table.host_table`.

No host synchronisation anywhere: ranges and constants stay on the device. Every launch
disables fused multiply-add (``enable_fp_fusion=False``): ``floor(x * inv + 1/2)`` must round
the product before the addition, as NumPy does.
"""
from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl

from intsoftmax import plan
from intsoftmax import transforms as golden_transforms

from .exp import exp_twin
from .launcher import interpreted, launch
from .plan import empty
from .ptx import floor_s8
from .rows import F64_LOG2E, fixed_multiplier, frexp_exponent
from .table import NCOL, table_shape

GRAN_TENSOR, GRAN_HEAD, GRAN_TOKEN, GRAN_BLOCK, GRAN_CHANNEL = (tl.constexpr(i) for i in range(5))
# the core's constants, as the constexpr globals a Triton kernel may read
NORM_FRAC = tl.constexpr(plan.NORM_FRAC)
NCOLS = tl.constexpr(NCOL)
NCOLS_POW2 = tl.constexpr(triton.next_power_of_2(NCOL))
#: Programs per row block and tensor of the range reduction; each walks the rest of the slices.
AMAX_PROGRAMS = 1024
#: Elements one range program loads per step (whole slices of 64 rows; 16 KB of fp16).
AMAX_TILE = 8192


def f64_bits(x: float) -> int:
    """A float64 as the int64 bit pattern the kernels read back with a bitcast (exact, no tensor)."""
    return struct.unpack("<q", struct.pack("<d", float(x)))[0]


#: The input transforms' per-channel operations (:mod:`intsoftmax.transforms`) as kernel codes (0: none).
OP_CODES = {None: 0, golden_transforms.SUB: 1, golden_transforms.MUL: 2, golden_transforms.DIV: 3}
OP_SUB, OP_MUL = tl.constexpr(1), tl.constexpr(2)


@triton.jit
def operate(x, c, OP: tl.constexpr):
    """:func:`intsoftmax.transforms.operate` in float32, correctly rounded (``OP``: an ``OP_CODES`` value)."""
    if OP == OP_SUB:
        return x - c
    elif OP == OP_MUL:
        return x * c
    else:
        return tl.math.div_rn(x, c)


@triton.jit
def scale_inv(amax):
    """``(s, inv) = (amax / 127, 127 / amax)`` in IEEE float32, ``(1, 1)`` where ``amax = 0``; for
    a NaN range (non-finite inputs) or one below ~3.7e-37, ``s`` is NaN, so the output it
    scales comes out NaN."""
    pos = amax > 0
    safe = tl.where(pos, amax, 1.0)
    s = tl.where(pos, tl.math.div_rn(safe, 127.0), 1.0)
    inv = tl.where(pos, tl.math.div_rn(127.0, safe), 1.0)
    # a NaN range, or one so small that 127 / amax overflows (the golden model rejects it): NaN
    return tl.where((amax != amax) | (inv == float("inf")), float("nan"), s), inv


@triton.jit
def _abs_bits(X, sx, bh, H, rows, N, D: tl.constexpr, D_P2: tl.constexpr):
    """``|x|`` as int32 float bits, a ``(slices, rows, D_P2)`` tile of the slices ``bh`` (a vector;
    ``-1``: none) and ``rows`` (masked: 0). Non-negative floats order as their bits and every
    NaN's bits (above 0x7F800000) win over +inf's, so an integer max of these bits is the
    range, NaN wherever the data held NaN: no compare-and-select per element."""
    cols = tl.arange(0, D_P2)
    b = (bh // H)[:, None, None]
    h = (bh % H)[:, None, None]
    inside = (bh[:, None, None] >= 0) & (rows[None, :, None] < N) & (cols[None, None, :] < D)
    x = tl.load(X + b * sx[0] + h * sx[1] + rows[None, :, None] * sx[2] + cols[None, None, :] * sx[3],
                mask=inside, other=0.0)
    return tl.abs(x.to(tl.float32)).to(tl.int32, bitcast=True)


@triton.jit
def _amax_kernel(XS, OUT, SX, NS, H, BH, SO, D: tl.constexpr, D_P2: tl.constexpr, BLOCK_R: tl.constexpr,
                 SLICES: tl.constexpr, KINDS: tl.constexpr):
    """Ranges of q, k, v in one launch (``program_id(2)`` picks the tensor, ``program_id(0)`` a
    block of ``BLOCK_R`` rows): ``KINDS[i]`` is 0 per tensor (into ``OUT[i, 0]``), 1 per head
    (into ``OUT[i, bh]``), 4 per head and channel (into ``OUT[i, bh * D + d]``), or -1 (not
    needed here); ``SO``: ``OUT``'s row stride. Each step loads ``SLICES`` slices at once (Swin's
    49 x 32 slices are 3 KB each); the programs along axis 1 walk the slice groups with stride
    ``num_programs(1)``. A per-tensor range keeps a running max per row, reduced down the rows
    once and met with the others in one atomic per program: a reduction down the rows per step
    (across the warps, through shared memory) held it to 1.2 TB/s on the H200, an elementwise
    running max (32 more registers) to 1.7, and atomics on one address serialise."""
    which = tl.program_id(2)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    lanes = tl.arange(0, SLICES)
    cols = tl.arange(0, D_P2)
    for i in tl.static_range(3):
        if KINDS[i] >= 0:
            if which == i:
                best = tl.zeros((SLICES, BLOCK_R), tl.int32)
                for first in range(tl.program_id(1) * SLICES, BH, tl.num_programs(1) * SLICES):
                    bh = tl.where(first + lanes < BH, first + lanes, -1)
                    bits = _abs_bits(XS[i], SX[i], bh, H, rows, NS[i], D, D_P2)
                    if KINDS[i] == GRAN_CHANNEL:  # across the rows: the one reduction that crosses warps
                        tl.atomic_max(OUT + i * SO + bh[:, None] * D + cols[None, :], tl.max(bits, 1),
                                      mask=(bh[:, None] >= 0) & (cols[None, :] < D))
                    elif KINDS[i] == GRAN_HEAD:  # along the columns first (no shared memory), then rows
                        tl.atomic_max(OUT + i * SO + bh, tl.max(tl.max(bits, 2), 1), mask=bh >= 0)
                    else:  # per row (no shared memory); down the rows once, after the loop
                        best = tl.maximum(best, tl.max(bits, 2))
                if KINDS[i] == GRAN_TENSOR:
                    tl.atomic_max(OUT + i * SO, tl.max(tl.max(best, 1), 0))


@triton.jit
def _quantize_rows(X, X8, Amax, S, Flags, C, sx, s8, sa, ss, b, h, block, N, H, BH, D: tl.constexpr,
                   D_P2: tl.constexpr, BLOCK_R: tl.constexpr, ROWS: tl.constexpr, GRAN: tl.constexpr,
                   FLAGS: tl.constexpr, TRANSPOSE: tl.constexpr, PTX: tl.constexpr, OPS: tl.constexpr,
                   WHICH: tl.constexpr):
    """Quantize ``ROWS`` rows (block ``block``) of one ``(b, h)``; per-token and per-block ranges
    are reduced here, per-tensor and per-head ones read from ``Amax`` (strides ``sa``). Scales
    ``s = amax / 127`` go to ``S`` (strides ``ss``). ``FLAGS`` (static ranges, which a NaN cannot
    reach): a NaN or infinite input sets ``Flags[b * H + h]``, and the attention kernel makes
    that slice's output NaN. ``TRANSPOSE``: ``X8`` has its rows contiguous (V stored (B, H, D, N)),
    so the tile is stored transposed, its stores running along the rows. ``OPS[WHICH]``: the input
    transforms' operations on this tensor (:mod:`qflash.transforms`), applied in order with their
    constants ``C[j, b * H + h, :]`` (:func:`operate`) before the ranges and the quantization."""
    r = tl.arange(0, BLOCK_R)
    rows = block * ROWS + r
    cols = tl.arange(0, D_P2)
    inside = (rows[:, None] < N) & (r[:, None] < ROWS) & (cols[None, :] < D)
    x = tl.load(X + b * sx[0] + h * sx[1] + rows[:, None] * sx[2] + cols[None, :] * sx[3], mask=inside,
                other=0.0).to(tl.float32)
    if len(OPS[WHICH]) > 0:  # (a constexpr tuple's element tuple cannot be an argument: OPS and WHICH)
        for j in tl.static_range(len(OPS[WHICH])):
            c = tl.load(C + (j * BH + b * H + h) * D + cols, mask=cols < D, other=1.0)
            x = operate(x, c[None, :], OPS[WHICH][j])
        x = tl.where(inside, x, 0.0)  # (the padding stays 0 for the ranges reduced here)
    # ranges reduced here: x - x is NaN where x is NaN or infinite (max would skip a NaN), so a
    # non-finite row or block gets a NaN range and scale, and its outputs come out NaN
    if GRAN == GRAN_TOKEN:
        amax = (tl.max(tl.abs(x), 1) + tl.sum(x - x, 1))[:, None]
    elif GRAN == GRAN_BLOCK:
        amax = tl.zeros((BLOCK_R, 1), tl.float32) + (tl.max(tl.max(tl.abs(x), 1), 0) + tl.sum(tl.sum(x - x, 1), 0))
    elif GRAN == GRAN_CHANNEL:  # one range per column
        amax = tl.zeros((BLOCK_R, 1), tl.float32) + tl.load(Amax + b * sa[0] + h * sa[1] + cols[None, :],
                                                             mask=cols[None, :] < D, other=1.0)
    else:
        amax = tl.zeros((BLOCK_R, 1), tl.float32) + tl.load(Amax + b * sa[0] + h * sa[1])
    if FLAGS:
        finite = tl.abs(x) < float("inf")  # false for NaN too
        tl.atomic_or(Flags + b * H + h, 1, mask=tl.min(tl.min(finite.to(tl.int32), 1), 0) == 0)
    s, inv = scale_inv(amax)
    x8 = floor_s8(tl.minimum(tl.maximum(x * inv + 0.5, -127.0), 127.0), PTX)  # the clip commutes with the floor
    owner = (h == 0) | (s8[1] != 0)  # heads stored with stride 0: the first one writes
    x8_base = X8 + b * s8[0] + h * s8[1]
    if TRANSPOSE:
        # through the row padding to a multiple of 16 (the storage has it; padded rows store the
        # zeros they loaded): the mask is then uniform over 16 rows, so each thread stores its
        # 16 consecutive bytes at once instead of byte by byte (SASS: 16 STG.E.U8 per STG.E.128)
        inside_t = (rows[None, :] < (N + 15) // 16 * 16) & (r[None, :] < ROWS) & (cols[:, None] < D)
        tl.store(x8_base + cols[:, None] * s8[3] + rows[None, :] * s8[2], tl.trans(x8),
                 mask=inside_t & owner)
    else:
        tl.store(x8_base + rows[:, None] * s8[2] + cols[None, :] * s8[3], x8, mask=inside & owner)
    ok = (rows < N) & (r < ROWS)
    if GRAN == GRAN_CHANNEL:  # one scale per (b, h) and column, written by the first row block
        tl.store(S + b * ss[0] + h * ss[1] + cols[None, :] + 0 * rows[:, None], s,
                 mask=(rows[:, None] == 0) & (cols[None, :] < D))
    else:
        if GRAN == GRAN_TENSOR or GRAN == GRAN_HEAD:
            ok = ok & (rows == 0)  # one scale per (b, h) / tensor
        tl.store(S + b * ss[0] + h * ss[1] + rows * ss[2], tl.reshape(s, (BLOCK_R,)), mask=ok)


@triton.jit
def _quantize_kernel(XS, X8S, AMAX, SS_, Flags, CS, SX, S8, SA, SSS, NS, H, BH, D: tl.constexpr, D_P2: tl.constexpr,
                     BLOCK_RS: tl.constexpr, ROWS: tl.constexpr, GRANS: tl.constexpr, FLAGS: tl.constexpr,
                     TRANSPOSE: tl.constexpr, PTX: tl.constexpr, OPS: tl.constexpr):
    """q, k, v to int8 in one launch (``program_id(2)`` picks the tensor, ``program_id(1)`` a block
    of rows; the (batch, head) slices along axis 0, which has no 65535 limit)."""
    bh = tl.program_id(0)
    which = tl.program_id(2)
    for i in tl.static_range(3):
        if which == i:
            if tl.program_id(1) * ROWS[i] < NS[i]:
                _quantize_rows(XS[i], X8S[i], AMAX[i], SS_[i], Flags, CS[i], SX[i], S8[i], SA[i], SSS[i], bh // H,
                               bh % H, tl.program_id(1), NS[i], H, BH, D, D_P2, BLOCK_RS[i], ROWS[i], GRANS[i], FLAGS,
                               TRANSPOSE[i], PTX, OPS, i)


@triton.jit
def table_row(s_q, s_k, s_v, scale, out_scale, ROW_FN: tl.constexpr, ROW_ARGS: tl.constexpr,
              REL_SHIFT: tl.constexpr, HEADROOM_LIMITS: tl.constexpr, OUT_FRAC: tl.constexpr, INT8_OUT: tl.constexpr,
              PTX: tl.constexpr):
    """Every integer constant of a table row (:class:`qflash.table.Col` order, int32; ``BIAS_INV``
    and ``DEQ`` as float32 bits) from float32 scales and the float64 logit and output scales:
    scalars (the attention kernel deriving its own row, ``DERIVE``) or vectors (the table
    kernel). The exp strategy's constants come from its registered row derivation ``ROW_FN``
    (:mod:`qflash.rows`)."""
    nat = s_q.to(tl.float64) * s_k.to(tl.float64) * scale
    zero = (nat * 0).to(tl.int64)
    pre_M, pre_l, pre_r, t_cap, u_max, req_M, one, rc0, rc1 = ROW_FN(nat, zero, ROW_ARGS, PTX)
    rel_M = (1 << REL_SHIFT) // one
    h_row = tl.minimum(frexp_exponent(tl.maximum(one, 1).to(tl.float64)) - 1, HEADROOM_LIMITS[0]).to(tl.float64)
    headroom = tl.floor(tl.minimum(h_row / (nat * F64_LOG2E), HEADROOM_LIMITS[1])).to(tl.int64)
    bias_inv = (1.0 / nat).to(tl.float32).to(tl.int32, bitcast=True)
    out_M = zero
    out_shift = zero
    if INT8_OUT:
        ratio = s_v.to(tl.float64) / out_scale * (2.0 ** -NORM_FRAC)
        out_M, out_shift = fixed_multiplier(tl.minimum(ratio, 1073741824.0))
    # non-finite inputs (a NaN or infinite range) or scales that are not finite and positive: the
    # dequantized output is NaN, never plausible numbers (a host check would need a sync)
    # (Q's scales may be one per row beside scalar K and V ones: each side checked apart)
    finite_kv = (s_k > 0) & (s_k < float("inf")) & (s_v > 0) & (s_v < float("inf"))
    deq = tl.where(finite_kv, s_v * (2.0 ** -OUT_FRAC), float("nan"))
    deq = tl.where(s_q > 0, deq + (s_q - s_q), float("nan")).to(tl.int32, bitcast=True)
    return (pre_M.to(tl.int32), pre_l.to(tl.int32), pre_r.to(tl.int32), t_cap.to(tl.int32), u_max.to(tl.int32),
            req_M.to(tl.int32), rel_M.to(tl.int32), headroom.to(tl.int32), rc0.to(tl.int32), rc1.to(tl.int32),
            bias_inv, out_M.to(tl.int32), out_shift.to(tl.int32), deq)


@triton.jit(do_not_specialize=["scale_bits", "out_scale_bits"])
def _table_kernel(Tab, Sq, Sk, Sv, sqb, sqh, sqm, skb, skh, svb, svh, H, TM, NROWS, scale_bits, out_scale_bits,
                  ROW_FN: tl.constexpr, ROW_ARGS: tl.constexpr, REL_SHIFT: tl.constexpr, HEADROOM_LIMITS: tl.constexpr,
                  OUT_FRAC: tl.constexpr, INT8_OUT: tl.constexpr, BLOCK: tl.constexpr, FROM_AMAX: tl.constexpr,
                  PTX: tl.constexpr):
    """One table row per lane, ``row = bh * TM + m`` (:func:`qflash.table.host_table`), by
    :func:`table_row`. ``FROM_AMAX``: ``Sq``, ``Sk``, ``Sv`` hold ranges, whose scales ``amax / 127``
    are derived here exactly as the quantization launch derives them."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    b = idx // TM // H
    h = idx // TM % H
    m = idx % TM
    valid = idx < NROWS
    s_q = tl.load(Sq + b * sqb + h * sqh + m * sqm, mask=valid, other=1.0)
    s_k = tl.load(Sk + b * skb + h * skh, mask=valid, other=1.0)
    s_v = tl.load(Sv + b * svb + h * svh, mask=valid, other=1.0)
    if FROM_AMAX:
        s_q, s_k, s_v = scale_inv(s_q)[0], scale_inv(s_k)[0], scale_inv(s_v)[0]
    scale = tl.full((BLOCK,), scale_bits, tl.int64).to(tl.float64, bitcast=True)
    out_scale = tl.full((BLOCK,), out_scale_bits, tl.int64).to(tl.float64, bitcast=True)
    cols = table_row(s_q, s_k, s_v, scale, out_scale, ROW_FN, ROW_ARGS, REL_SHIFT, HEADROOM_LIMITS, OUT_FRAC, INT8_OUT,
                     PTX)
    # each lane's row as one run of NCOLS int32 (joined in registers), so the program writes one
    # contiguous span (a store per column wrote 4 bytes every NCOLS * 4: 21.8 us for A2 b = 256's
    # per-token table on the H200). join appends its axis last, so the nested joins' axes run from
    # the finest pair to the halves; the permute puts the halves first for the row-major reshape.
    tl.static_assert(NCOLS == 14, "the joins below pair 14 columns and 2 of padding")
    z = tl.zeros_like(cols[0])
    quads = (tl.join(tl.join(cols[0], cols[1]), tl.join(cols[2], cols[3])),
             tl.join(tl.join(cols[4], cols[5]), tl.join(cols[6], cols[7])),
             tl.join(tl.join(cols[8], cols[9]), tl.join(cols[10], cols[11])),
             tl.join(tl.join(cols[12], cols[13]), tl.join(z, z)))
    nested = tl.join(tl.join(quads[0], quads[1]), tl.join(quads[2], quads[3]))  # [row, a, b, c, d]: col 8d+4c+2b+a
    rows = tl.reshape(tl.permute(nested, (0, 4, 3, 2, 1)), (BLOCK, NCOLS_POW2))
    c = tl.arange(0, NCOLS_POW2)
    tl.store(Tab + idx[:, None] * NCOLS + c[None, :], rows, mask=valid[:, None] & (c[None, :] < NCOLS))


def gran_kind(granularity) -> int:
    """The quantization kernel's mode, from the granularity's block (:meth:`Granularity.block`): a
    range from the range kernel for all rows of a tensor (0) or of a head (1), or one reduced in
    the program per row (2) or per block of rows (3), or per head and channel from the range
    kernel (4: ``per_channel``, V only)."""
    if granularity.per_channel:
        return 4
    heads, rows = granularity.block()
    if rows is None:
        return 0 if heads is None else 1
    return 2 if rows == 1 else 3


def bh_strides(t: torch.Tensor, heads: int) -> tuple[int, int]:
    """``(stride_b, stride_h)`` in elements of a per-(b, h) scale or range tensor: shape (1,)
    broadcasts, (H,) is per head (static), (B*H,) per batch and head, (B*H, n) has ``n`` per
    batch and head (rows or channels); static per-channel ranges (1, n) and (H, n) repeat over
    the batch (and the heads)."""
    if t.dim() == 2:
        if t.shape[0] == 1:
            return 0, 0
        if t.shape[0] == heads:  # (for B = 1 the same offsets as (B*H, n))
            return 0, t.shape[1]
        return heads * t.shape[1], t.shape[1]
    n = t.numel()
    if n == 1:
        return 0, 0
    if n == heads:
        return 0, 1
    return heads, 1


#: Quantization kinds whose ranges the range launch measures (per tensor, per head, per channel).
REDUCED = (0, 1, 4)


def ranges(q, k, v, recipe):
    """The measured ranges ``(amax_q, amax_k, amax_v)`` of float (B, H, N, D) inputs, one range
    launch: float32 of shape (1,) per tensor, (B*H,) per head, (B*H, D) per channel; for the
    granularities reduced in the quantization launch itself (per token, per block), an unused
    (1,). NaN anywhere in a range's data makes it NaN."""
    B, H, NQ, D = q.shape
    NK = k.shape[2]
    kinds = range_kinds(recipe)
    if not any(kd in REDUCED for kd in kinds):
        return (empty(1, torch.float32, q.device),) * 3
    amax, views = range_buffer(kinds, B, H, D, q.device)
    xs = (q, k, v)
    d_p2 = triton.next_power_of_2(D)
    slices = max(1, AMAX_TILE // (64 * d_p2))
    launch(_amax_kernel, (triton.cdiv(max(NQ, NK), 64), min(triton.cdiv(B * H, slices), AMAX_PROGRAMS), 3),
           xs, amax.view(torch.int32), tuple(x.stride() for x in xs), (NQ, NK, NK), H, B * H, amax.stride(0),
           D=D, D_P2=d_p2, BLOCK_R=64, SLICES=slices, KINDS=tuple(kd if kd in REDUCED else -1 for kd in kinds),
           num_warps=8)
    return views


def range_kinds(recipe) -> tuple:
    """:func:`gran_kind` of q, k and v."""
    return tuple(gran_kind(g) for g in (recipe.q_granularity, recipe.k_granularity, recipe.v_granularity))


def range_buffer(kinds, B: int, H: int, D: int, device):
    """A zeroed float32 (3, n) buffer for the measured ranges (written as int32 float bits by
    atomic or plain stores) and its views as :func:`ranges` returns them: (1,) per tensor,
    (B*H,) per head, (B*H, D) per channel, an unused (1,) for ranges reduced in the quantization."""
    sizes = {0: 1, 1: B * H, 4: B * H * D}
    buf = empty((3, max(sizes.get(kd, 1) for kd in kinds)), torch.float32, device, zero=True)
    return buf, tuple(buf[i, : B * H * D].view(B * H, D) if kd == 4 else buf[i, : sizes.get(kd, 1)]
                      for i, kd in enumerate(kinds))


def quantize_qkv(q, k, v, recipe, amax_static=None, flags=None, rewrite=None):
    """INT8 q, k, v by the recipe's granularities, in one range launch (if any range must be
    measured) and one quantization launch. Returns ``((q8, s_q), (k8, s_k), (v8, s_v))``.
    ``rewrite``: the input transforms' :class:`qflash.transforms.Rewrite` (its ranges are those
    of the rewritten tensors, measured by its own launch), applied as each tile is loaded.

    Scales (float32): shape (1,) per tensor, (B*H,) per head, (B*H, N) per token / block, (B*H, D)
    per channel.
    ``amax_static``: calibrated ``(amax_q, amax_k, amax_v)`` of shape (1,) or (H,): no reduction;
    then ``flags``, a zeroed int32 (B*H,) tensor, gets 1 where a ``(b, h)`` slice of q, k or v
    holds NaN or Inf (:func:`qflash.kernel.launch` makes those slices NaN).
    ``v8`` is stored (B, H, D, N) with 16-byte rows, the layout the P.V product reads fastest,
    and returned as a (B, H, N, D) view.
    """
    B, H, NQ, D = q.shape
    NK = k.shape[2]
    xs = (q, k, v)
    grans = (recipe.q_granularity, recipe.k_granularity, recipe.v_granularity)
    kinds = tuple(gran_kind(g) for g in grans)
    dev = q.device
    amaxes = tuple(amax_static) if amax_static is not None else rewrite.ranges if rewrite is not None else \
        ranges(q, k, v, recipe)
    # heads read with stride 0 (grouped K/V, api._grouped) are stored once per group (unless the
    # transforms rewrite each head apart)
    hk = 1 if k.stride(1) == 0 and rewrite is None else H
    hv = 1 if v.stride(1) == 0 and rewrite is None else H
    x8s = (empty((B, H, NQ, D), torch.int8, dev),
           empty((B, hk, NK, D), torch.int8, dev).expand(B, H, NK, D),
           empty((B, hv, D, -(-NK // 16) * 16), torch.int8, dev)[..., :NK].transpose(-1, -2)
           .expand(B, H, NK, D))
    ns = (NQ, NK, NK)
    scales = tuple(empty((B * H, D), torch.float32, dev) if kd == 4 else empty((B * H, n), torch.float32, dev)
                   if kd >= 2 else empty(a.numel() if kd == 1 else 1, torch.float32, dev)
                   for kd, a, n in zip(kinds, amaxes, ns))
    rows = tuple(g.block()[1] if kd == 3 else 64 for g, kd in zip(grans, kinds))
    launch(_quantize_kernel, (B * H, max(triton.cdiv(n, r) for n, r in zip(ns, rows)), 3),
           xs, x8s, amaxes, scales, flags if flags is not None else scales[0],
           rewrite.constants if rewrite is not None else scales, tuple(x.stride() for x in xs),
           tuple(x8.stride() for x8 in x8s),
           tuple(bh_strides(a, H) for a in amaxes), tuple((*bh_strides(s, H), int(s.dim() == 2)) for s in scales),
           ns, H, B * H, D=D, D_P2=triton.next_power_of_2(D), BLOCK_RS=tuple(triton.next_power_of_2(r) for r in rows),
           ROWS=rows, GRANS=kinds, FLAGS=flags is not None, TRANSPOSE=tuple(x8.stride(2) == 1 for x8 in x8s),
           PTX=not interpreted(_quantize_kernel), OPS=rewrite.ops if rewrite is not None else ((), (), ()),
           enable_fp_fusion=False)
    return tuple(zip(x8s, scales))


def table(recipe, s_q, s_k, s_v, scale: float, batch: int, heads: int, nq: int,
          out_scale: float | None = None, from_amax: bool = False) -> torch.Tensor:
    """The per-row constant table ``(T_B, T_M, NCOL)`` from device scales (float32, shapes as
    :func:`quantize_qkv` returns them, or (H,) for static per-head scales). A per-channel ``s_v``
    (B*H, D) fills ``DEQ`` from channel 0: the kernel then reads each channel's scale apart and the
    column only carries NaN (a non-finite range) to the output. ``from_amax``: the three are
    ranges (:func:`ranges`), not scales."""
    tb, tm = table_shape(recipe, batch, heads, nq)
    tab = empty((tb, tm, NCOL), torch.int32, s_q.device)
    twin = exp_twin(recipe.exp)
    sqm = int(s_q.dim() == 2)
    sqb, sqh = bh_strides(s_q, heads)
    block = 128  # one row per thread of four warps
    launch(_table_kernel, (triton.cdiv(tb * tm, block),),
           tab, s_q, s_k, s_v, sqb, sqh, sqm, *bh_strides(s_k, heads), *bh_strides(s_v, heads),
           heads if tb > 1 else 1, tm, tb * tm, f64_bits(scale), f64_bits(out_scale or 1.0),
           ROW_FN=twin.rows, ROW_ARGS=twin.row_args(recipe.exp, recipe.p_max),
           REL_SHIFT=recipe.accumulation.release_shift, HEADROOM_LIMITS=plan.headroom_limits(recipe),
           OUT_FRAC=recipe.out_frac_bits, INT8_OUT=out_scale is not None, BLOCK=block, FROM_AMAX=from_amax,
           PTX=not interpreted(_table_kernel), enable_fp_fusion=False)
    return tab
