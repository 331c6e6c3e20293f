"""Study 3: SQNR against sequence length for each accumulation rule, and where naive
accumulation overflows.

Data: ``heads`` independent heads of U[-4, 4] inputs, head dim 64, ``queries`` query rows
and N keys; the keys of a shorter N are a prefix of the longest N's keys, so the sweep
follows one sequence as it grows. Every rule uses ``Recipe.per_tensor()`` otherwise. Naive
accumulation runs with ``check_limits=False``, so the golden model computes until it
raises :class:`~intsoftmax.IntegerOverflowError`; the first N that overflows on this data
is found by bisection over those prefixes.

The worst case is the staircase of ``tests/test_accumulation.py``: every key tile raises
the row max, every key sits at it (``P = P_max``) and ``V = -128``. Its first overflowing
length is searched for independently and compared with ``Recipe.max_seq_len()``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from intsoftmax import (IntegerOverflowError, LazyRescale, NaiveScaleAccumulation, Recipe, ScaleRelease, TwoPass,
                        float_attention)
from intsoftmax.golden import attention_core
from intsoftmax.workloads import sample

from .progress import quiet
from .recipes import int8_ceiling, pooled_sqnr

SEED = 0
HEAD_DIM = 64
N_FULL = (49, 64, 96, 128, 160, 192, 197, 256, 320, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
N_QUICK = (49, 64, 197, 256, 1024, 4096)


def rules() -> dict[str, Recipe]:
    """label -> ``Recipe.per_tensor()`` with that accumulation rule."""
    base = Recipe.per_tensor()
    return {
        "scale release": base.replace(accumulation=ScaleRelease()),
        "two-pass": base.replace(accumulation=TwoPass()),
        "lazy rescale (1 octave)": base.replace(accumulation=LazyRescale(headroom_octaves=1)),
        "naive, 64-bit": base.replace(accumulation=NaiveScaleAccumulation(acc_bits=64)),
        "naive, 32-bit": base.replace(accumulation=NaiveScaleAccumulation(acc_bits=32)),
    }


def is_naive(recipe: Recipe) -> bool:
    return isinstance(recipe.accumulation, NaiveScaleAccumulation)


def staircase(recipe: Recipe, n: int, rising: bool = True) -> np.ndarray:
    """The golden model on the worst case for ``n`` keys (one query row); raises
    :class:`IntegerOverflowError` where a value leaves its width.

    Every key tile raises the row max by one QK unit (``rising``; otherwise all keys are
    equal), every key of a tile sits at that max, and ``V = -128``, so ``|acc| = 128 l``.
    The QK unit (``1e-12`` nats) is far below the exp's resolution, so each rescale factor is
    exactly the integer for 1.0. Naive accumulation is checked against its own width;
    the rescaling rules against int32.
    """
    tile = np.arange(n) // recipe.block_n if rising else np.zeros(n, np.int64)
    q8 = np.ones((1, 1, 1, 1), np.int8)
    k8 = tile.astype(np.int8).reshape(1, 1, n, 1)
    v8 = np.full((1, 1, n, 1), -128, np.int8)
    plan = recipe.plan(np.float32(1e-6), np.float32(1e-6), 1.0)
    return attention_core(recipe, q8, k8, v8, plan, check_limits=not is_naive(recipe))


def _first_true(pred, lo: int, hi: int) -> int:
    """Smallest n in (lo, hi] with pred(n), given not pred(lo) and pred(hi) (monotone pred)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _overflows(fn) -> bool:
    try:
        fn()
    except IntegerOverflowError:
        return True
    return False


