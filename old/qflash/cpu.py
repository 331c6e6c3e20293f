"""qflash's float entry points on CPU tensors: the golden model (there is no kernel to run on a
CPU unless Triton's interpreter is on, ``TRITON_INTERPRET=1``, which runs the kernel itself).

The results are :meth:`intsoftmax.Recipe.attention_int`'s: the integers bit for bit, and the
float output its dequantization cast to the input dtype (the float softmax baseline, which has no
integers: :meth:`~intsoftmax.Recipe.attention`'s float output).
"""
from __future__ import annotations

import numpy as np
import torch


def _array(x: torch.Tensor) -> np.ndarray:
    """A float tensor as float32/float64 NumPy (bfloat16 widens exactly to float32)."""
    x = x.detach()
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()


def _amax(a, heads: int):
    """A static range tensor, (1,) per tensor, (H,) per head or (1 or H, D) per channel, shaped to
    broadcast over (..., H, N, D)."""
    a = a.detach().cpu().numpy()
    if a.ndim == 2:
        return a.reshape(a.shape[0], 1, a.shape[1])
    return a.reshape(1) if a.size == 1 else a.reshape(heads, 1, 1)


def golden(recipe, q, k, v, attn_mask, scale, is_causal: bool, enable_gqa: bool, static=None, method="attention_int"):
    """:meth:`intsoftmax.Recipe.attention_int` (or ``method``) on the tensors' values (a bool mask, or
    a float bias)."""
    mask = bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            mask = attn_mask.numpy()
        else:
            bias = _array(attn_mask)
    amax = None if static is None else tuple(None if a is None else _amax(a, q.shape[-3])
                                             for a in (static.amax_q, static.amax_k, static.amax_v))
    return getattr(recipe, method)(_array(q), _array(k), _array(v), bias, mask, scale, is_causal=is_causal,
                                   enable_gqa=enable_gqa, amax=amax)


def attention(recipe, q, k, v, attn_mask, scale, is_causal, enable_gqa, static=None) -> torch.Tensor:
    if recipe.accumulation.float_softmax:  # the float softmax baseline: float output, no integers
        out = golden(recipe, q, k, v, attn_mask, scale, is_causal, enable_gqa, static, method="attention")
        return torch.from_numpy(out).to(q.dtype)
    res = golden(recipe, q, k, v, attn_mask, scale, is_causal, enable_gqa, static)
    return torch.from_numpy(res.dequantize()).to(q.dtype)


def attention_int(recipe, q, k, v, attn_mask, scale, is_causal, enable_gqa, static=None):
    """``(values, scale)`` as :func:`qflash.attention_int` returns them: int32 values, and the
    float32 output scale per ``(b, h)`` ((B*H,), or (1,) for a per-tensor V scale; (B*H, D) per
    channel)."""
    res = golden(recipe, q, k, v, attn_mask, scale, is_causal, enable_gqa, static)
    d = res.values.shape[-1]
    cols = np.broadcast_to(res.scale[..., :1, :], res.values.shape[:-2] + (1, d)).reshape(-1, d)  # (B*H, D)
    g = recipe.v_granularity
    out_scale = cols if g.per_channel else cols[:1, 0] if g.block()[0] is None else cols[:, 0]
    return torch.from_numpy(res.values.astype(np.int32)), torch.from_numpy(out_scale.astype(np.float32))
