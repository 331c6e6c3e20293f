"""Study 2: SQNR of each recipe on the workloads A1-A7, for three input distributions.

One draw per (workload, distribution) with a fixed seed, shared by every recipe, so each
cell is exactly ``sqnr_db(float_attention(q, k, v), recipe.attention(q, k, v))`` for
``q, k, v = intsoftmax.workloads.qkv(workload, distribution, seed)``. The INT8 ceiling
is float attention on the dequantized per-tensor INT8 inputs (``Recipe.quantized_reference``):
no integer softmax with per-tensor scales can beat it.
"""
from __future__ import annotations

import dataclasses

from intsoftmax import float_attention
from intsoftmax.workloads import DISTRIBUTIONS, WORKLOADS, qkv

from .progress import quiet
from .recipes import int8_ceiling, report_recipes, sqnr

SEED = 0
CEILING = "INT8 ceiling"


@dataclasses.dataclass(frozen=True)
class WorkloadTable:
    """sqnr[(distribution, workload, label)] in dB; the ceiling has label :data:`CEILING`."""

    labels: tuple[str, ...]
    recipe_names: dict  # label -> Recipe.name
    distributions: tuple[str, ...]
    workloads: tuple[str, ...]
    sqnr: dict
    seed: int

    def row(self, distribution: str, workload: str) -> dict[str, float]:
        return {label: self.sqnr[(distribution, workload, label)] for label in (*self.labels, CEILING)}


def compute(quick: bool = False, progress=quiet, recipes=None, seed: int = SEED) -> WorkloadTable:
    """Every workload, distribution and recipe (default: :func:`analysis.recipes.report_recipes`).

    The full table takes a few seconds, so quick mode computes the same table.
    """
    recipes = report_recipes() if recipes is None else recipes
    cells = {}
    with progress("workload table", len(DISTRIBUTIONS) * len(WORKLOADS)) as p:
        for dist in DISTRIBUTIONS:
            for w in WORKLOADS:
                q, k, v = qkv(w, dist, seed=seed)
                ref = float_attention(q, k, v)
                for label, recipe in recipes.items():
                    cells[(dist, w, label)] = sqnr(recipe, q, k, v, ref)
                cells[(dist, w, CEILING)] = int8_ceiling(q, k, v, ref)
                p.step()
    names = {label: r.name for label, r in recipes.items()}
    return WorkloadTable(tuple(recipes), names, tuple(DISTRIBUTIONS), tuple(WORKLOADS), cells, seed)


def markdown(table: WorkloadTable) -> str:
    legend = "\n".join(f"- `{label}`: `{name}`" for label, name in table.recipe_names.items())
    parts = ["Recipes (columns):\n\n" + legend]
    for dist in table.distributions:
        head = ["workload", *table.labels, CEILING]
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for w in table.workloads:
            z, h, n, d = WORKLOADS[w]
            row = table.row(dist, w)
            best = max(row[label] for label in table.labels)
            cells = [f"**{row[label]:.2f}**" if row[label] == best else f"{row[label]:.2f}" for label in table.labels]
            lines.append(f"| {w} ({z}x{h}x{n}x{d}) | " + " | ".join(cells) + f" | {row[CEILING]:.2f} |")
        gaps = [sum(table.sqnr[(dist, w, CEILING)] - table.sqnr[(dist, w, label)] for w in table.workloads)
                / len(table.workloads) for label in table.labels]
        lines.append("| *mean dB below the ceiling* | " + " | ".join(f"*{g:.2f}*" for g in gaps) + " | |")
        parts.append(f"**{dist}** ({_describe(dist)}), SQNR in dB, seed {table.seed}; best recipe in bold\n\n"
                     + "\n".join(lines))
    return "\n\n".join(parts)


def _describe(distribution: str) -> str:
    return {"uniform": "U[-4, 4], the paper's", "gaussian": "N(0, 2^2)",
            "outlier": "N(0, 1) with 4 of every 64 channels x10"}.get(distribution, distribution)