def worst_case_overflow(recipe: Recipe) -> int:
    """Smallest key count at which the worst-case input overflows, found by search (it does not
    consult ``max_seq_len``). Rising staircase for naive accumulation (its worst case: every
    tile rescales), all keys equal for the rescaling rules (their bound is attained there).
    The staircase's keys count tiles in int8, which bounds the search at 127 tiles."""
    rising = is_naive(recipe)
    hi = 1
    while not _overflows(lambda: staircase(recipe, hi, rising)):
        if hi >= 127 * recipe.block_n and rising:
            raise ValueError(f"{recipe.accumulation.name}: no overflow within 127 tiles; the staircase "
                             "cannot go further (its keys count tiles in int8)")
        hi *= 2
    return _first_true(lambda n: _overflows(lambda: staircase(recipe, n, rising)), hi // 2 if hi > 1 else 0, hi)


@dataclasses.dataclass(frozen=True)
class RuleCurve:
    label: str
    recipe: Recipe
    sqnr: dict  # N -> dB, only the N that ran without overflow
    stated_limit: int  # Recipe.max_seq_len()
    worst_case_overflow: int  # first N at which the worst-case input overflows
    data_overflow: int | None  # first N at which this data overflows (None: not within the sweep)


@dataclasses.dataclass(frozen=True)
class AccumulationStudy:
    lengths: tuple[int, ...]
    heads: int
    queries: int
    seed: int
    curves: list[RuleCurve]
    ceiling: dict  # N -> INT8 ceiling (dB)


def make_data(n_max: int, heads: int, queries: int, seed: int = SEED):
    """Q (1, heads, queries, 64), K and V (1, heads, n_max, 64), U[-4, 4]."""
    rng = np.random.default_rng(seed)
    q = sample((1, heads, queries, HEAD_DIM), "uniform", rng)
    k = sample((1, heads, n_max, HEAD_DIM), "uniform", rng)
    v = sample((1, heads, n_max, HEAD_DIM), "uniform", rng)
    return q, k, v


def compute(quick: bool = False, progress=quiet, lengths=None) -> AccumulationStudy:
    """Quick: 6 lengths, 2 heads x 32 queries; full: 17 lengths, 8 heads x 256 queries."""
    lengths = tuple(lengths or (N_QUICK if quick else N_FULL))
    heads, queries = (2, 32) if quick else (8, 256)
    q, k, v = make_data(max(lengths), heads, queries)
    recipes = rules()
    refs = {n: float_attention(q, k[..., :n, :], v[..., :n, :]) for n in lengths}
    ceiling = {n: int8_ceiling(q, k[..., :n, :], v[..., :n, :], refs[n]) for n in lengths}
    curves = []
    with progress("accumulation", len(recipes) * len(lengths)) as p:
        for label, recipe in recipes.items():
            naive = is_naive(recipe)

            def run(n, recipe=recipe, naive=naive):
                return recipe.attention(q, k[..., :n, :], v[..., :n, :], check_limits=not naive)

            points, first_bad = {}, None
            for n in lengths:
                if first_bad is None:
                    try:
                        points[n] = pooled_sqnr([(refs[n], run(n))])
                    except IntegerOverflowError:
                        first_bad = n
                p.step()
            data_overflow = None
            if first_bad is not None:
                last_ok = max((n for n in points), default=0)
                data_overflow = _first_true(lambda n, run=run: _overflows(lambda: run(n)), last_ok, first_bad)
            curves.append(RuleCurve(label, recipe, points, recipe.max_seq_len(), worst_case_overflow(recipe),
                                    data_overflow))
    return AccumulationStudy(lengths, heads, queries, SEED, curves, ceiling)


def markdown(study: AccumulationStudy) -> str:
    head = ["N", *(c.label for c in study.curves), "INT8 ceiling"]
    lines = ["| " + " | ".join(head) + " |", "|---:|" + "---:|" * (len(head) - 1)]
    for n in study.lengths:
        cells = [f"{c.sqnr[n]:.2f}" if n in c.sqnr else "overflow" for c in study.curves]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {study.ceiling[n]:.2f} |")
    limits = ["| rule | stated limit `Recipe.max_seq_len()` | worst-case input first overflows at N | "
              "this data first overflows at N |", "|---|---:|---:|---:|"]
    for c in study.curves:
        data = "-" if c.data_overflow is None else str(c.data_overflow)
        limits.append(f"| {c.label} | {c.stated_limit} | {c.worst_case_overflow} | {data} |")
    notes = []
    release = next((c for c in study.curves if isinstance(c.recipe.accumulation, ScaleRelease)), None)
    for c in study.curves:
        if not is_naive(c.recipe) or c.data_overflow is None:
            continue
        note = (f"`{c.label}` overflows at N = {c.data_overflow} on this data (worst case: {c.worst_case_overflow}, "
                f"stated limit {c.stated_limit})")
        if release is not None and c.sqnr:
            drops = {n: release.sqnr[n] - c.sqnr[n] for n in c.sqnr if n in release.sqnr}
            n_worst = max(drops, key=drops.get)
            if drops[n_worst] > 1.0:
                note += (f"; before that its precision already collapses: {c.sqnr[n_worst]:.1f} dB at N = {n_worst}, "
                         f"{drops[n_worst]:.1f} dB below scale release (its sums grow by a factor `one` per rescale, "
                         "and the normalization's reciprocal `2**54 // l` loses its bits as `l` nears `2**54`)")
        notes.append(note + ".")
    rescaling = [c for c in study.curves if not is_naive(c.recipe)]
    longest = max(study.lengths)
    gaps = ", ".join(f"`{c.label}` {study.ceiling[longest] - c.sqnr[longest]:.2f} dB" for c in rescaling
                     if longest in c.sqnr)
    notes.append(f"The rescaling rules never overflow up to N = {longest} (limit {rescaling[0].stated_limit}); "
                 f"below the INT8 ceiling at N = {longest}: {gaps}.")
    return ("\n".join(f"- {n}" for n in notes) + "\n\n"
            + f"SQNR in dB; {study.heads} heads x {study.queries} queries x N keys, head dim {HEAD_DIM}, "
            f"U[-4, 4], seed {study.seed}:\n\n" + "\n".join(lines)
            + "\n\nOverflow points (\"-\": no overflow up to the longest N swept):\n\n" + "\n".join(limits))
