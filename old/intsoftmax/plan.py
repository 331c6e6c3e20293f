"""Derivation of every integer constant a recipe needs, from the float scales.

This is the only place where floats meet the integer pipeline. It runs once per
call (dynamic scales) or once per calibration (static scales), per query row
or per head, never per element. It uses only IEEE float64 operations that a
GPU reproduces exactly (multiply, add, correctly rounded divide, ``floor``,
min/max, and reading a float's exponent and mantissa bits), so the
kernel's device-side derivation gives the same integers.

Per query row (arrays broadcast to ``(..., Nq, 1)``):

* ``nat_unit = s_q * s_k * scale``: nats per integer QK unit (``c = nat_unit * log2 e`` octaves);
* the exp strategy's :class:`~intsoftmax.exp.ExpPlan` (prescale multiplier, clamps);
* ``req_M, req_shift``: ``P = min(P_max, (e * req_M + 2**(req_shift-1)) >> req_shift)``;
* ``rel_M = floor(2**S / one)``: the scale-release multiplier (``S = release_shift``); rounding
  down means a rescale never increases a magnitude, so int32 limits hold for any scale;
* ``headroom``: the lazy rule's headroom in QK units, ``floor(h / c)`` clamped to ``2**28`` and to
  ``h`` octaves at the strategy's slowest rate (:func:`headroom_limits`), with ``h`` at most
  ``floor(log2(one))`` octaves (the exp at scale ``one`` is 0 past them: QFlash's ``R`` per row);
* ``bias_inv = float32(1 / nat_unit)``: turns an additive bias in nats into QK
  units, ``floor(float32(bias) * bias_inv + 1/2)``; this is input quantization, like Q's;
* int8 output: ``out_M * 2**-out_shift ~= s_v / out_scale * 2**-NORM_FRAC``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .exp.base import LOG2E, ExpPlan
from .fixedpoint import bit_length, fixed_multiplier

#: Largest |additive bias| in QK units; larger values saturate (|logit| stays < 2**29).
BIAS_MAX = 2**28
#: Integer logit of a masked key: below every real logit (``|Q.K| < 2**22``, ``|bias| <= 2**28``).
MASKED_LOGIT = -(2**30)
#: Largest lazy-rescale headroom in QK units.
HEADROOM_MAX = 2**28
#: Fractional bits of the intermediate output before int8 requantization.
NORM_FRAC = 16


@dataclasses.dataclass(frozen=True)
class AttentionPlan:
    """Integer constants of one call (int64 arrays broadcast over query rows; see module doc)."""

    nat_unit: np.ndarray
    exp: ExpPlan
    req_M: object
    req_shift: int
    rel_M: object
    headroom: object
    bias_inv: np.ndarray
    out_M: object = None
    out_shift: object = None


def headroom_limits(recipe) -> tuple[float, float]:
    """``(h, cap)``: the lazy rule's headroom ``h`` in octaves and the most QK units it may span,
    ``min(2**28, h / f)`` for an exp strategy whose slowest rate is ``f`` octaves per unit
    (:meth:`~intsoftmax.exp.ExpStrategy.min_octaves_per_unit`). Without the cap, scales below
    that rate turn ``h`` octaves into many more at the strategy's own rate, and a row's only key
    could get ``P = 0``. Both are exact in float32 (the device reads them as constants)."""
    h = float(recipe.accumulation.headroom_octaves_value())
    f = recipe.exp.min_octaves_per_unit()
    cap = min(h / f, float(HEADROOM_MAX)) if f > 0 else float(HEADROOM_MAX)
    if float(np.float32(cap)) != cap:
        raise ValueError(f"headroom cap {cap} is not exact in float32")
    return h, cap


def derive_plan(recipe, s_q, s_k, scale: float, s_v=None, out_scale=None) -> AttentionPlan:
    """All integer constants for ``recipe`` given float32 scales (broadcast to rows)."""
    nat_unit = np.asarray(s_q, np.float64) * np.asarray(s_k, np.float64) * np.float64(scale)
    exp = recipe.exp
    eplan = exp.plan(nat_unit)
    req_M, req_shift = exp.requant_constants(recipe.p_max, eplan.consts)
    one = np.asarray(eplan.one, dtype=np.int64)
    rule = recipe.accumulation
    rel_M = (np.int64(1) << rule.release_shift) // one
    h, cap = headroom_limits(recipe)
    # at most floor(log2(one)) octaves: past them the exp at scale ``one`` is 0 (QFlash's R per row)
    h_row = np.minimum(h, bit_length(np.maximum(one, 1)) - 1)
    headroom = np.floor(np.minimum(h_row / (nat_unit * LOG2E), cap)).astype(np.int64)
    bias_inv = (1.0 / nat_unit).astype(np.float32)
    out_M = out_shift = None
    if out_scale is not None:
        ratio = np.asarray(s_v, np.float64) / np.float64(out_scale) * 2.0**-NORM_FRAC
        out_M, out_shift = fixed_multiplier(np.minimum(ratio, 2.0**30))
    return AttentionPlan(nat_unit, eplan, req_M, req_shift, rel_M, headroom, bias_inv, out_M, out_shift)
