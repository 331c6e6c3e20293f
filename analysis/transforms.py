"""Study 8: exact input transforms (key offset, value offset, Q/K channel balance) against the
INT8 ceilings, alone and combined (issue 11, ``docs/algorithms.md`` section 11).

Inputs: A2's shape (1 x 6 heads x 197 tokens x 64) from four distributions: U[-4, 4], N(0, 2^2),
the channel-outlier draw of :mod:`intsoftmax.workloads`, and N(0, 1) plus per-channel key and
value offsets U[-5, 5] (one vector per head, as a linear projection with a bias gives).
Each row is ``Recipe.per_tensor()`` with the named transforms, ``Recipe.default()`` (all three, Q per
token, K and V per head), and all three with per-token Q and per-channel V; two ceilings per distribution:
float attention on the dequantized per-tensor INT8 inputs, without and with all three transforms.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from intsoftmax import ChannelBalance, KeyOffset, PerChannel, PerToken, Recipe, ValueOffset, float_attention
from intsoftmax.transforms import apply_all
from intsoftmax.workloads import qkv

from .progress import quiet
from .recipes import pooled_sqnr

SEED = 0
OFFSET = 5.0
TRANSFORMS = {"none": (), "key offset": (KeyOffset(),), "value offset": (ValueOffset(),),
              "channel balance": (ChannelBalance(),), "all three": (KeyOffset(), ChannelBalance(), ValueOffset())}
#: The rows: the per-tensor recipe with each transform set, and with all three plus finer Q and V scales.
SCALED = "all three, Q per token, V per channel"
DEFAULT = "Recipe.default()"
RECIPES = {**{label: Recipe.per_tensor().replace(transforms=t) for label, t in TRANSFORMS.items()},
           DEFAULT: Recipe.default(),
           SCALED: Recipe.per_tensor().replace(transforms=TRANSFORMS["all three"], q_granularity=PerToken(),
                                            v_granularity=PerChannel())}
DISTRIBUTIONS = ("U[-4, 4]", "N(0, 2^2)", "channel outliers", "key/value offsets")


def make_inputs(distribution: str, seed: int = SEED):
    if distribution == "key/value offsets":
        q, k, v = qkv("A2", "gaussian", seed=seed, amplitude=1.0)
        rng = np.random.default_rng(1000 + seed)
        return q, k + rng.uniform(-OFFSET, OFFSET, (1, 6, 1, 64)), v + rng.uniform(-OFFSET, OFFSET, (1, 6, 1, 64))
    name = {"U[-4, 4]": "uniform", "N(0, 2^2)": "gaussian", "channel outliers": "outlier"}[distribution]
    return qkv("A2", name, seed=seed)


@dataclasses.dataclass(frozen=True)
class TransformStudy:
    sqnr: dict  # (distribution, transforms label) -> dB
    ceiling: dict  # distribution -> dB, per-tensor INT8 inputs
    ceiling_transformed: dict  # distribution -> dB, INT8 inputs after all three transforms
    seeds: tuple


def compute(quick: bool = False, progress=quiet) -> TransformStudy:
    """Every (distribution, transforms) cell, pooled over 1 (quick) or 4 (full) seeds."""
    seeds = (SEED,) if quick else tuple(range(SEED, SEED + 4))
    sqnr, ceiling, ceiling_t = {}, {}, {}
    base = Recipe.per_tensor()
    with progress("transforms", len(DISTRIBUTIONS)) as p:
        for dist in DISTRIBUTIONS:
            data = [make_inputs(dist, s) for s in seeds]
            refs = [float_attention(*x) for x in data]
            for label, recipe in RECIPES.items():
                sqnr[dist, label] = pooled_sqnr([(ref, recipe.attention(*x)) for ref, x in zip(refs, data)])
            ceiling[dist] = pooled_sqnr([(ref, base.quantized_reference(*x)) for ref, x in zip(refs, data)])
            pairs = []
            for ref, x in zip(refs, data):
                q, k, v, offset = apply_all(TRANSFORMS["all three"], *x)
                pairs.append((ref, base.quantized_reference(q, k, v) + offset))
            ceiling_t[dist] = pooled_sqnr(pairs)
            p.step()
    return TransformStudy(sqnr, ceiling, ceiling_t, seeds)


def markdown(study: TransformStudy) -> str:
    head = ("| inputs | " + " | ".join(RECIPES) + " | INT8 ceiling | ceiling after all three |\n|---|"
            + "---:|" * (len(RECIPES) + 2))
    rows = [head]
    for dist in DISTRIBUTIONS:
        cells = " | ".join(f"{study.sqnr[dist, label]:.2f}" for label in RECIPES)
        rows.append(f"| {dist} | {cells} | {study.ceiling[dist]:.2f} | {study.ceiling_transformed[dist]:.2f} |")
    gains = {d: study.sqnr[d, "all three"] - study.sqnr[d, "none"] for d in DISTRIBUTIONS}
    gaps = [study.ceiling_transformed[d] - study.sqnr[d, "all three"] for d in DISTRIBUTIONS]
    summary = ("All three transforms against none: " + ", ".join(f"{d} {g:+.2f} dB" for d, g in gains.items())
               + f". With them the recipe stays within {max(gaps):.2f} dB of the transformed ceiling. The key "
               "offset and the channel balance act on the logits, the value offset on the output; a channel "
               "that is loud in both q and k (the outlier draw) is out of every per-channel balance's reach. "
               + "".join(f"{label}, against the per-tensor INT8 ceiling: "
                         + ", ".join(f"{d} {study.sqnr[d, label] - study.ceiling[d]:+.2f} dB" for d in DISTRIBUTIONS)
                         + ". " for label in (DEFAULT, SCALED))
               + f"(`{DEFAULT}` is the three transforms with Q per token and K, V per head, whose thresholds "
               "tests/test_transforms.py checks.)\n\n")
    return (summary + f"SQNR in dB, `Recipe.per_tensor()` with the named changes, pooled over seeds "
            f"{', '.join(map(str, study.seeds))}:\n\n" + "\n".join(rows))
