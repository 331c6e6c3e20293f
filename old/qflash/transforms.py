"""The input transforms of :mod:`intsoftmax.transforms` on the device: one statistics launch, then
the rewrite inside the quantization launch.

A chain of transforms follows exactly from one measurement of the raw inputs
(:func:`intsoftmax.transforms.derive`: every operation is monotone, so the rewritten channels'
maxima and minima are the raw ones rewritten). :func:`prepare` launches ``_chain_kernel``, a
few ``(batch, head)`` slices per program: it reduces each channel of q, k and v to its maximum
and minimum, runs the chain on those vectors with each transform's registered Triton twin (its
constants from the current maxima and minima), and writes the constants, V's offset and the
ranges the quantization needs of the rewritten tensors (per tensor, head or channel). The
quantization launch (:func:`qflash.quantize.quantize_qkv` with ``rewrite``) applies the operations
to each tile it loads, before quantizing it: no rewritten float copies, two passes over the
inputs in all. The float32 operations are the golden model's, correctly rounded (division and
square root ``_rn``, no fused multiply-add), so the int8 inputs equal its bit for bit.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .launcher import launch
from .plan import empty
from .quantize import GRAN_CHANNEL, GRAN_HEAD, GRAN_TENSOR, OP_CODES, REDUCED, operate, range_buffer, range_kinds

#: Elements of one statistics step per program (whole slices where they are short: four 49 x 32
#: Swin windows), a running maximum, minimum and NaN signal each, 32 per thread of four warps.
STATS_TILE = 4096

#: transform kind -> its Triton twin ``(hq, lq, hk, lk, hv, lv) -> (cq, ck, cv)``: the constants of
#: :meth:`intsoftmax.transforms.Transform.constants` from per-channel maxima and minima (vectors
#: over the channels; 0.0 where the transform leaves a tensor alone).
TWINS: dict = {}


def twin(kind: str):
    """Register the decorated ``@triton.jit`` function as the twin of the transform ``kind``."""
    def register(fn):
        if kind in TWINS:
            raise ValueError(f"duplicate Triton twin for transform kind {kind!r}")
        TWINS[kind] = fn
        return fn
    return register


@triton.jit
def _midrange(hi, lo):
    return (hi + lo) * 0.5  # (exact halving, as the golden model's / 2)


@triton.jit
def _abs_max(hi, lo):
    return tl.maximum(tl.abs(hi), tl.abs(lo), propagate_nan=tl.PropagateNan.ALL)


@twin("key_offset")
@triton.jit
def key_offset(hq, lq, hk, lk, hv, lv):
    return 0.0, _midrange(hk, lk), 0.0


@twin("value_offset")
@triton.jit
def value_offset(hq, lq, hk, lk, hv, lv):
    return 0.0, 0.0, _midrange(hv, lv)


@twin("channel_balance")
@triton.jit
def channel_balance(hq, lq, hk, lk, hv, lv):
    a_q = _abs_max(hq, lq)
    a_k = _abs_max(hk, lk)
    live = (a_q > 0) & (a_k > 0)  # (false for a NaN range, as in the golden model)
    s = tl.where(live, tl.math.sqrt_rn(tl.math.div_rn(tl.where(live, a_k, 1.0), tl.where(live, a_q, 1.0))), 1.0)
    return s, s, 0.0


@triton.jit
def _channel_range(X, sx, bh, H, N, D: tl.constexpr, SLICES: tl.constexpr, BLOCK_R: tl.constexpr,
                   D_P2: tl.constexpr):
    """Maximum and minimum of each channel over the ``N`` rows of the slices ``bh`` (a vector, -1:
    none): ``(SLICES, D_P2)`` float32; NaN in a channel that holds NaN or Inf (``x + (x - x)``,
    carried by NaN-propagating extrema); 0 in padded channels and absent slices. Running extrema
    are kept per element and reduced down the rows once, both in one reduction (a reduction
    crosses the warps through shared memory: once per tensor, not per step or statistic)."""
    rows = tl.arange(0, BLOCK_R)
    cols = tl.arange(0, D_P2)
    live = (bh[:, None, None] >= 0) & (cols[None, None, :] < D)
    base = X + (bh // H)[:, None, None] * sx[0] + (bh % H)[:, None, None] * sx[1] + cols[None, None, :] * sx[3]
    hi = tl.full((SLICES, BLOCK_R, D_P2), float("-inf"), tl.float32)
    lo = tl.full((SLICES, BLOCK_R, D_P2), float("inf"), tl.float32)
    for r0 in range(0, N, BLOCK_R):
        r = r0 + rows[None, :, None]
        inside = live & (r < N)
        x = tl.load(base + r * sx[2], mask=inside, other=0.0).to(tl.float32)
        x = x + (x - x)  # NaN where x is NaN or infinite
        hi = tl.maximum(hi, tl.where(inside, x, float("-inf")), propagate_nan=tl.PropagateNan.ALL)
        lo = tl.minimum(lo, tl.where(inside, x, float("inf")), propagate_nan=tl.PropagateNan.ALL)
    hi, lo = tl.reduce((hi, lo), 1, _extrema)
    keep = (bh[:, None] >= 0) & (cols[None, :] < D)
    return tl.where(keep, hi, 0.0), tl.where(keep, lo, 0.0)


@triton.jit
def _extrema(hi_a, lo_a, hi_b, lo_b):
    """The combine of a NaN-propagating (max, min) reduction."""
    return (tl.maximum(hi_a, hi_b, propagate_nan=tl.PropagateNan.ALL),
            tl.minimum(lo_a, lo_b, propagate_nan=tl.PropagateNan.ALL))


@triton.jit
def _store_range(Ranges, which, SO, bh, at, ok, hi, lo, KIND: tl.constexpr):
    """The rewritten tensors' ranges in :func:`qflash.quantize.ranges`' layout, as int32 float bits
    of ``max |x|`` (non-negative floats order as their bits; NaN's bits win)."""
    bits = _abs_max(hi, lo).to(tl.int32, bitcast=True)
    if KIND == GRAN_CHANNEL:
        tl.store(Ranges + which * SO + at, bits, mask=ok)
    elif KIND == GRAN_HEAD:
        tl.store(Ranges + which * SO + bh, tl.max(bits, 1), mask=bh >= 0)
    elif KIND == GRAN_TENSOR:
        tl.atomic_max(Ranges + which * SO, tl.max(tl.max(bits, 1), 0))


@triton.jit
def _chain_kernel(Q, K, V, CQ, CK, CV, Ranges, Voff, SX, NS, H, BH, SO, D: tl.constexpr, D_P2: tl.constexpr,
                  BLOCK_R: tl.constexpr, SLICES: tl.constexpr, CHAIN: tl.constexpr, OPS: tl.constexpr,
                  SLOTS: tl.constexpr, KINDS: tl.constexpr, VOFF: tl.constexpr):
    """``SLICES`` ``(batch, head)`` slices per program: the channels' maxima and minima, the chain
    (``CHAIN[t]``: a transform's twin; ``OPS[t]``: its operation codes on q, k, v; ``SLOTS[t]``:
    where its constants go among each tensor's), V's summed offset, the rewritten ranges."""
    lanes = tl.program_id(0) * SLICES + tl.arange(0, SLICES)
    bh = tl.where(lanes < BH, lanes, -1)
    hq, lq = _channel_range(Q, SX[0], bh, H, NS[0], D, SLICES, BLOCK_R, D_P2)
    hk, lk = _channel_range(K, SX[1], bh, H, NS[1], D, SLICES, BLOCK_R, D_P2)
    hv, lv = _channel_range(V, SX[2], bh, H, NS[2], D, SLICES, BLOCK_R, D_P2)
    voff = tl.zeros((SLICES, D_P2), tl.float32)
    cols = tl.arange(0, D_P2)
    at = bh[:, None] * D + cols[None, :]
    ok = (bh[:, None] >= 0) & (cols[None, :] < D)
    for t in tl.static_range(len(CHAIN)):
        cq, ck, cv = CHAIN[t](hq, lq, hk, lk, hv, lv)
        if OPS[t][0] != 0:
            hq, lq = operate(hq, cq, OPS[t][0]), operate(lq, cq, OPS[t][0])
            tl.store(CQ + SLOTS[t][0] * BH * D + at, cq, mask=ok)
        if OPS[t][1] != 0:
            hk, lk = operate(hk, ck, OPS[t][1]), operate(lk, ck, OPS[t][1])
            tl.store(CK + SLOTS[t][1] * BH * D + at, ck, mask=ok)
        if OPS[t][2] != 0:
            hv, lv = operate(hv, cv, OPS[t][2]), operate(lv, cv, OPS[t][2])
            tl.store(CV + SLOTS[t][2] * BH * D + at, cv, mask=ok)
            voff += cv
    if VOFF:
        tl.store(Voff + at, voff, mask=ok)
    _store_range(Ranges, 0, SO, bh, at, ok, hq, lq, KINDS[0])
    _store_range(Ranges, 1, SO, bh, at, ok, hk, lk, KINDS[1])
    _store_range(Ranges, 2, SO, bh, at, ok, hv, lv, KINDS[2])


class Rewrite(NamedTuple):
    """What the quantization launch needs to rewrite q, k, v as it loads them: per tensor the
    operation codes (a tuple, in order) and their constants (float32 (n, B*H, D)); the ranges of
    the rewritten tensors (:func:`qflash.quantize.ranges`' form); V's offset (B*H, D) or None."""

    ops: tuple
    constants: tuple
    ranges: tuple
    v_offset: torch.Tensor | None


def _twin(t):
    if t.kind not in TWINS:
        raise ValueError(f"transform {t.name} has no Triton twin in qflash.transforms; register one with "
                         "@qflash.transforms.twin(kind)")
    return TWINS[t.kind]


def prepare(recipe, q, k, v) -> Rewrite:
    """One statistics launch over float (B, H, N, D) q, k, v for ``recipe.transforms``."""
    B, H, NQ, D = q.shape
    NK = k.shape[2]
    ts = recipe.transforms
    chain = tuple(_twin(t) for t in ts)
    ops = tuple(tuple(OP_CODES[op] for op in t.OPS) for t in ts)
    slots, count = [], [0, 0, 0]
    for codes in ops:
        slots.append(tuple(count[i] for i in range(3)))
        count = [n + (c != 0) for n, c in zip(count, codes)]
    dev = q.device
    consts = tuple(empty((max(n, 1), B * H, D), torch.float32, dev) for n in count)
    kinds = range_kinds(recipe)
    ranges, measured = range_buffer(kinds, B, H, D, dev)
    has_voff = any(codes[2] != 0 for codes in ops)
    voff = empty((B * H, D), torch.float32, dev) if has_voff else None
    xs = (q, k, v)
    d_p2 = triton.next_power_of_2(D)
    block_r = min(triton.next_power_of_2(max(NQ, NK)), STATS_TILE // d_p2)
    slices = max(1, STATS_TILE // (block_r * d_p2))
    launch(_chain_kernel, (triton.cdiv(B * H, slices),), q, k, v, *consts, ranges.view(torch.int32),
           voff if has_voff else ranges, tuple(x.stride() for x in xs), (NQ, NK, NK), H, B * H, ranges.stride(0),
           D=D, D_P2=d_p2, BLOCK_R=block_r, SLICES=slices, CHAIN=chain, OPS=ops, SLOTS=tuple(slots),
           KINDS=tuple(kd if kd in REDUCED else -1 for kd in kinds), VOFF=has_voff, enable_fp_fusion=False)
    per_tensor = tuple(tuple(codes[i] for codes in ops if codes[i] != 0) for i in range(3))
    return Rewrite(per_tensor, consts, measured, voff)
