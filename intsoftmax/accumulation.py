"""Tile-wise accumulation rules: how ``m``, ``l`` and ``acc`` change between key tiles.

State per query row (integers): ``m`` the reference max (int32, QK units),
``l = sum P`` (int32) and ``acc = sum P * V`` (int32, one per output column).
``P`` is computed relative to ``m`` and is at most ``P_max = 2**p_bits - 1``.
When a later tile moves ``m`` up by ``delta`` QK units, earlier sums must be
multiplied by ``alpha = 2**(-delta * c)``; the exp strategy gives
``alpha_int ~= one * alpha`` (scale ``1/one``). The rules differ in what they do
with that integer factor:

* :class:`ScaleRelease` (QFlash): ``x <- round(x * alpha_int * M_rel / 2**S)``
  with ``M_rel = round(2**S / one)``: the ``1/one`` scale is released at once,
  so ``l`` and ``acc`` keep one fixed scale for the whole row.
* :class:`LazyRescale`: like scale release, but the reference is set
  ``headroom_octaves`` above the tile max, and moved (with a rescale) only when
  a later tile exceeds it. Fewer rescales; ``P`` loses up to that many bits.
* :class:`TwoPass`: a first pass over all tiles finds the exact row max; the
  second pass never rescales.
* :class:`NaiveScaleAccumulation`: multiplies by ``alpha_int`` and keeps the
  ``1/one`` scale, so after ``k`` rescales new tiles must be multiplied by
  ``one**k`` to be added: magnitudes grow like ``one**k`` (scale explosion). It
  exists to demonstrate this and raises :class:`IntegerOverflowError` as soon as
  a value leaves ``acc_bits``, never wrapping.

A rescale is skipped when ``delta == 0`` (multiplying by the integer for 1.0 is
not exact for every strategy, e.g. QFlash's ``R * round(2**30 / R) != 2**30``).
"""
from __future__ import annotations

import numpy as np

from .fixedpoint import IntegerOverflowError, check_range
from .strategy import Strategy, register


class AccumulationRule(Strategy):
    """Base class. ``two_pass`` rules read the whole row's max before accumulating."""

    two_pass = False
    #: Rescaled values keep a fixed scale (every rule except naive accumulation).
    releases_scale = True

    def headroom_octaves_value(self) -> int:
        return 0

    def next_reference(self, m, tile_max, headroom_units):
        """New reference max given the old one and this tile's max (int64 arrays)."""
        return np.maximum(m, tile_max)

    def tiles_before_overflow(self, block_n: int, p_max: int, one: int) -> int | None:
        """Worst-case number of key tiles before an integer overflow (None: no rule-specific limit)."""
        return None

    def rescale(self, x, alpha, needed, rel_M):
        """Scale-release rescale of ``x`` by ``alpha / one`` (rounded), where ``needed``."""
        S = self.release_shift
        released = (x * (alpha * rel_M) + (np.int64(1) << (S - 1))) >> S
        return np.where(needed, released, x)


def _check_shift(rule, field="release_shift"):
    rule._check(16 <= getattr(rule, field) <= 32, field, "must be in [16, 32] (alpha * M_rel must fit int32)")


@register("accumulation", "scale_release")
class ScaleRelease(AccumulationRule):
    """QFlash's rule; ``release_shift`` is the binary point of ``M_rel = round(2**S / one)``."""

    release_shift: int = 30

    def _validate(self):
        _check_shift(self)


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
    """Exact row max first (an extra Q.K pass), then one accumulation pass with no rescale."""

    two_pass = True

    def next_reference(self, m, tile_max, headroom_units):
        return m  # fixed to the global row max before the loop

    def rescale(self, x, alpha, needed, rel_M):
        return x  # the reference never moves


@register("accumulation", "naive_scale_accumulation")
class NaiveScaleAccumulation(AccumulationRule):
    """Multiply by ``alpha_int`` without releasing its scale; overflow is detected and raised."""

    releases_scale = False
    acc_bits: int = 64

    def _validate(self):
        self._check(self.acc_bits in (32, 64), "acc_bits", "must be 32 or 64")

    def tiles_before_overflow(self, block_n: int, p_max: int, one: int) -> int:
        """Worst case: every tile raises the max. After ``k`` rescales ``l`` can reach
        ``(k + 1) * block_n * p_max * one**k``; ``l`` must stay below ``2**31``
        (normalisation) and ``acc = 127 * l`` below ``2**(acc_bits - 1)``."""
        k = 0
        while True:
            l_bound = (k + 2) * block_n * p_max * one ** (k + 1)
            if l_bound >= 2**31 or 127 * l_bound >= 2 ** (self.acc_bits - 1):
                return k + 1
            k += 1

    def rescale(self, x, alpha, needed, rel_M):
        return np.where(needed, x * alpha, x)

    def check(self, acc, l, tile: int) -> None:
        try:
            check_range(acc, self.acc_bits, f"naive accumulation: acc after key tile {tile}")
            check_range(l, 31, f"naive accumulation: l after key tile {tile} (normalisation needs l < 2**31)")
        except IntegerOverflowError as err:
            raise IntegerOverflowError(f"{err} - scale explosion; use ScaleRelease") from None
