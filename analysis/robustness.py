"""Study 5: SQNR against input amplitude, 2**-4 .. 2**7, for every recipe.

A2 (1 x 6 x 197 x 64), U[-a, a] for Q, K and V, seed 0, with the INT8 ceiling beside the
recipes. The logits scale like ``a**2``: small amplitudes give nearly uniform attention,
large ones nearly one-hot attention. QFlash's raw-unit exp derives its constants from the
scale and loses its range reduction at small amplitudes (docs/algorithms.md §9); the
prescaled strategies should not depend on ``a`` at all.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from intsoftmax import float_attention
from intsoftmax.workloads import qkv

from .progress import quiet
from .recipes import int8_ceiling, report_recipes, sqnr

SEED = 0
WORKLOAD = "A2"
DISTRIBUTION = "uniform"
CEILING = "INT8 ceiling"


def amplitudes(quick: bool) -> tuple[float, ...]:
    """2**-4 .. 2**7: whole octaves (quick) or half octaves (full)."""
    step = 1.0 if quick else 0.5
    return tuple(float(2.0**e) for e in np.arange(-4.0, 7.0 + step / 2, step))


@dataclasses.dataclass(frozen=True)
class RobustnessStudy:
    amplitudes: tuple[float, ...]
    labels: tuple[str, ...]
    sqnr: dict  # (label, amplitude) -> dB; label CEILING for the INT8 ceiling
    seed: int

    def curve(self, label: str) -> list[float]:
        return [self.sqnr[(label, a)] for a in self.amplitudes]


def compute(quick: bool = False, progress=quiet, recipes=None) -> RobustnessStudy:
    recipes = report_recipes() if recipes is None else recipes
    amps = amplitudes(quick)
    cells = {}
    with progress("robustness", len(amps)) as p:
        for a in amps:
            q, k, v = qkv(WORKLOAD, DISTRIBUTION, seed=SEED, amplitude=a)
            ref = float_attention(q, k, v)
            for label, recipe in recipes.items():
                cells[(label, a)] = sqnr(recipe, q, k, v, ref)
            cells[(CEILING, a)] = int8_ceiling(q, k, v, ref)
            p.step()
    return RobustnessStudy(amps, tuple(recipes), cells, SEED)


def markdown(study: RobustnessStudy) -> str:
    head = ["amplitude", *study.labels, CEILING]
    lines = ["| " + " | ".join(head) + " |", "|---:|" + "---:|" * (len(head) - 1)]
    for a in study.amplitudes:
        e = np.log2(a)
        name = f"2^{e:g}"
        lines.append(f"| {name} | " + " | ".join(f"{study.sqnr[(lab, a)]:.2f}" for lab in (*study.labels, CEILING))
                     + " |")
    worst = {lab: min(study.curve(lab)) for lab in study.labels}
    summary = ", ".join(f"`{lab}` {worst[lab]:.1f} dB" for lab in study.labels)
    return (f"SQNR in dB on {WORKLOAD}, U[-a, a], seed {study.seed}. Worst case over the sweep: {summary}.\n\n"
            + "\n".join(lines))
