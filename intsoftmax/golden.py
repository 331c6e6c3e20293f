"""The golden model: tiled, online, integer-only attention, exactly as the kernel runs it.

For each query row, key tiles of ``block_n`` keys are visited in order:

1. ``L = Q8 . K8^T`` (int32) ``+ bias`` (int32, QK units); masked keys get
   :data:`~intsoftmax.plan.MASKED_LOGIT` and ``P = 0``.
2. The accumulation rule moves the reference max ``m``; if it moved by
   ``delta > 0``, ``alpha = exp(delta)`` rescales ``l`` and ``acc``.
3. ``t = m - L``; ``e = exp(t)`` (prescale + exp strategy); ``P = min(P_max,
   requant(e))``; ``l += sum P``; ``acc += P . V8`` (int32).

Finally ``o = round(acc * 2**F / l)`` via one integer reciprocal per row,
``r = 2**NORM_SHIFT // l``, and ``o = (acc * r + 2**(NORM_SHIFT-F-1)) >> (NORM_SHIFT-F)``;
a row with ``l = 0`` (every key masked) gives ``o = 0``. Every intermediate is
checked against the width the kernel uses and an :class:`IntegerOverflowError`
is raised, never a silent wrap.
"""
from __future__ import annotations

import numpy as np

from .exp.base import evaluate
from .fixedpoint import INT32_MAX, check_range, saturate
from .plan import MASKED_LOGIT, NORM_FRAC, AttentionPlan

#: Binary point of the per-row reciprocal ``r = 2**NORM_SHIFT // l`` (relative error <= 2**-22).
NORM_SHIFT = 46
_MASK_FLOOR = MASKED_LOGIT  # valid logits are strictly above this


def integer_logits(q8, k8, bias_int=None, mask=None):
    """``Q8 . K8^T`` (+ bias) as int64 holding int32 values; masked keys -> MASKED_LOGIT."""
    L = np.einsum("...nd,...md->...nm", q8.astype(np.int64), k8.astype(np.int64))
    check_range(L, 32, "Q.K^T")
    if bias_int is not None:
        L = L + bias_int
    if mask is not None:
        L = np.where(mask, L, MASKED_LOGIT)
    return L


def online_softmax(recipe, L, plan: AttentionPlan, pv, acc_shape, check_limits: bool = True):
    """Run the tiled online loop over integer logits ``L`` (..., Nq, Nk).

    ``pv(P, j0, j1)`` returns the tile's int64 contribution ``P . V[j0:j1]``
    with shape ``acc_shape``. Returns ``(acc, l)`` as int64 arrays holding the
    kernel's int32 values.
    """
    rule, exp = recipe.accumulation, recipe.exp
    p_max, block_n = recipe.p_max, recipe.block_n
    nk = L.shape[-1]
    rows = L.shape[:-1] + (1,)
    acc = np.zeros(acc_shape, dtype=np.int64)
    l = np.zeros(rows, dtype=np.int64)
    if rule.two_pass:
        m = L.max(axis=-1, keepdims=True) if nk else np.full(rows, MASKED_LOGIT, np.int64)
    else:
        m = np.full(rows, MASKED_LOGIT, dtype=np.int64)
    mult = np.ones(rows, dtype=object) if not rule.releases_scale else None
    half = np.int64(1) << (plan.req_shift - 1)
    for tile, j0 in enumerate(range(0, nk, block_n)):
        Lt = L[..., j0:j0 + block_n]
        valid = Lt > _MASK_FLOOR
        m_new = rule.next_reference(m, Lt.max(axis=-1, keepdims=True), plan.headroom)
        needed = (m_new > m) & (m > _MASK_FLOOR)
        delta = np.where(needed, np.minimum(m_new - m, INT32_MAX), 0)
        alpha = evaluate(exp, delta, plan.exp)
        acc = rule.rescale(acc, alpha, needed, plan.rel_M)
        l = rule.rescale(l, alpha, needed, plan.rel_M)
        t = np.clip(m_new - Lt, 0, INT32_MAX)
        e = evaluate(exp, t, plan.exp)
        P = np.where(valid, np.minimum((e * plan.req_M + half) >> plan.req_shift, p_max), 0)
        tile_l, tile_pv = P.sum(axis=-1, keepdims=True), pv(P, j0, j0 + block_n)
        if mult is None:
            l, acc = l + tile_l, acc + tile_pv
            if check_limits:
                check_range(l, 32, f"l after key tile {tile}")
                check_range(acc, 32, f"acc after key tile {tile}")
        else:  # naive: earlier sums carry scale one**-k, so new terms are scaled by one**k
            one = np.asarray(plan.exp.one, dtype=object)
            mult = np.where(needed, mult * one, mult)
            l = l.astype(object) + tile_l.astype(object) * mult
            acc = acc.astype(object) + tile_pv.astype(object) * mult
            rule.check(acc, l, tile)
            l, acc = l.astype(np.int64), acc.astype(np.int64)
        m = m_new
    return acc, l


def normalize(acc, l, frac_bits: int):
    """``round(acc * 2**frac_bits / l)`` through the per-row integer reciprocal (0 where ``l = 0``)."""
    r = (np.int64(1) << NORM_SHIFT) // np.maximum(l, 1)
    prod = acc * r
    check_range(np.abs(acc).max(initial=0) * r.max(initial=0), 63, "normalisation acc * (2**46 // l)")
    s = NORM_SHIFT - frac_bits
    return (prod + (np.int64(1) << (s - 1))) >> s


def requantize_int8(o16, plan: AttentionPlan):
    """int8 output: ``sat(round(o16 * out_M / 2**out_shift))`` with ``o16`` at NORM_FRAC bits."""
    half = np.where(plan.out_shift > 0, np.left_shift(np.int64(1), np.maximum(plan.out_shift - 1, 0)), 0)
    return saturate((o16 * plan.out_M + half) >> plan.out_shift, 8).clip(-127, 127)


def attention_core(recipe, q8, k8, v8, plan: AttentionPlan, bias_int=None, mask=None, int8_out=False,
                   check_limits: bool = True):
    """Integer attention on int8 ``(..., Nq, D)``, ``(..., Nk, D)``, ``(..., Nk, Dv)``.

    Returns the int64 array of output integers: at ``recipe.out_frac_bits``
    fractional bits of V's scale, or int8 values when ``int8_out``.
    """
    L = integer_logits(q8, k8, bias_int, mask)
    v64 = v8.astype(np.int64)
    batch = np.broadcast_shapes(L.shape[:-2], v64.shape[:-2])
    L = np.broadcast_to(L, batch + L.shape[-2:])
    acc_shape = batch + (L.shape[-2], v64.shape[-1])
    acc, l = online_softmax(recipe, L, plan, lambda P, j0, j1: P @ v64[..., j0:j1, :], acc_shape, check_limits)
    if int8_out:
        return requantize_int8(normalize(acc, l, NORM_FRAC), plan)
    return normalize(acc, l, recipe.out_frac_bits)


def softmax_core(recipe, L, plan: AttentionPlan, frac_bits: int, check_limits: bool = True):
    """Integer softmax probabilities of integer logits, ``round(p * 2**frac_bits)``.

    This is the attention pipeline with ``V = I``: each key's weight is its ``P``
    rescaled exactly as an accumulator column would be.
    """
    nk = L.shape[-1]

    def scatter(P, j0, j1):
        out = np.zeros(L.shape, dtype=np.int64)
        out[..., j0:j1] = P
        return out

    acc, l = online_softmax(recipe, L, plan, scatter, L.shape, check_limits)
    return normalize(acc, l, frac_bits) if nk else acc
