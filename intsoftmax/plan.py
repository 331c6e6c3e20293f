"""Host-side derivation of every integer constant a recipe needs, from the float scales.

This is the only place where floats meet the integer pipeline: it runs once
per call (dynamic scales) or once per calibration (static scales), never per
element. Everything is written against :mod:`.arrayops`, so the kernel's
device-side derivation produces bit-identical constants.

Per query row (arrays broadcast to ``(..., Nq, 1)``):

* ``c = s_q * s_k * scale * log2(e)``: octaves per integer QK unit;
* the exp strategy's :class:`~intsoftmax.exp.ExpPlan` (prescale multiplier, clamps);
* ``req_M, req_shift``: ``P = min(P_max, (e * req_M + 2**(req_shift-1)) >> req_shift)``;
* ``rel_M = round(2**S / one)``: the scale-release multiplier (``S = release_shift``);
* ``headroom``: the lazy rule's headroom in QK units, ``floor(h / c)`` clamped to ``2**28``;
* ``bias_inv = float32(1 / (s_q * s_k * scale))``: turns an additive bias in nats
  into QK units, ``rint(bias * bias_inv)`` in float32;
* int8 output: ``out_M * 2**-out_shift ~= s_v / out_scale * 2**-NORM_FRAC``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .arrayops import NUMPY
from .exp.base import LOG2E, ExpPlan
from .fixedpoint import fixed_multiplier

#: Largest |additive bias| in QK units; larger values saturate (|logit| stays < 2**29).
BIAS_MAX = 2**28
#: Integer logit of a masked key (below every real logit, which is > -(2**28 + 2**22)).
MASKED_LOGIT = -(2**30)
#: Largest lazy-rescale headroom in QK units.
HEADROOM_MAX = 2**28
#: Fractional bits of the intermediate output before int8 requantization.
NORM_FRAC = 16


@dataclasses.dataclass(frozen=True)
class AttentionPlan:
    c: object
    exp: ExpPlan
    req_M: object
    req_shift: int
    rel_M: object
    rel_shift: int
    headroom: object
    bias_inv: object
    out_M: object = None
    out_shift: object = None


def derive_plan(recipe, s_q, s_k, scale: float, s_v=None, out_scale=None, ops=NUMPY) -> AttentionPlan:
    """All integer constants for ``recipe`` given float32 scales (broadcast to rows)."""
    nat_unit = ops.f64(s_q) * ops.f64(s_k) * scale
    c = nat_unit * LOG2E
    exp = recipe.exp
    eplan = exp.plan(c, ops)
    req_M, req_shift = exp.requant_constants(recipe.p_max, eplan.consts, ops)
    rule = recipe.accumulation
    rel_shift = getattr(rule, "release_shift", 30)
    rel_M = ops.i64(ops.rint(2.0**rel_shift / ops.f64(eplan.one)))
    headroom = ops.i64(ops.minimum(ops.floor(rule.headroom_octaves_value() / c), float(HEADROOM_MAX)))
    bias_inv = ops.f32(1.0 / nat_unit)
    out_M = out_shift = None
    if out_scale is not None:
        out_M, out_shift = fixed_multiplier(ops.f64(s_v) / ops.f64(out_scale) * 2.0**-NORM_FRAC, ops)
    return AttentionPlan(c, eplan, req_M, req_shift, rel_M, rel_shift, headroom, bias_inv, out_M, out_shift)
