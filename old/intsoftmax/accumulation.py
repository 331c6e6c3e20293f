"""Tile-wise accumulation rules: how ``m``, ``l`` and ``acc`` change between key tiles.

State per query row (integers): ``m`` the reference max (int32, QK units),
``l = sum P`` (int32) and ``acc = sum P * V`` (int32, or int64 for ``TwoPass(acc_bits=64)``;
one per output column).
``P`` is computed relative to ``m`` and is at most ``P_max = 2**p_bits - 1``.
When a later tile moves ``m`` up by ``delta`` QK units, earlier sums must be
multiplied by ``alpha = 2**(-delta * c)``; the exp strategy gives
``alpha_int ~= one * alpha`` (scale ``1/one``). The rules differ in what they do
with that integer factor:

* :class:`ScaleRelease` (QFlash): ``x <- round(x * alpha_int * rel_M / 2**S)``
  with ``rel_M = floor(2**S / one)``: the ``1/one`` scale is released at once,
  so ``l`` and ``acc`` keep one fixed scale for the whole row.
* :class:`LazyRescale`: like scale release, but the reference is set
  ``headroom_octaves`` above the tile max, and moved (with a rescale) only when
  a later tile exceeds it. Fewer rescales; ``P`` loses up to that many bits.
* :class:`TwoPass`: a first pass over all tiles finds the exact row max; the
  second pass never rescales.
* :class:`FloatSoftmax`: not an integer rule: INT-FlashAttention's float32 online softmax
  between the two int8 GEMMs, the baseline an integer softmax is compared with.
* :class:`NaiveScaleAccumulation`: multiplies by ``alpha_int`` and keeps the
  ``1/one`` scale, so after ``k`` rescales new tiles must be multiplied by
  ``one**k`` to be added: magnitudes grow like ``one**k`` (scale explosion). It
  exists to demonstrate this and raises :class:`IntegerOverflowError` as soon as
  a value leaves ``acc_bits``, never wrapping. The kernel does not compile it.

A rescale happens only when ``m`` moves (multiplying by the integer for 1.0 is
not exact for every strategy, e.g. QFlash's ``R * floor(2**30 / R) != 2**30``).

Overflow limits (``|V8| <= 128``, ``N`` keys):

* rescaling rules: a rescale never increases ``|x|`` (``rel_M`` rounds down), so
  ``l <= N * P_max`` and ``|acc| <= 128 * N * P_max`` must fit int32; the rescale
  product ``x * alpha_int * rel_M`` is int64 (``< 2**61``) with ``alpha_int * rel_M
  <= 2**S`` int32. :meth:`AccumulationRule.max_keys` gives the resulting ``N``.
* two-pass: the same int32 sums, no products. ``TwoPass(acc_bits=64)`` and
  ``ScaleRelease(acc_bits=64)`` widen ``acc``: then only ``l <= N * P_max`` must fit int32 (over a
  million keys at 11-bit P; the kernel moves its int32 sum's high bits into a second int32 every
  few thousand keys; a wide rescale forms ``acc * a`` exactly from two int64 products), and the
  normalization narrows ``l`` to 24 bits first (:func:`intsoftmax.golden.narrow`).
* naive: after ``k`` rescales ``l`` can reach ``(k + 1) * block_n * P_max * one**k``;
  :meth:`NaiveScaleAccumulation.max_keys` returns the worst case for ``acc_bits``.
"""
from __future__ import annotations

import numpy as np

from .fixedpoint import INT32_MAX, IntegerOverflowError, check_range, mul_rshift_round
from .strategy import Strategy, register

#: Largest |int8| value.
INT8_ABS = 128


class AccumulationRule(Strategy):
    """Base class. ``two_pass`` rules read the whole row's max before accumulating."""

    two_pass = False
    #: Rescaled values keep a fixed scale (every rule except naive accumulation).
    releases_scale = True
    #: Binary point ``S`` of ``rel_M = floor(2**S / one)`` (a field where the rule rescales).
    release_shift = 30
    #: The Triton kernel compiles this rule.
    in_kernel = True
    #: Width of ``acc`` (``l`` is int32 for every rule the kernel compiles).
    acc_bits = 32
    #: A float32 softmax (INT-FlashAttention's baseline), not an integer one.
    float_softmax = False

    def headroom_octaves_value(self) -> int:
        return 0

    def next_reference(self, m, tile_max, headroom_units):
        """New reference max given the old one and this tile's max (int64 arrays)."""
        return np.maximum(m, tile_max)

    def max_keys(self, block_n: int, p_max: int, one_max: int) -> int:
        """Largest key count whose worst case keeps every int32 sum in range."""
        return INT32_MAX // (INT8_ABS * p_max)

    def rescale(self, x, alpha, moved, rel_M):
        """Scale release where ``moved``: ``x <- (x * a + 2**(S-1)) >> S`` with
        ``a = alpha * rel_M <= 2**S * alpha / one <= 2**S`` (int32; ``rel_M`` is rounded down, so
        ``|x|`` never grows). The product is exact for a wide ``acc`` too (``|x| < 2**46``:
        :func:`~intsoftmax.fixedpoint.mul_rshift_round`); for int32 ``x`` it is ``< 2**61``."""
        a = alpha * rel_M
        check_range(a, 32, "rescale factor alpha * rel_M")
        return np.where(moved, mul_rshift_round(x, a, self.release_shift), x)


#: Fewest significant bits of ``rel_M = floor(2**S / one)`` a recipe must keep: a rescale then
#: loses at most 1/16 of ``l`` and ``acc`` to ``rel_M``'s truncation (with ``rel_M = 0`` it would lose all).
REL_M_MIN_BITS = 4


