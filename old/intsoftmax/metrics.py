"""Error metrics shared by tests, analyses and benchmarks (float64, never for equality)."""
from __future__ import annotations

import numpy as np


def sqnr_db(ref, test) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum ref**2 / sum (ref - test)**2)`` in dB.

    ``inf`` when ``test`` equals ``ref``; ``-inf`` when ``ref`` is all zero but ``test`` is not.
    """
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if ref.shape != test.shape:
        raise ValueError(f"sqnr_db: shapes differ, {ref.shape} vs {test.shape}")
    signal = float(np.sum(ref * ref))
    noise = float(np.sum((ref - test) ** 2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def max_abs_error(ref, test) -> float:
    return float(np.max(np.abs(np.asarray(ref, np.float64) - np.asarray(test, np.float64)), initial=0.0))


def max_rel_error(ref, test, floor: float = 0.0) -> float:
    """``max |test - ref| / |ref|`` over elements with ``|ref| > floor``."""
    ref = np.asarray(ref, np.float64)
    test = np.asarray(test, np.float64)
    keep = np.abs(ref) > floor
    if not keep.any():
        return 0.0
    return float(np.max(np.abs(test[keep] - ref[keep]) / np.abs(ref[keep])))


def softmax_kl(p_ref, p_test, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Row-wise KL(p_ref || p_test) in nats; ``p_test`` is renormalised and floored at ``eps``."""
    p = np.asarray(p_ref, np.float64)
    t = np.clip(np.asarray(p_test, np.float64), 0.0, None)
    t = t / np.maximum(t.sum(axis=axis, keepdims=True), eps)
    t = np.maximum(t, eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(t)), 0.0)
    return terms.sum(axis=axis)


def float_attention(q, k, v, attn_bias=None, attn_mask=None, scale=None) -> np.ndarray:
    """float64 reference attention (SDPA semantics; a fully masked row gives 0, not NaN)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    s = np.einsum("...nd,...md->...nm", q, k) * scale
    if attn_bias is not None:
        s = s + np.asarray(attn_bias, np.float64)
    if attn_mask is not None:
        s = np.where(attn_mask, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    denom = p.sum(axis=-1, keepdims=True)
    return np.einsum("...nm,...md->...nd", p, v) / np.where(denom > 0, denom, 1.0)


def float_softmax(x, axis: int = -1, mask=None) -> np.ndarray:
    """float64 softmax; fully masked rows give zeros."""
    x = np.asarray(x, np.float64)
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    return e / np.where(s > 0, s, 1.0)
