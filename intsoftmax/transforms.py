"""Exact reparametrizations of q, k, v applied before INT8 quantization (issue 11).

Each transform rewrites the inputs so that attention is unchanged in real arithmetic but the
tensors quantize with less error, and says what the output needs back:

* :class:`KeyOffset`: ``k <- k - c_k`` with ``c_k`` one vector per head (the midrange of each
  channel over the keys). Row ``i``'s logits all move by ``q_i . c_k``, a constant along the row,
  and softmax is invariant to that - with any mask or bias, which add per key.
* :class:`ValueOffset`: ``v <- v - c_v`` (midrange per channel) and ``o <- o + c_v``: every row of
  the softmax sums to 1. A row with every key masked stays 0 (no ``c_v`` added).
* :class:`ChannelBalance`: ``q_c <- q_c s_c``, ``k_c <- k_c / s_c`` per head and channel with
  ``s_c = sqrt(max|k_c| / max|q_c|)``: both operands of each product end at the same range
  ``sqrt(max|q_c| max|k_c|)`` (SmoothQuant's balance with alpha = 1/2), and ``q . k`` is
  unchanged in real arithmetic.

They compute in float32, the precision the inputs are quantized from, with correctly rounded
operations only (max, min, addition, subtraction, multiplication, division, and the square root
through :func:`sqrt_f32`; no fused multiply-add), so a GPU reproduces them and the kernel path
matches the golden integers bit for bit. (A general SmoothQuant exponent alpha would need ``pow``, which no
platform rounds correctly; hence alpha = 1/2.) The statistics are measured per call,
per leading index (per batch and head): K stays one tensor or head per scale, so integer
comparability holds. A recipe applies its transforms in order (``Recipe.transforms``);
``docs/algorithms.md`` section 11 derives them. On the device ``qflash.attention`` applies them
with torch twins (:mod:`qflash.transforms`); :meth:`Transform.fold` is their static form, which
``qflash.calibrate`` folds into a model's projections.
"""
from __future__ import annotations

import numpy as np

from .strategy import Strategy, register


class Transform(Strategy):
    """Base class: ``apply(q, k, v)`` returns ``(q, k, v, v_offset)``; ``v_offset`` (broadcastable
    to the output, or None) is added back to every row that attends to at least one key.

    ``fold(hi, lo)`` is the static form (calibration): from per-channel maxima ``hi`` and minima
    ``lo`` of q, k, v (tuples of float32 arrays (..., D) over the calibration data, already
    rewritten by the transforms before this one) it returns ``(scales, shifts, v_offset)``, the
    per-channel affine map ``x <- x * scale + shift`` of each tensor (None: unchanged; scales are
    positive) that a projection's weights and bias can absorb, and V's offset."""

    def apply(self, q, k, v):
        raise NotImplementedError

    def fold(self, hi, lo):
        raise NotImplementedError


def _midrange(x: np.ndarray) -> np.ndarray:
    """Per channel over the keys (axis -2): ``(max + min) / 2`` in float32, shape (..., 1, D)."""
    return (x.max(axis=-2, keepdims=True) + x.min(axis=-2, keepdims=True)) / np.float32(2)


@register("transform", "key_offset")
class KeyOffset(Transform):
    def apply(self, q, k, v):
        return q, k - _midrange(k), v, None

    def fold(self, hi, lo):
        return (None, None, None), (None, -(hi[1] + lo[1]) / np.float32(2), None), None


@register("transform", "value_offset")
class ValueOffset(Transform):
    def apply(self, q, k, v):
        c = _midrange(v)
        return q, k, v - c, c

    def fold(self, hi, lo):
        c = (hi[2] + lo[2]) / np.float32(2)
        return (None, None, None), (None, None, -c), c


@register("transform", "channel_balance")
class ChannelBalance(Transform):
    def apply(self, q, k, v):
        a_q = np.abs(q).max(axis=-2, keepdims=True)
        a_k = np.abs(k).max(axis=-2, keepdims=True)
        s = _balance(a_q, a_k)
        return q * s, k / s, v, None

    def fold(self, hi, lo):
        a_q, a_k = (np.maximum(np.abs(hi[i]), np.abs(lo[i])) for i in (0, 1))
        s = _balance(a_q, a_k)
        return (s, np.float32(1) / s, None), (None, None, None), None


def _balance(a_q, a_k):
    """``sqrt(a_k / a_q)`` per channel (float32, correctly rounded), 1 where either range is 0."""
    live = (a_q > 0) & (a_k > 0)
    return np.where(live, sqrt_f32(np.where(live, a_k, 1) / np.where(live, a_q, 1)), np.float32(1)).astype(np.float32)


def sqrt_f32(r: np.ndarray) -> np.ndarray:
    """The correctly rounded float32 square root of positive float32 ``r``, whatever the platform's
    ``sqrt`` gives (torch's vectorized float32 sqrt on the CPU is off by one ulp at times): a
    candidate within one ulp, moved to the neighbour whose rounding interval holds ``sqrt(r)``.
    The midpoints between neighbours have 25 bits, so their squares are exact in float64."""
    r64 = r.astype(np.float64)
    s = np.sqrt(r64).astype(np.float32)
    up = np.nextafter(s, np.float32(np.inf))
    down = np.nextafter(s, np.float32(0))
    s = np.where(((s.astype(np.float64) + up) / 2) ** 2 < r64, up, s)
    return np.where(((s.astype(np.float64) + down) / 2) ** 2 > r64, down, s)


def compose(transforms, q, k, v, apply):
    """``apply(t, q, k, v)`` for each transform in order: ``(q, k, v, v_offset)``, the value
    offsets summed (or None). :func:`apply_all` here, and qflash's torch twins, run through it."""
    offset = None
    for t in transforms:
        q, k, v, c = apply(t, q, k, v)
        if c is not None:
            offset = c if offset is None else offset + c
    return q, k, v, offset


def fold_all(transforms, hi, lo):
    """The static form of ``transforms`` in order: ``(scales, shifts, v_offset)``, one per-channel
    affine map per tensor (float32 (..., D) arrays) composing every transform's :meth:`~Transform.fold`,
    each transform seeing the ranges its predecessors left (a positive scale maps maxima to
    maxima), and V's offsets summed (or None)."""
    hi, lo = [np.asarray(x, np.float32) for x in hi], [np.asarray(x, np.float32) for x in lo]
    scales = [np.ones_like(x) for x in hi]
    shifts = [np.zeros_like(x) for x in hi]
    offset = None
    for t in transforms:
        a, b, c = t.fold(tuple(hi), tuple(lo))
        for i in range(3):
            a_i = np.float32(1) if a[i] is None else a[i]
            b_i = np.float32(0) if b[i] is None else b[i]
            scales[i], shifts[i] = scales[i] * a_i, shifts[i] * a_i + b_i
            hi[i], lo[i] = hi[i] * a_i + b_i, lo[i] * a_i + b_i
        if c is not None:
            offset = c if offset is None else offset + c
    return tuple(scales), tuple(shifts), offset


def apply_all(transforms, q, k, v):
    """Apply ``transforms`` in order to float32 ``q, k, v``: ``(q, k, v, v_offset)``, the value
    offsets summed (float32, or None)."""
    q, k, v = (np.asarray(x, dtype=np.float32) for x in (q, k, v))
    return compose(transforms, q, k, v, lambda t, q, k, v: t.apply(q, k, v))