def min_release_shift(one_upper_bound: int) -> int:
    """Smallest ``release_shift`` keeping ``rel_M >= 2**REL_M_MIN_BITS`` for every ``one`` up to
    ``one_upper_bound`` (the exp strategy's integer for 1.0 at any scale)."""
    return (int(one_upper_bound) - 1).bit_length() + REL_M_MIN_BITS


def _check_acc_bits(rule):
    rule._check(rule.acc_bits in (32, 64), "acc_bits",
                "must be 32 (int32 acc: 8196 keys at 11-bit P) or 64 (int64 acc: l alone bounds the keys)")


def _max_keys(acc_bits: int, p_max: int) -> int:
    """``acc_bits=32``: ``128 N P_max`` fits int32; 64: ``l = N P_max`` does (``|acc| < 2**46``)."""
    return INT32_MAX // (INT8_ABS * p_max) if acc_bits == 32 else INT32_MAX // p_max


def _check_shift(rule):
    rule._check(16 <= rule.release_shift <= 30, "release_shift",
                "must be in [16, 30] so alpha * rel_M (at most 2**S) fits int32")


@register("accumulation", "scale_release")
class ScaleRelease(AccumulationRule):
    """QFlash's rule; ``release_shift`` is the binary point ``S`` of ``rel_M = floor(2**S / one)``.
    ``acc_bits=64``: a wide ``acc`` for long rows without a first pass (the rescale's product is
    formed exactly, :func:`~intsoftmax.fixedpoint.mul_rshift_round`); then only ``l = N P_max``
    bounds the keys, as for ``TwoPass(acc_bits=64)``."""

    release_shift: int = 30
    acc_bits: int = 32

    def _validate(self):
        _check_shift(self)
        _check_acc_bits(self)

    def max_keys(self, block_n: int, p_max: int, one_max: int) -> int:
        return _max_keys(self.acc_bits, p_max)


@register("accumulation", "lazy_rescale")
class LazyRescale(AccumulationRule):
    """Rescale only when a tile's max exceeds the reference; the reference gets
    ``headroom_octaves`` of headroom so small increases cost nothing."""

    headroom_octaves: int = 1
    release_shift: int = 30

    def _validate(self):
        _check_shift(self)
        self._check(0 <= self.headroom_octaves <= 4, "headroom_octaves",
                    "must be in [0, 4]: each octave of headroom costs P one bit of precision")

    def headroom_octaves_value(self) -> int:
        return self.headroom_octaves

    def next_reference(self, m, tile_max, headroom_units):
        return np.where(tile_max > m, tile_max + headroom_units, m)


@register("accumulation", "two_pass")
class TwoPass(AccumulationRule):
    """Exact row max first (an extra Q.K pass), then one accumulation pass with no rescale.
    ``acc_bits=64``: a wide ``acc`` for long rows (no rescale ever multiplies it)."""

    two_pass = True
    acc_bits: int = 32

    def _validate(self):
        _check_acc_bits(self)

    def max_keys(self, block_n: int, p_max: int, one_max: int) -> int:
        return _max_keys(self.acc_bits, p_max)

    def next_reference(self, m, tile_max, headroom_units):
        return m  # fixed to the global row max before the loop

    def rescale(self, x, alpha, moved, rel_M):
        return x  # the reference never moves


@register("accumulation", "naive_scale_accumulation")
class NaiveScaleAccumulation(AccumulationRule):
    """Multiply by ``alpha_int`` without releasing its scale; overflow is detected and raised."""

    releases_scale = False
    in_kernel = False
    acc_bits: int = 64

    def _validate(self):
        self._check(self.acc_bits in (32, 64), "acc_bits", "must be 32 or 64")

    def max_keys(self, block_n: int, p_max: int, one_max: int) -> int:
        """Worst case: every tile raises the max. After tile ``k`` (``k`` rescales) ``l`` can
        reach ``(k + 1) * block_n * P_max * one**k`` and ``|acc|`` 128 times that; both must
        fit ``acc_bits``. Returns ``block_n`` times the number of tiles that stay in range."""
        limit = 2 ** (self.acc_bits - 1) - 1
        k = 0
        while INT8_ABS * (k + 1) * block_n * p_max * one_max**k <= limit:
            k += 1
        return k * block_n

    def rescale(self, x, alpha, moved, rel_M):
        return np.where(moved, x.astype(object) * alpha.astype(object), x)

    def check(self, acc, l, tile: int) -> None:
        try:
            check_range(acc, self.acc_bits, f"naive accumulation: acc after key tile {tile}")
            check_range(l, self.acc_bits, f"naive accumulation: l after key tile {tile}")
        except IntegerOverflowError as err:
            raise IntegerOverflowError(f"{err} - scale explosion; use ScaleRelease") from None


@register("accumulation", "float_softmax")
class FloatSoftmax(AccumulationRule):
    """INT-FlashAttention's online softmax in float32, a baseline that is not integer-only: the
    int32 logits dequantized per (query, key) scale pair, a float running max, ``exp2``
    rescales of ``l`` and ``acc``, and ``P = floor(P_max p + 1/2)`` into the int8 P.V MMA
    (:mod:`intsoftmax.intfa`). With per-token K: keys need not share a scale."""

    float_softmax = True

    def max_keys(self, block_n: int, p_max: int, one_max: int) -> int:
        """No integer sum spans more than one tile (``block_n * P_max * 128 < 2**24``); the bound
        is the kernel's int32 element offsets of K and V (``N * D < 2**31`` at ``D <= 256``)."""
        return INT32_MAX // 256

    def next_reference(self, m, tile_max, headroom_units):
        raise TypeError("float_softmax has no integer reference; intsoftmax.intfa runs it")

    def rescale(self, x, alpha, moved, rel_M):
        raise TypeError("float_softmax has no integer rescale; intsoftmax.intfa runs it")
