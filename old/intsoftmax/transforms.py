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
``docs/algorithms.md`` section 11 derives them. Each transform is data: one per-channel
operation per tensor (``Transform.OPS``) and its constants from the channels' maxima and minima,
so a chain of them follows exactly from one measurement of the raw inputs (:func:`derive`). On the
device ``qflash.attention`` measures once and rewrites inside the quantization launch
(:mod:`qflash.transforms`); :meth:`Transform.fold` is their static form, which
``qflash.calibrate`` folds into a model's projections.
"""
from __future__ import annotations

import numpy as np

from .strategy import Strategy, register


#: The elementwise operations a transform applies to a channel of q, k or v with its constant.
SUB, MUL, DIV = "sub", "mul", "div"


def operate(op, x, c):
    """``x - c``, ``x * c`` or ``x / c`` in float32 (one correctly rounded operation)."""
    if op == SUB:
        return x - c
    return x * c if op == MUL else x / c


def measure(q, k, v):
    """Per-channel maxima and minima over the rows (axis -2) of q, k, v: ``(hi, lo)``, tuples of
    float32 (..., 1, D) arrays (NaN where a channel holds NaN)."""
    return (tuple(x.max(axis=-2, keepdims=True) for x in (q, k, v)),
            tuple(x.min(axis=-2, keepdims=True) for x in (q, k, v)))


class Transform(Strategy):
    """Base class. A transform applies at most one per-channel operation to each of q, k and v:
    ``OPS[i]`` (``SUB``, ``MUL``, ``DIV`` or None) with the constant ``constants(hi, lo)[i]``,
    computed from the per-channel maxima ``hi`` and minima ``lo`` of q, k, v over the rows
    (tuples of float32 (..., 1, D) arrays). ``MUL`` and ``DIV`` constants are positive, so every
    operation is monotone and maps a channel's maximum and minimum to the rewritten channel's:
    a chain of transforms follows from one measurement (:func:`derive`). V is only shifted, and
    its shift is added back to every row that attends to a key.

    ``apply(q, k, v)`` returns ``(q, k, v, v_offset)`` (``v_offset`` broadcastable to the output,
    or None); ``fold(hi, lo)`` is the static form (calibration): ``(scales, shifts, v_offset)``,
    the per-channel affine map ``x <- x * scale + shift`` of each tensor (None: unchanged) that a
    projection's weights and bias can absorb, from maxima and minima over calibration data."""

    OPS = (None, None, None)

    def constants(self, hi, lo):
        raise NotImplementedError

    def apply(self, q, k, v):
        c = self.constants(*measure(q, k, v))
        out = tuple(x if op is None else operate(op, x, ci) for op, x, ci in zip(self.OPS, (q, k, v), c))
        return (*out, c[2] if self.OPS[2] == SUB else None)

    def fold(self, hi, lo):
        c = self.constants(hi, lo)
        scales = tuple(np.float32(1) / ci if op == DIV else ci if op == MUL else None for op, ci in zip(self.OPS, c))
        shifts = tuple(-ci if op == SUB else None for op, ci in zip(self.OPS, c))
        return scales, shifts, c[2] if self.OPS[2] == SUB else None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.OPS[2] not in (None, SUB):
            raise TypeError(f"{cls.__name__}: V may only be shifted (its shift is added back to the output)")


def _midrange(hi, lo):
    """``(max + min) / 2`` per channel in float32."""
    return (hi + lo) / np.float32(2)


def _abs_max(hi, lo):
    """``max |x|`` per channel from its maximum and minimum (NaN stays NaN)."""
    return np.maximum(np.abs(hi), np.abs(lo))


@register("transform", "key_offset")
class KeyOffset(Transform):
    OPS = (None, SUB, None)

    def constants(self, hi, lo):
        return None, _midrange(hi[1], lo[1]), None


@register("transform", "value_offset")
class ValueOffset(Transform):
    OPS = (None, None, SUB)

    def constants(self, hi, lo):
        return None, None, _midrange(hi[2], lo[2])


@register("transform", "channel_balance")
class ChannelBalance(Transform):
    OPS = (MUL, DIV, None)

    def constants(self, hi, lo):
        s = _balance(_abs_max(hi[0], lo[0]), _abs_max(hi[1], lo[1]))
        return s, s, None


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


def derive(transforms, hi, lo):
    """The chain of ``transforms`` from one measurement (:func:`measure`) of the raw inputs:
    ``(steps, hi, lo)`` with ``steps`` one ``(OPS, constants)`` per transform and ``hi``, ``lo``
    the rewritten tensors' maxima and minima. Exact: every operation is monotone and correctly
    rounded, so ``max_j fl(x_j op c) = fl(max_j x_j op c)`` (and so for the minimum), and applying
    the steps (:func:`apply_steps`) gives :func:`apply_all`'s values bit for bit (finite inputs;
    NaN stays NaN). This is what the device computes: one statistics pass, then the rewrite
    fused into the quantization."""
    hi, lo = tuple(hi), tuple(lo)
    steps = []
    for t in transforms:
        c = t.constants(hi, lo)
        steps.append((t.OPS, c))
        hi = tuple(h if op is None else operate(op, h, ci) for op, h, ci in zip(t.OPS, hi, c))
        lo = tuple(m if op is None else operate(op, m, ci) for op, m, ci in zip(t.OPS, lo, c))
    return steps, hi, lo


def apply_steps(steps, q, k, v):
    """The steps of :func:`derive` on float32 q, k, v: ``(q, k, v, v_offset)`` as :func:`apply_all`."""
    xs, offset = [q, k, v], None
    for ops, c in steps:
        for i, op in enumerate(ops):
            if op is not None:
                xs[i] = operate(op, xs[i], c[i])
        if ops[2] == SUB:
            offset = c[2] if offset is None else offset + c[2]
    return (*xs, offset)


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
    offset = None
    for t in transforms:  # each transform measures the tensors its predecessors left
        q, k, v, c = t.apply(q, k, v)
        if c is not None:
            offset = c if offset is None else offset + c
    return q, k, v, offset
