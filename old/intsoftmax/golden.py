"""The golden model: tiled, online, integer-only attention, exactly as the kernel runs it.

For each query row, key tiles of ``block_n`` keys are visited in order:

1. ``L = Q8 . K8^T`` (int32) ``+ bias`` (int32, QK units); masked keys get
   :data:`~intsoftmax.plan.MASKED_LOGIT` and ``P = 0``.
2. The accumulation rule moves the reference max ``m``; if it moved by
   ``delta > 0``, ``alpha = exp(delta)`` rescales ``l`` and ``acc``.
3. ``t = m - L``; ``e = exp(t)`` (prescale + exp strategy); ``P = min(P_max,
   requant(e))``; ``l += sum P``; ``acc += P . V8`` (int32).

Finally the pair ``(acc, l)`` becomes the output: a float output is ``acc * s_v / l``
(:func:`dequantize_pair`: the division by ``l`` folded into the dequantization, one float32
multiply per output in the kernel), unless the recipe rounds it (``float_out="rounded"``, QFlash's
integer-only output), and an integer output is ``o = round(acc * 2**F / l)`` through one integer
reciprocal per row. A row sum ``l`` of
``2**24`` or more (a wide accumulator's long rows) is first brought below it: ``sh = bitlen(l) -
24``, ``l <- l >> sh`` and ``acc <- round(acc / 2**sh)`` (``l`` keeps 24 bits, a relative error
below ``2**-23``). Then
``e = min(floor(log2 l), F + 3)``, ``r = 2**(NORM_BITS + e) // l`` and
``o = (acc * r + 2**(s-1)) >> s`` with ``s = NORM_BITS + e - F <= 33``, so the kernel spends one
``IMAD.WIDE`` and a funnel shift per output. ``r`` keeps at least 16 bits (``l < 2**24``), which
puts the truncation error below half an output LSB (``2**-F`` of V's scale). ``acc`` is first
clamped to ``[-128 l, 128 l]``, which only removes rounding excess of the online rules and of
the narrowing (``|V8| <= 128``). A row with ``l = 0`` (every key masked) gives ``o = 0``. Every intermediate
is checked against the width the kernel uses; an :class:`IntegerOverflowError` is raised,
never a silent wrap.
"""
from __future__ import annotations

import numpy as np

from .exp.base import evaluate, prescale
from .fixedpoint import INT32_MAX, bit_length, check_range
from .plan import BIAS_MAX, MASKED_LOGIT, NORM_FRAC, AttentionPlan

#: Bits of the per-row reciprocal ``r = 2**(NORM_BITS + e) // l``.
NORM_BITS = 30
#: ``l`` below this keeps the reciprocal ``r`` at 16 bits or more; a larger ``l`` is shifted below it first.
NORM_L_LIMIT = 2**24
#: Largest |int8| value (the int8 range is [-128, 127]).
INT8_ABS = 128


def integer_logits(q8, k8, bias_int=None, mask=None):
    """``Q8 . K8^T`` (+ bias) as int64 holding int32 values; masked keys -> MASKED_LOGIT.

    ``bias_int`` is in QK units (any int32): below ``-BIAS_MAX`` (``MASKED_LOGIT`` included) it
    masks the key, above ``BIAS_MAX`` it saturates there, so it never wraps. ``mask`` is
    boolean, True = attend. Both broadcast to the logits.
    """
    L = np.einsum("...nd,...md->...nm", q8.astype(np.int64), k8.astype(np.int64))
    if bias_int is not None:
        bias_int = np.asarray(bias_int, dtype=np.int64)
        L = np.where(bias_int < -BIAS_MAX, MASKED_LOGIT, L + np.minimum(bias_int, BIAS_MAX))
    if mask is not None:
        L = np.where(mask, L, MASKED_LOGIT)
    return L


def requantize_p(e, plan: AttentionPlan, p_max: int, valid, check_limits: bool = True):
    """``P = min(P_max, (e * req_M + 2**(req_shift-1)) >> req_shift)``; 0 for masked keys."""
    prod = e * plan.req_M + (np.int64(1) << (plan.req_shift - 1))
    if check_limits:
        check_range(prod, 32, "requantization e * req_M")
    return np.where(valid, np.minimum(prod >> plan.req_shift, p_max), 0)


