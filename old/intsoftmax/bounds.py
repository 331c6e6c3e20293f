"""A priori error bound of a recipe's integer softmax against the exact softmax.

The bound follows the golden model tile by tile, in float64, carrying for every
integer quantity ``x`` (each key's ``P`` as later rescaled, and the running sum
``l``) its exact target ``X`` and a bound ``E >= |x - X|``; ``docs/algorithms.md``
derives each step. With ``w_j = 2**(-(m - L_j) c)`` relative to the reference ``m``:

* a new key: ``X_j = P_max w_j``, ``E_j = eps_1 X_j + h_1`` where ``eps_1`` combines the
  exp strategy's relative bound, the prescale's one-sided floor and the requantization
  multiplier, and ``h_1 = 1/2 + (P_max / one) * (abs_lsb + clamp)``;
* a rescale by ``A = 2**(-delta c)``: ``E <- A E + (X + E) (A eps_2 + a/one) + 1/2``;
* the output: ``|p^_j - p_j| <= (E_j + p_j E_l) / (X_l - E_l) + (1/2 + tiny) 2**-F``,
  capped at 1 (both lie in ``[0, 1]``), where ``p_j = X_j / X_l`` is the exact softmax.

It depends on the logits only through the reference sequence and the ``w_j``,
and it is a worst case: its ``E_l`` grows like ``N / 2`` because every key may round
by half an LSB, which is real (many keys just below ``0.5 / P_max`` all round to 0).
"""
from __future__ import annotations

import numpy as np

from .exp.base import LOG2E, prescale_error_octaves
from .golden import NORM_BITS
from .plan import MASKED_LOGIT, AttentionPlan


def step_constants(recipe, plan: AttentionPlan):
    """Per-row ``(eps_1, h_1, eps_2, a_rel)`` of the derivation (float64 arrays)."""
    exp = recipe.exp
    eb = exp.error_bound(plan.exp.consts)
    one = np.asarray(plan.exp.one, np.float64)
    c = plan.nat_unit * LOG2E
    unit = exp.input_unit_octaves()
    pre = 2.0 ** prescale_error_octaves(exp)  # u * unit <= t * c: the result is never below
    eps_e = (1 + eb.rel) * pre - 1
    # results clamped at u_max: exact value and result both below this (LSBs of one)
    far = np.asarray(plan.exp.u_max, np.float64) * (c if unit is None else unit)
    clamp = one * np.exp2(-far) * (1 + eps_e)
    a_abs = eb.abs_lsb + clamp
    p_max = recipe.p_max
    req = np.asarray(plan.req_M, np.float64) * one / (2.0**plan.req_shift * p_max)
    eps_req = np.abs(req - 1)
    eps_1 = (1 + eps_req) * (1 + eps_e) - 1
    h_1 = 0.5 + p_max / one * (1 + eps_req) * a_abs
    if exp.fuses_requant:  # P straight from the strategy, rounded once (its abs bound has the 1/2)
        ebp = exp.error_bound(plan.exp.consts, top=p_max)
        eps_1 = ebp.rel
        far_p = np.asarray(exp.t_cap(plan.exp.consts["M"], p_max), np.float64) * c
        h_1 = ebp.abs_lsb + p_max * np.exp2(-far_p) * (1 + ebp.rel)
    rho = one / 2.0**recipe.accumulation.release_shift  # rel_M = floor(2**S / one)
    eps_2 = (1 + eps_e) * (1 + rho) - 1
    return eps_1, h_1, eps_2, a_abs / one


def softmax_error_bound(recipe, L, plan: AttentionPlan, frac_bits: int) -> np.ndarray:
    """Per-element bound on ``|p^ - p|`` for integer logits ``L`` (int64, masked = MASKED_LOGIT)."""
    rule = recipe.accumulation
    if not rule.releases_scale:
        raise ValueError(f"{rule.name} keeps no fixed scale; it has no softmax error bound")
    c = np.asarray(plan.nat_unit * LOG2E, np.float64)
    eps_1, h_1, eps_2, a_rel = step_constants(recipe, plan)
    nk = L.shape[-1]
    rows = L.shape[:-1] + (1,)
    X = np.zeros(L.shape)
    E = np.zeros(L.shape)
    Xl = np.zeros(rows)
    El = np.zeros(rows)
    m = L.max(axis=-1, keepdims=True) if rule.two_pass else np.full(rows, MASKED_LOGIT, np.int64)
    for j0 in range(0, nk, recipe.block_n):
        j1 = min(j0 + recipe.block_n, nk)
        Lt = L[..., j0:j1]
        m_new = rule.next_reference(m, Lt.max(axis=-1, keepdims=True), plan.headroom)
        moved = (m_new > m) & (m > MASKED_LOGIT)
        A = np.where(moved, np.exp2(-(m_new - m).astype(np.float64) * c), 1.0)
        grow = A * eps_2 + a_rel

        def rescale(X, E):
            # a quantity that is exactly 0 (a masked key) stays exactly 0
            return X * A, np.where(moved & (X + E > 0), A * E + (X + E) * grow + 0.5, E)

        X[..., :j0], E[..., :j0] = rescale(X[..., :j0], E[..., :j0])
        Xl, El = rescale(Xl, El)
        valid = Lt > MASKED_LOGIT
        Xt = np.where(valid, recipe.p_max * np.exp2(-(m_new - Lt).astype(np.float64) * c), 0.0)
        X[..., j0:j1] = Xt
        E[..., j0:j1] = np.where(valid, eps_1 * Xt + h_1, 0.0)
        Xl, El = Xl + Xt.sum(-1, keepdims=True), El + E[..., j0:j1].sum(-1, keepdims=True)
        m = m_new
    p = np.divide(X, Xl, out=np.zeros_like(X), where=Xl > 0)
    denom = Xl - El
    core = np.divide(E + p * El, denom, out=np.full_like(X, np.inf), where=denom > 0)
    # the rounding, plus the reciprocal's truncation acc 2**F (1/l - r 2**-(NORM_BITS+e)) <= acc 2**F / 2**(NORM_BITS+e),
    # in probability units, with acc <= l and e = min(floor(log2 l), F + 3): below 2**(1-NORM_BITS) + l 2**(-NORM_BITS-3-F)
    norm = 2.0**-frac_bits * 0.5 + 2.0 ** (1 - NORM_BITS) + (Xl + El) * 2.0 ** (-NORM_BITS - 3 - frac_bits)
    return np.where(Xl > 0, np.minimum(core + norm, 1.0), 0.0)
