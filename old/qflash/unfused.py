"""An unfused integer attention pipeline, the kind I-ViT runs, as the fused kernel's baseline.

Three launches with the score matrices in device memory between them:

1. ``S = Q8 . K8^T``: an int8 GEMM per ``(batch, head)``, int32 scores written out;
2. the integer softmax of each row of ``S``: the exact row max, ``P`` from
   :class:`intsoftmax.FusedExp2`, ``l = sum P``; int8 ``P`` and int32 ``l`` written out;
3. ``O = P8 . V8``: an int8 GEMM, then the same dequantization as the fused kernel.

For a two-pass recipe with a fused exp and ``p_bits <= 7`` these are the golden model's integers
(two-pass integers do not depend on how keys are grouped), so the comparison is like for like:
``tests/test_unfused.py`` checks it bit for bit. Used by :mod:`qflash.benchmark`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from intsoftmax import Recipe
from intsoftmax.plan import MASKED_LOGIT

from .exp import fused_args, fused_y
from .kernel import _dequantize
from .launcher import interpreted
from .ptx import pack_s8
from .table import Col

EXP_C0, DEQ = tl.constexpr(int(Col.EXP_C0)), tl.constexpr(int(Col.DEQ))
MASKED = tl.constexpr(MASKED_LOGIT)


@triton.jit
def _scores(Q, K, S, sq, sk, N, D: tl.constexpr, BLOCK: tl.constexpr):
    """``S[bh, m, n] = Q8[bh, m] . K8[bh, n]`` for one (BLOCK x BLOCK) tile."""
    bh = tl.program_id(2)
    m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, D)
    q = tl.load(Q + bh * sq[0] + m[:, None] * sq[1] + d[None, :], mask=m[:, None] < N, other=0)
    k = tl.load(K + bh * sk[0] + n[:, None] * sk[1] + d[None, :], mask=n[:, None] < N, other=0)
    s = tl.dot(q, tl.trans(k), out_dtype=tl.int32)
    tl.store(S + bh * N * N + m[:, None] * N + n[None, :], s, mask=(m[:, None] < N) & (n[None, :] < N))


@triton.jit
def _softmax(S, P, L, Tab, N, NP, ROWS: tl.constexpr, WIDTH: tl.constexpr, ARGS: tl.constexpr, PTX: tl.constexpr):
    """Rows of ``S`` to int8 ``P`` (row stride ``NP``, zero past ``N``) and ``l``."""
    bh = tl.program_id(1)
    m = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    n = tl.arange(0, WIDTH)
    inside = (m[:, None] < N) & (n[None, :] < N)
    s = tl.load(S + bh * N * N + m[:, None] * N + n[None, :], mask=inside, other=MASKED)
    p = (fused_y(tl.max(s, 1)[:, None] - s, tl.load(Tab + EXP_C0), ARGS, PTX) + 1) >> 1
    p = tl.where(n[None, :] < N, p, 0)
    tl.store(P + bh * N * NP + m[:, None] * NP + n[None, :], pack_s8(p, PTX), mask=(m[:, None] < N) & (n[None, :] < NP))
    tl.store(L + bh * N + m, tl.sum(p, 1), mask=m < N)


@triton.jit
def _weighted_sum(P, V, L, Tab, Out, sv, so, N, NP, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  OUT_FRAC: tl.constexpr, PAIR: tl.constexpr, PTX: tl.constexpr):
    """``O``: ``P8 . V8`` and ``l`` dequantized as the fused kernel does (:func:`qflash.kernel._dequantize`)
    for ``BLOCK_M`` rows of one ``(batch, head)``."""
    bh = tl.program_id(1)
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, D)
    acc = tl.zeros((BLOCK_M, D), tl.int32)
    for j in range(0, NP, BLOCK_N):
        n = j + tl.arange(0, BLOCK_N)
        p = tl.load(P + bh * N * NP + m[:, None] * NP + n[None, :], mask=(m[:, None] < N) & (n[None, :] < NP), other=0)
        vt = tl.load(V + bh * sv[0] + d[:, None] * sv[2] + n[None, :] * sv[1], mask=n[None, :] < N, other=0)
        acc = tl.dot(p, tl.trans(vt), acc, out_dtype=tl.int32)
    deq = tl.load(Tab + DEQ).to(tl.float32, bitcast=True)
    o = _dequantize(acc, tl.load(L + bh * N + m, mask=m < N, other=0), deq, 1.0, PAIR, False, OUT_FRAC, False, PTX)
    tl.store(Out + bh * so[0] + m[:, None] * so[1] + d[None, :], o.to(Out.dtype.element_ty), mask=m[:, None] < N)


def check_recipe(recipe: Recipe) -> None:
    if not (recipe.exp.fuses_requant and recipe.accumulation.two_pass and recipe.p_bits <= 7):
        raise ValueError(f"the unfused pipeline runs two-pass recipes with a fused exp and p_bits <= 7 (one int8 "
                         f"GEMM for P.V); got {recipe.name}")


def attention_int8(q8, k8, v8, table, recipe: Recipe, out_dtype=torch.float16, buffers=None):
    """The three launches on contiguous int8 ``(B, H, N, D)`` q8, k8 and v8 (any layout of v8 whose
    key and head-dim strides are given), a per-tensor constant table ``(1, 1, NCOL)`` and the
    recipe. ``buffers``: ``(S, P, l)`` to reuse (from :func:`make_buffers`)."""
    check_recipe(recipe)
    B, H, N, D = q8.shape
    S, P, L = buffers if buffers is not None else make_buffers(q8)
    NP = P.shape[-1]
    out = torch.empty((B, H, N, D), dtype=out_dtype, device=q8.device)
    ptx = not interpreted(_scores)
    qf, kf = q8.reshape(B * H, N, D), k8.reshape(B * H, N, D)
    block = 64
    _scores[(triton.cdiv(N, block), triton.cdiv(N, block), B * H)](qf, kf, S, qf.stride()[:2], kf.stride()[:2], N, D=D,
                                                                  BLOCK=block)
    rows = 16
    _softmax[(triton.cdiv(N, rows), B * H)](S, P, L, table, N, NP, ROWS=rows, WIDTH=triton.next_power_of_2(NP),
                                             ARGS=fused_args(recipe.exp, recipe.p_max), PTX=ptx)
    vf = v8.reshape(B * H, N, D)  # a view: B and H merge for the layouts qflash writes
    _weighted_sum[(triton.cdiv(N, 64), B * H)](P, vf, L, table, out.view(B * H, N, D), vf.stride(),
                                                (N * D, D), N, NP, D=D, BLOCK_M=64, BLOCK_N=32,
                                                OUT_FRAC=recipe.out_frac_bits, PAIR=recipe.float_out == "pair", PTX=ptx)
    return out


def make_buffers(q8):
    """Scores (int32), probabilities (int8, rows padded to 32 keys) and row sums for ``q8``'s shape."""
    B, H, N, _ = q8.shape
    NP = triton.cdiv(N, 32) * 32
    dev = q8.device
    return (torch.empty((B * H, N, N), dtype=torch.int32, device=dev),
            torch.empty((B * H, N, NP), dtype=torch.int8, device=dev),
            torch.empty((B * H, N), dtype=torch.int32, device=dev))

