"""Quantization granularity policies and the symmetric INT8 quantizer.

A policy says which elements of a ``(..., N, D)`` tensor share one scale:

============  =========================================  ====================
policy        scale shared by                            scale shape
============  =========================================  ====================
PerTensor     the whole tensor                           ``(1, ..., 1, 1)``
PerHead       one ``(..., N, D)`` slice (leading index)  ``(..., 1, 1)``
PerToken      one row of ``D`` values                    ``(..., N, 1)``
PerBlock(b)   ``b`` consecutive rows of one slice        ``(..., N, 1)`` (repeated)
PerChannel    one channel (column) of one slice          ``(..., 1, D)``
============  =========================================  ====================

Integer comparability: the running max and the exp compare integer logits of
one query row across *all* keys, so every key of a row must share one K scale:
K may be PerTensor or PerHead only. V scales sit inside ``sum_j P_j V_j``, so V
must also share one scale along the keys: PerTensor, PerHead or PerChannel (V only:
output channel ``d`` sums ``P_j V8[j, d]`` in one scale and is dequantized by its own; on Q
or K a per-channel scale would weight each term of ``q . k`` differently, which is what
:class:`~intsoftmax.transforms.ChannelBalance` folds away exactly instead). Q scales are
constant along a row, so every row policy is valid for Q (the integer constants become per-row).

Quantization: ``s = amax / 127`` (float32; ``s = 1`` where ``amax = 0``) and
``x8 = clip(floor(x * (127 / amax) + 1/2), -127, 127)`` with every operation in
float32 (IEEE, no fused multiply-add), so a GPU reproduces the integers exactly.
"""
from __future__ import annotations

import numpy as np

from .fixedpoint import round_half_up
from .strategy import Strategy, register

QMAX = 127


class Granularity(Strategy):
    #: Whether scales vary along the last (channel) axis; then :meth:`block` describes each
    #: channel's scale. Valid for V only (the module docstring).
    per_channel = False

    #: can this policy be used for K (and V)? See the module docstring.
    @property
    def row_uniform(self) -> bool:
        """One scale for every row of a head (usable for K and V), from :meth:`block`."""
        return self.block()[1] is None

    def amax(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def block(self) -> tuple[int | None, int | None]:
        """The primitive every consumer reads (as torchao reads a block size): one scale per block
        of ``(heads, rows)`` of a ``(B, H, N, D)`` tensor; ``heads=None``: every head and batch at
        once; ``rows=None``: every row of a head."""
        raise NotImplementedError


@register("granularity", "per_tensor")
class PerTensor(Granularity):
    def amax(self, x):
        return np.abs(x).max(axis=tuple(range(x.ndim)), keepdims=True)

    def block(self):
        return None, None


@register("granularity", "per_head")
class PerHead(Granularity):
    def amax(self, x):
        return np.abs(x).max(axis=(-2, -1), keepdims=True)

    def block(self):
        return 1, None


@register("granularity", "per_token")
class PerToken(Granularity):
    def amax(self, x):
        return np.abs(x).max(axis=-1, keepdims=True)

    def block(self):
        return 1, 1


@register("granularity", "per_block")
class PerBlock(Granularity):
    size: int = 64

    def _validate(self):
        self._check(1 <= self.size <= 4096, "size", "must be in [1, 4096] tokens")

    def block(self):
        return 1, self.size

    def amax(self, x):
        n = x.shape[-2]
        rows = np.abs(x).max(axis=-1, keepdims=True)  # (..., N, 1)
        pad = (-n) % self.size
        padded = np.concatenate([rows, np.zeros(rows.shape[:-2] + (pad, 1), rows.dtype)], axis=-2)
        blocks = padded.reshape(rows.shape[:-2] + (-1, self.size, 1)).max(axis=-2)
        return np.repeat(blocks, self.size, axis=-2)[..., :n, :]


@register("granularity", "per_channel")
class PerChannel(Granularity):
    """One scale per channel of each head (V only): column ``d`` of a ``(..., N, D)`` slice."""

    per_channel = True

    def amax(self, x):
        return np.abs(x).max(axis=-2, keepdims=True)

    def block(self):
        return 1, None


#: Below this range ``127 / amax`` overflows float32 (the quantizer's multiplier would be inf).
AMAX_MIN = float(np.float32(QMAX) / np.finfo(np.float32).max)


def scales_from_amax(amax) -> tuple[np.ndarray, np.ndarray]:
    """``(s, inv)`` in float32: ``s = amax / 127`` dequantizes, ``inv = 127 / amax`` quantizes.
    ``amax`` must be finite and non-negative, and 0 or at least :data:`AMAX_MIN` (~3.7e-37)."""
    amax = np.asarray(amax, dtype=np.float32)
    if not np.isfinite(amax).all() or (amax < 0).any():
        raise ValueError(f"INT8 ranges must be finite and non-negative, got {amax.min()}..{amax.max()}")
    tiny = (amax > 0) & (amax < AMAX_MIN)
    if tiny.any():
        raise ValueError(f"INT8 range {amax[tiny].min():.3g} is below {AMAX_MIN:.3g}: 127 / amax overflows float32; "
                         "scale the inputs up (or the attention scale down) before quantizing")
    pos = amax > 0
    safe = np.where(pos, amax, np.float32(1))
    s = np.where(pos, safe / np.float32(QMAX), np.float32(1)).astype(np.float32)
    inv = np.where(pos, np.float32(QMAX) / safe, np.float32(1)).astype(np.float32)
    return s, inv


def quantize_int8(x, inv) -> np.ndarray:
    """``clip(floor(x * inv + 1/2), -127, 127)`` in float32 -> int8."""
    y = np.asarray(x, dtype=np.float32) * np.asarray(inv, dtype=np.float32)
    return np.clip(round_half_up(y), -QMAX, QMAX).astype(np.int8)


def quantize(x, granularity: Granularity, amax=None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric INT8 quantization of a float ``(..., N, D)`` array.

    ``amax`` gives static (calibrated) ranges broadcastable to the policy's scale
    shape; by default they are measured from ``x`` (dynamic). Returns ``(x8, s)``
    with ``x ~= x8 * s`` and ``s`` float32 of the policy's scale shape.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"quantize expects a float array, got dtype {x.dtype}; pass int8 data with its scales instead")
    if not np.isfinite(x).all():
        raise ValueError("quantize: input contains NaN or inf; attention inputs must be finite")
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        raise ValueError("quantize: input values beyond float32's range (|x| > 3.4e38); quantization reads float32")
    a = granularity.amax(x32) if amax is None else np.broadcast_to(np.asarray(amax, np.float32), granularity.amax(x32).shape)
    s, inv = scales_from_amax(a)
    return quantize_int8(x32, inv), s