def probabilities(exp, t, plan: AttentionPlan, p_max: int, valid, check_limits: bool = True):
    """``P`` of keys at QK-unit distances ``t >= 0``: the exp then the requantization, or the
    strategy's own ``P`` when it fuses the two; 0 for masked keys."""
    if exp.fuses_requant:
        return np.where(valid, exp.fused_p(prescale(t, plan.exp), plan.exp.consts, p_max), 0)
    return requantize_p(evaluate(exp, t, plan.exp), plan, p_max, valid, check_limits)


def online_softmax(recipe, L, plan: AttentionPlan, pv, acc_shape, check_limits: bool = True):
    """Run the tiled online loop over integer logits ``L`` (..., Nq, Nk).

    ``pv(P, j0, j1)`` returns the tile's int64 contribution ``P . V[j0:j1]``
    with shape ``acc_shape``. Returns ``(acc, l)`` as int64 arrays holding the
    kernel's values: ``l`` int32, ``acc`` of the rule's ``acc_bits``.
    """
    rule, exp = recipe.accumulation, recipe.exp
    nk = L.shape[-1]
    rows = L.shape[:-1] + (1,)
    acc = np.zeros(acc_shape, dtype=np.int64)
    l = np.zeros(rows, dtype=np.int64)
    if rule.two_pass:
        m = L.max(axis=-1, keepdims=True) if nk else np.full(rows, MASKED_LOGIT, np.int64)
    else:
        m = np.full(rows, MASKED_LOGIT, dtype=np.int64)
    scale_k = None if rule.releases_scale else np.ones(rows, dtype=object)  # naive: one**k per row
    for tile, j0 in enumerate(range(0, nk, recipe.block_n)):
        Lt = L[..., j0:j0 + recipe.block_n]
        valid = Lt > MASKED_LOGIT
        m_new = rule.next_reference(m, Lt.max(axis=-1, keepdims=True), plan.headroom)
        moved = (m_new > m) & (m > MASKED_LOGIT)
        alpha = evaluate(exp, np.where(moved, np.minimum(m_new - m, INT32_MAX), 0), plan.exp)
        acc = rule.rescale(acc, alpha, moved, plan.rel_M)
        l = rule.rescale(l, alpha, moved, plan.rel_M)
        P = probabilities(exp, np.clip(m_new - Lt, 0, INT32_MAX), plan, recipe.p_max, valid, check_limits)
        tile_l, tile_pv = P.sum(axis=-1, keepdims=True), pv(P, j0, j0 + recipe.block_n)
        if scale_k is None:
            l, acc = l + tile_l, acc + tile_pv
            if check_limits:
                check_range(l, 32, f"l after key tile {tile}")
                check_range(acc, rule.acc_bits, f"acc after key tile {tile}")
        else:  # naive: earlier sums carry scale one**-k, so new terms are scaled by one**k
            scale_k = np.where(moved, scale_k * np.asarray(plan.exp.one, dtype=object), scale_k)
            l = l.astype(object) + tile_l.astype(object) * scale_k
            acc = acc.astype(object) + tile_pv.astype(object) * scale_k
            rule.check(acc, l, tile)
            l, acc = l.astype(np.int64), acc.astype(np.int64)
        m = m_new
    return acc, l


