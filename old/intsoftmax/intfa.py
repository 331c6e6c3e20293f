"""INT-FlashAttention's design as a baseline: int8 GEMMs around a float32 online softmax.

Not integer-only: :meth:`intsoftmax.Recipe.int_flashattention` exists so the report can say what
an integer softmax costs against INT8 GEMMs with a float softmax (arXiv 2409.16997). Q and K are
int8 with per-token scales (K's differ per key, which an integer softmax cannot compare), V per
tensor or per channel. Per query row ``i``, over the keys in tiles of ``block_n``, in order:

* ``S = Q8_i . K8_j``: int32, exact (the int8 MMA);
* ``x_j = f32(S) * a_i * s_k,j (+ f32(bias_j) * log2 e)``, ``a_i = f32(f32(s_q,i * scale) * log2 e)``:
  base-2 logits in float32; a masked key (mask, causal, ``-inf`` bias) has ``x = -inf``;
* ``m' = max(m, max_j x_j)``, ``alpha = exp2(m - m')`` (float32; ``m = -inf`` until a live key);
* ``P_j = floor(P_max * exp2(x_j - m') + 1/2)``: integers in ``[0, P_max]``, int8 for ``p_bits <= 7``
  (INT-FA's ``R = 127``);
* ``l' = alpha * l + sum_j P_j`` and ``acc' = alpha * acc + sum_j P_j V8_j`` (the MMA's int32 sum
  is exact and below ``2**24``, so its float32 value is too);
* ``out = acc / l * s_v`` (0 where every key is masked).

Every step above is float32 as the kernel computes it, except ``exp2``: the kernel's
``ex2.approx`` differs from NumPy's in the last bits, so a ``P`` can round the other way; the
kernel is checked against this model with a tolerance (``tests/test_intfa.py``), not bit
for bit.
"""
from __future__ import annotations

import numpy as np

LOG2E = np.float32(1.4426950408889634)


def float_logits(q8, s_q, k8, s_k, scale: float, bias=None, mask=None) -> np.ndarray:
    """Base-2 float32 logits ``f32(Q8 . K8) * a_i * s_k,j`` (+ the bias), ``-inf`` where masked.
    ``s_q``: (..., Nq, 1), ``s_k``: (..., Nk, 1) float32 scales; ``bias`` in nats, ``mask`` boolean."""
    S = np.einsum("...nd,...md->...nm", q8.astype(np.int64), k8.astype(np.int64)).astype(np.float32)
    a = (np.asarray(s_q, np.float32) * np.float32(scale)).astype(np.float32) * LOG2E
    x = (S * a).astype(np.float32) * np.swapaxes(np.asarray(s_k, np.float32), -1, -2)
    if bias is not None:
        x = x + np.asarray(bias, np.float32) * LOG2E
    if mask is not None:
        x = np.where(mask, x, np.float32(-np.inf))
    return x.astype(np.float32)


def online_softmax_pv(x, v8, p_max: int, block_n: int):
    """The float online softmax over logits ``x`` (..., Nq, Nk) and int8 ``v8`` (..., Nk, Dv):
    ``(acc, l)`` as float32 arrays (module docstring)."""
    nk = x.shape[-1]
    batch = np.broadcast_shapes(x.shape[:-2], v8.shape[:-2])
    x = np.broadcast_to(x, batch + x.shape[-2:])
    v64 = np.broadcast_to(v8.astype(np.int64), batch + v8.shape[-2:])
    rows = x.shape[:-1] + (1,)
    m = np.full(rows, -np.inf, np.float32)
    l = np.zeros(rows, np.float32)
    acc = np.zeros(rows[:-1] + (v8.shape[-1],), np.float32)
    with np.errstate(invalid="ignore"):  # -inf - -inf in rows with no live key yet: masked below
        for j0 in range(0, nk, block_n):
            xt = x[..., j0:j0 + block_n]
            m_new = np.maximum(m, xt.max(axis=-1, keepdims=True))
            live = m_new > -np.inf
            alpha = np.where(live, np.exp2(m - m_new), np.float32(0)).astype(np.float32)
            p = np.where(live, np.exp2(xt - m_new), np.float32(0)).astype(np.float32)
            P = np.floor(np.float32(p_max) * p + np.float32(0.5)).astype(np.int64)
            l = (alpha * l + P.sum(axis=-1, keepdims=True).astype(np.float32)).astype(np.float32)
            acc = (alpha * acc + (P @ v64[..., j0:j0 + block_n, :]).astype(np.float32)).astype(np.float32)
            m = m_new
    return acc, l


def attention(recipe, q8, s_q, k8, s_k, v8, s_v, scale: float, bias=None, mask=None) -> np.ndarray:
    """The float-softmax pipeline on int8 inputs and float32 scales (shapes as
    :meth:`intsoftmax.Recipe.quantize_inputs` gives them): float64 output ``acc / l * s_v``."""
    x = float_logits(q8, s_q, k8, s_k, scale, bias, mask)
    acc, l = online_softmax_pv(x, v8, recipe.p_max, recipe.block_n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(l > 0, acc / l, np.float32(0)).astype(np.float32) * np.asarray(s_v, np.float32)
    return out.astype(np.float64)
