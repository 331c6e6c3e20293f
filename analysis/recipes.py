"""The recipes the report compares, and the one way it measures them.

The workload table and the robustness sweep show ``Recipe.qflash()``, ``Recipe.per_tensor()``
and one recipe per registered exp strategy (that strategy's defaults, everything else
``per_tensor``'s): the integer softmax on per-tensor INT8 inputs. ``Recipe.default()`` (input
transforms, finer scales) is the transforms study's. A strategy added to the registry appears in the report by itself.
"""
from __future__ import annotations

import numpy as np

from intsoftmax import Recipe, available_strategies, float_attention, sqnr_db
from intsoftmax.strategy import strategy_class


def per_exp_recipes() -> dict[str, Recipe]:
    """``exp kind -> Recipe(exp=<that kind's default>)``, every registered exp strategy."""
    return {kind: Recipe(exp=strategy_class("exp", kind)()) for kind in available_strategies("exp")}


def report_recipes() -> dict[str, Recipe]:
    """qflash, per_tensor (the integer softmax studies run on per-tensor INT8; ``Recipe.default()``
    adds input transforms and finer scales: the transforms study), then one recipe per exp
    strategy, skipping duplicates (``fused_exp2`` with its defaults *is* ``per_tensor``)."""
    out = {"qflash": Recipe.qflash(), "per_tensor": Recipe.per_tensor()}
    for kind, recipe in per_exp_recipes().items():
        if recipe not in out.values():
            out[kind] = recipe
    return out


def sqnr(recipe: Recipe, q, k, v, ref=None, **kwargs) -> float:
    """SQNR (dB) of the golden integer attention against float64 attention (``ref`` if given)."""
    ref = float_attention(q, k, v) if ref is None else ref
    return float(sqnr_db(ref, recipe.attention(q, k, v, **kwargs)))


def int8_ceiling(q, k, v, ref=None, recipe: Recipe | None = None) -> float:
    """SQNR (dB) of float attention on the dequantized INT8 inputs: what quantization alone allows
    (with ``recipe``'s granularities; per-tensor by default)."""
    ref = float_attention(q, k, v) if ref is None else ref
    recipe = Recipe.per_tensor() if recipe is None else recipe
    return float(sqnr_db(ref, recipe.quantized_reference(q, k, v)))


def pooled_sqnr(pairs) -> float:
    """One SQNR over several (reference, test) pairs: signal and noise summed over all of them."""
    refs, tests = zip(*pairs)
    return float(sqnr_db(np.concatenate([np.ravel(r) for r in refs]), np.concatenate([np.ravel(t) for t in tests])))
