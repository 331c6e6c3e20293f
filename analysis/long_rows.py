"""Study: SQNR against the key count N at LLM head dim, the integer recipes against
INT-FlashAttention's design (issue 12).

128 queries against the first N keys of one long sequence (2 heads, D = 128), on U[-4, 4] and
N(0, 1), seed 0. Recipes: ``per_tensor`` (up to its 8196 keys), the fast one, the long-context
one, and ``Recipe.int_flashattention()`` (per-token int8 Q and K, a float32 softmax, 7-bit P),
beside two ceilings: float attention on per-tensor INT8 inputs (the integer recipes'
quantization) and on per-token INT8 Q and K (INT-FlashAttention's).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from intsoftmax import Recipe, float_attention

from .progress import quiet
from .recipes import int8_ceiling, sqnr

SEED = 0
QUERIES, HEADS, HEAD_DIM = 128, 2, 128
DISTRIBUTIONS = {"U[-4, 4]": lambda rng, shape: rng.uniform(-4, 4, shape),
                 "N(0, 1)": lambda rng, shape: rng.normal(0, 1, shape)}
RECIPES = {"per_tensor": Recipe.per_tensor(), "fast": Recipe.fast(), "long_context": Recipe.long_context(),
           "int_flashattention": Recipe.int_flashattention()}
CEILINGS = {"INT8 ceiling (per tensor)": Recipe.per_tensor(), "INT8 ceiling (per-token Q, K)": Recipe.int_flashattention()}


def key_counts(quick: bool) -> tuple[int, ...]:
    return (256, 2048, 8192) if quick else (256, 1024, 4096, 8192, 32768)


@dataclasses.dataclass(frozen=True)
class LongRowsStudy:
    keys: tuple[int, ...]
    sqnr: dict  # (distribution, label, N) -> dB, or None where N exceeds the recipe's limit

    def curve(self, distribution: str, label: str) -> list:
        return [self.sqnr[distribution, label, n] for n in self.keys]


def compute(quick: bool = False, progress=quiet) -> LongRowsStudy:
    keys = key_counts(quick)
    cells = {}
    with progress("long_rows", len(DISTRIBUTIONS) * len(keys)) as p:
        for dist, draw in DISTRIBUTIONS.items():
            rng = np.random.default_rng(SEED)
            q = draw(rng, (1, HEADS, QUERIES, HEAD_DIM))
            k_all, v_all = (draw(rng, (1, HEADS, max(keys), HEAD_DIM)) for _ in range(2))
            for n in keys:
                k, v = k_all[..., :n, :], v_all[..., :n, :]
                ref = float_attention(q, k, v)
                for label, recipe in RECIPES.items():
                    cells[dist, label, n] = sqnr(recipe, q, k, v, ref) if n <= recipe.max_seq_len() else None
                for label, recipe in CEILINGS.items():
                    cells[dist, label, n] = int8_ceiling(q, k, v, ref, recipe)
                p.step()
    return LongRowsStudy(keys, cells)


def markdown(study: LongRowsStudy) -> str:
    labels = [*RECIPES, *CEILINGS]
    out = []
    for dist in DISTRIBUTIONS:
        out += [f"**{dist}** (SQNR in dB; — where N exceeds the recipe's key limit)", "",
                "| N | " + " | ".join(labels) + " |", "|---:|" + "---:|" * len(labels)]
        for n in study.keys:
            cells = [study.sqnr[dist, lab, n] for lab in labels]
            out.append(f"| {n} | " + " | ".join("—" if c is None else f"{c:.2f}" for c in cells) + " |")
        out.append("")
    gaps = [study.sqnr[d, "long_context", n] - study.sqnr[d, "int_flashattention", n]
            for d in DISTRIBUTIONS for n in study.keys]
    out.append(f"The long-context integer recipe against INT-FlashAttention's design: {min(gaps):+.2f} to "
               f"{max(gaps):+.2f} dB over these rows.")
    return "\n".join(out)
