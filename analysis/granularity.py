"""Study 4: INT8 scale granularity on inputs whose heads and tokens differ in magnitude.

Inputs: A2's shape (1 x 6 heads x 197 tokens x 64), U[-1, 1] times a per-head gain
``2**-2 .. 2**2`` (evenly spaced in octaves) times a per-token gain ``2**U[-2, 2]``, drawn
independently for Q, K and V: one scale for the whole tensor wastes most of the INT8 range
on the quiet heads and tokens. Every (Q, K, V) combination of per-tensor, per-head,
per-token and per-block scales is tried with ``Recipe.per_tensor()``'s softmax; combinations the Recipe
rejects are listed with its exception text.

Two numbers per combination: the SQNR over all heads (dominated by the loud heads, whose
outputs carry most of the signal) and the mean over heads of each head's SQNR (every head
counts the same, as it does after the output projection of a trained model).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from intsoftmax import PerBlock, PerHead, PerTensor, PerToken, Recipe, float_attention

from .progress import quiet
from .recipes import pooled_sqnr

SEED = 0
SHAPE = (1, 6, 197, 64)
POLICIES = {"per-tensor": PerTensor(), "per-head": PerHead(), "per-token": PerToken(), "per-block(16)": PerBlock(16)}
HEAD_OCTAVES = (-2.0, 2.0)
TOKEN_OCTAVES = 2.0


def make_inputs(seed: int = SEED, shape=SHAPE):
    """Q, K, V whose heads span 2**-2 .. 2**2 and whose tokens vary by 2**U[-2, 2]."""
    rng = np.random.default_rng(seed)
    z, h, n, d = shape
    head_gain = (2.0 ** np.linspace(*HEAD_OCTAVES, h)).reshape(1, h, 1, 1)
    out = []
    for _ in range(3):
        token_gain = 2.0 ** rng.uniform(-TOKEN_OCTAVES, TOKEN_OCTAVES, (z, h, n, 1))
        out.append(rng.uniform(-1, 1, shape) * head_gain * token_gain)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class GranularityRow:
    q: str
    k: str
    v: str
    sqnr: float | None  # Recipe.per_tensor() with these granularities, all heads (None: rejected)
    head_sqnr: float | None  # mean over heads of each head's SQNR
    ceiling: float | None  # INT8 ceiling with these granularities, all heads
    rejected: str | None  # the Recipe's exception text


@dataclasses.dataclass(frozen=True)
class GranularityStudy:
    rows: list[GranularityRow]
    seeds: tuple[int, ...]

    @property
    def accepted(self) -> list[GranularityRow]:
        return [r for r in self.rows if r.rejected is None]

    @property
    def rejected(self) -> list[GranularityRow]:
        return [r for r in self.rows if r.rejected is not None]


def compute(quick: bool = False, progress=quiet) -> GranularityStudy:
    """All 64 (Q, K, V) combinations; SQNR pooled over 1 (quick) or 8 (full) seeds."""
    seeds = (SEED,) if quick else tuple(range(SEED, SEED + 8))  # the loud heads make single draws noisy
    data = [make_inputs(s) for s in seeds]
    refs = [float_attention(*x) for x in data]
    rows = []
    combos = [(a, b, c) for a in POLICIES for b in POLICIES for c in POLICIES]
    with progress("granularity", len(combos)) as p:
        for qn, kn, vn in combos:
            try:
                recipe = Recipe.per_tensor().replace(q_granularity=POLICIES[qn], k_granularity=POLICIES[kn],
                                                  v_granularity=POLICIES[vn])
            except ValueError as err:
                rows.append(GranularityRow(qn, kn, vn, None, None, None, str(err)))
                p.step()
                continue
            outs = [recipe.attention(*x) for x in data]
            got = pooled_sqnr(zip(refs, outs))
            heads = float(np.mean([pooled_sqnr((ref[:, h], out[:, h]) for ref, out in zip(refs, outs))
                                   for h in range(SHAPE[1])]))
            ceiling = pooled_sqnr([(ref, recipe.quantized_reference(*x)) for ref, x in zip(refs, data)])
            rows.append(GranularityRow(qn, kn, vn, got, heads, ceiling, None))
            p.step()
    return GranularityStudy(rows, seeds)


def markdown(study: GranularityStudy) -> str:
    ok = ["| Q | K | V | SQNR, all heads (dB) | mean per-head SQNR (dB) | INT8 ceiling, all heads (dB) |",
          "|---|---|---|---:|---:|---:|"]
    for r in sorted(study.accepted, key=lambda r: -r.sqnr):
        ok.append(f"| {r.q} | {r.k} | {r.v} | {r.sqnr:.2f} | {r.head_sqnr:.2f} | {r.ceiling:.2f} |")
    # the exception text depends only on the first offending field, so group identical reasons
    reasons: dict[str, list[GranularityRow]] = {}
    for r in study.rejected:
        reasons.setdefault(r.rejected, []).append(r)
    bad = ["| combinations (Q / K / V) | reason (the `ValueError` text) |", "|---|---|"]
    for text, rows in reasons.items():
        combos = ", ".join(f"{r.q} / {r.k} / {r.v}" for r in rows)
        bad.append(f"| {combos} | {text} |")
    best = max(study.accepted, key=lambda r: r.sqnr)
    best_heads = max(study.accepted, key=lambda r: r.head_sqnr)
    base = next(r for r in study.accepted if (r.q, r.k, r.v) == ("per-tensor",) * 3)
    summary = (f"Best over all heads: Q {best.q} / K {best.k} / V {best.v}, {best.sqnr - base.sqnr:+.1f} dB against "
               f"all per-tensor; best mean per-head: Q {best_heads.q} / K {best_heads.k} / V {best_heads.v}, "
               f"{best_heads.head_sqnr - base.head_sqnr:+.1f} dB. Every accepted combination stays within "
               f"{max(r.ceiling - r.sqnr for r in study.accepted):.2f} dB of its own INT8 ceiling: the integer "
               "pipeline adds almost nothing to the quantization error.\n\n")
    return (summary + f"Accepted combinations ({len(study.accepted)}), `Recipe.per_tensor()` otherwise, best first; pooled over seeds "
            f"{', '.join(map(str, study.seeds))}:\n\n" + "\n".join(ok)
            + f"\n\nRejected combinations ({len(study.rejected)}): `Recipe` raises `ValueError` when it is built.\n\n"
            + "\n".join(bad))