def reciprocal(l, frac_bits: int):
    """``(r, e)`` per row: ``e = min(floor(log2 l), F + 3)`` and ``r = 2**(NORM_BITS + e) // l``
    (``r = 0``, ``e = 0`` where ``l = 0``); ``l < 2**24``."""
    l = np.asarray(l, dtype=np.int64)
    e = np.where(l > 0, np.minimum(bit_length(l) - 1, frac_bits + 3), 0)  # floor(log2 l)
    r = np.where(l > 0, (np.int64(1) << (NORM_BITS + e)) // np.maximum(l, 1), 0)
    return r, e


def narrow(acc, l):
    """``(acc, l)`` with ``l < NORM_L_LIMIT``: for ``l >= 2**24``, ``sh = bitlen(l) - 24``,
    ``l >> sh`` and ``acc`` rounded to the same scale, half up, as ``((acc >> (sh - 1)) + 1) >> 1``
    (no intermediate exceeds ``acc``). Identity below ``2**24``."""
    acc, l = np.asarray(acc, dtype=np.int64), np.asarray(l, dtype=np.int64)
    sh = np.maximum(bit_length(l) - 24, 0)
    if not sh.any():
        return acc, l
    rounded = ((acc >> np.maximum(sh - 1, 0)) + 1) >> 1
    return np.where(sh > 0, rounded, acc), l >> sh


def row_sums(acc, l):
    """The pair every output is formed from: :func:`narrow`, then ``acc`` clamped to ``[-128 l,
    128 l]``. ``l < 2**24`` (exact in float32), ``|acc| < 2**31``."""
    acc, l = narrow(acc, l)
    return np.clip(acc, -INT8_ABS * l, INT8_ABS * l), l


def normalize(acc, l, frac_bits: int):
    """``round(acc * 2**frac_bits / l)`` through the per-row integer reciprocal (0 where ``l = 0``),
    after :func:`row_sums` (``l`` then holds at most 24 bits)."""
    acc, l = row_sums(acc, l)
    r, e = reciprocal(l, frac_bits)
    s = NORM_BITS + e - frac_bits
    return (acc * r + (np.int64(1) << (s - 1))) >> s


def requantize_int8(o16, plan: AttentionPlan):
    """int8 output: ``clip(round(o16 * out_M / 2**out_shift), -127, 127)``, ``o16`` at NORM_FRAC bits."""
    s = np.asarray(plan.out_shift, dtype=np.int64)
    half = np.where(s > 0, np.int64(1) << np.maximum(s - 1, 0), 0)
    return np.clip((o16 * plan.out_M + half) >> s, -127, 127)


def attention_sums(recipe, q8, k8, v8, plan: AttentionPlan, bias_int=None, mask=None, check_limits: bool = True):
    """Integer attention on int8 ``(..., Nq, D)``, ``(..., Nk, D)``, ``(..., Nk, Dv)`` up to its
    last integers: ``(acc, l)`` of :func:`row_sums`, int64 ``(..., Nq, Dv)`` and ``(..., Nq, 1)``."""
    L = integer_logits(q8, k8, bias_int, mask)
    v64 = v8.astype(np.int64)
    batch = np.broadcast_shapes(L.shape[:-2], v64.shape[:-2])
    L = np.broadcast_to(L, batch + L.shape[-2:])
    acc_shape = batch + (L.shape[-2], v64.shape[-1])
    return row_sums(*online_softmax(recipe, L, plan, lambda P, j0, j1: P @ v64[..., j0:j1, :], acc_shape,
                                    check_limits))


def output_integers(recipe, acc, l, plan: AttentionPlan, int8_out=False):
    """The integer output of the pair: at ``recipe.out_frac_bits`` fractional bits of V's scale,
    or int8 values when ``int8_out``."""
    if int8_out:
        return requantize_int8(normalize(acc, l, NORM_FRAC), plan)
    return normalize(acc, l, recipe.out_frac_bits)


def dequantize_pair(acc, l, s_v, per_channel: bool = False):
    """A float output straight from the pair, ``acc * s_v / l``, in the kernel's float32 steps:
    ``w = f32(s_v) / f32(l)`` per row, then ``f32(acc) * w`` (V per channel: ``(f32(acc) * (1 /
    f32(l))) * s_c``), each an IEEE float32 operation rounded to nearest, so within ``2**-22``
    (three roundings; four per channel) of the exact value. ``f32(l)`` is exact (``l < 2**24``).
    0 where ``l = 0``. Returned as float64 (exactly)."""
    l32 = np.asarray(l).astype(np.float32)
    live = l32 > 0
    num = np.float32(1) if per_channel else np.asarray(s_v, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(live, num / np.where(live, l32, np.float32(1)), np.float32(0)).astype(np.float32)
    out = np.asarray(acc).astype(np.float32) * w
    if per_channel:
        out = out * np.asarray(s_v, np.float32)
    return out.astype(np.float64)


def attention_core(recipe, q8, k8, v8, plan: AttentionPlan, bias_int=None, mask=None, int8_out=False,
                   check_limits: bool = True):
    """Integer attention's output integers (:func:`output_integers` of :func:`attention_sums`)."""
    acc, l = attention_sums(recipe, q8, k8, v8, plan, bias_int, mask, check_limits)
    return output_integers(recipe, acc, l, plan, int8_out)


def softmax_core(recipe, L, plan: AttentionPlan, frac_bits: int, check_limits: bool = True):
    """Integer softmax probabilities of integer logits, ``round(p * 2**frac_bits)``.

    This is the attention pipeline with ``V = I``: each key's weight is its ``P``
    rescaled exactly as an accumulator column would be.
    """

    def scatter(P, j0, j1):
        out = np.zeros(L.shape, dtype=np.int64)
        out[..., j0:j1] = P
        return out

    acc, l = online_softmax(recipe, L, plan, scatter, L.shape, check_limits)
    return normalize(acc, l, frac_bits)
