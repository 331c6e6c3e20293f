"""Choosing a recipe: the cheapest one in a small catalog that meets an SQNR target.

The catalog (:func:`catalog`) is every integer exp strategy worth comparing, crossed
with three P widths and three accumulation rules, plus the QFlash paper's recipe::

    exp:          shift_linear, shiftmax, ibert, poly2, poly3, poly4, lut6 (interpolated),
                  lut6-mid (midpoint table), qflash_exp2, fused2, fused3 (exp2 fused with the
                  requantization)
    p_bits:       7 (one int8 MMA), 8 (one MMA plus a column-sum correction), 11 (two MMAs)
    accumulation: release (ScaleRelease), lazy1 (LazyRescale(1)), two-pass (TwoPass)

Everything else is the default recipe's (per-tensor INT8, ``block_n = 64``,
``out_frac_bits = 8``). 100 recipes; evaluating all of them on one workload takes a
couple of seconds on a CPU.

*Cost* is the integer operations per score element, ``Recipe.op_count().total`` (the
shared pipeline plus the exp strategy). It does not see the P width or the
accumulation rule, so ties are broken by them: fewer P bits first (fewer MMAs per
tile), then one pass over the keys before two (``TwoPass`` reads K twice), then
higher SQNR.

*Accuracy* is the SQNR in dB (:func:`intsoftmax.sqnr_db`) of the golden integer model
(:meth:`Recipe.attention`) against float64 attention (:func:`intsoftmax.float_attention`)
on one draw of the named workload and input distribution
(:func:`intsoftmax.workloads.qkv`, fixed seed): deterministic, and exactly what
``python -m analysis`` reports for the same recipe and data.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import numpy as np

from .accumulation import AccumulationRule, LazyRescale, ScaleRelease, TwoPass
from .metrics import float_attention, sqnr_db
from .recipe import Recipe
from .strategy import strategy_classes
from .workloads import DISTRIBUTIONS, WORKLOADS, qkv



def catalog_exps() -> dict:
    """The integer exp strategies of the catalog, by short label: every registered exp strategy's
    own ``catalog`` entries (:attr:`intsoftmax.ExpStrategy.catalog`), in registration order."""
    return {label: cls(**fields) for cls in strategy_classes("exp") if cls.integer_only
            for label, fields in cls.catalog.items()}

#: P widths of the catalog: one int8 MMA, one uint8 MMA, two int8 MMAs.
CATALOG_P_BITS = (7, 8, 11)
#: Accumulation rules of the catalog, by short label.
CATALOG_RULES = {"release": ScaleRelease(), "lazy1": LazyRescale(headroom_octaves=1), "two-pass": TwoPass()}
#: The QFlash paper's recipe (32-key tiles, int8-grid output) joins the catalog under this label.
PAPER_LABEL = "qflash (paper)"


def catalog() -> dict[str, Recipe]:
    """The candidate recipes of :func:`select`, label -> Recipe (see the module docstring)."""
    out = {f"{e}, P{p}, {r}": Recipe(exp=exp, accumulation=rule, p_bits=p)
           for e, exp in catalog_exps().items() for p in CATALOG_P_BITS for r, rule in CATALOG_RULES.items()}
    out[PAPER_LABEL] = Recipe.qflash()
    return out


def passes(rule: AccumulationRule) -> int:
    """Passes over the keys: 2 for a rule that finds the row max first, else 1."""
    return 2 if rule.two_pass else 1


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One recipe measured on one workload: its label, cost and SQNR."""

    label: str
    recipe: Recipe
    sqnr_db: float
    ops: int  # integer ops per score element, Recipe.op_count().total

    @property
    def cost_key(self) -> tuple:
        """Ordering by cost: ops, then P width, then passes over the keys, then higher SQNR."""
        return (self.ops, self.recipe.p_bits, passes(self.recipe.accumulation), -self.sqnr_db, self.label)


def _check_workload(workload, distribution) -> None:
    if workload not in WORKLOADS:
        raise ValueError(f"workload={workload!r}: unknown; choose one of {sorted(WORKLOADS)}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution={distribution!r}: unknown; choose one of {list(DISTRIBUTIONS)}")
    # seed is checked by numpy's default_rng


def _check_amplitude(amplitude) -> None:
    if amplitude is None:
        return
    if isinstance(amplitude, bool) or not isinstance(amplitude, (int, float)):
        raise TypeError(f"amplitude must be a positive number or None, got {amplitude!r}")
    if not 0 < amplitude < math.inf:
        raise ValueError(f"amplitude={amplitude!r}: must be finite and positive (e.g. 4.0 for U[-4, 4])")


def _as_mapping(candidates) -> dict[str, Recipe]:
    if candidates is None:
        return catalog()
    if isinstance(candidates, Mapping):
        items = dict(candidates)
    elif isinstance(candidates, Iterable) and not isinstance(candidates, (str, bytes)):
        items = {}
        for r in candidates:
            items[getattr(r, "name", repr(r))] = r
    else:
        raise TypeError(f"candidates must be a mapping label -> Recipe or an iterable of Recipes, "
                        f"got {type(candidates).__name__}")
    for label, r in items.items():
        if not isinstance(r, Recipe):
            raise TypeError(f"candidate {label!r} is a {type(r).__name__}, not an intsoftmax.Recipe")
    if not items:
        raise ValueError("candidates is empty: pass at least one Recipe (or None for the built-in catalog)")
    return items


def _samples(samples) -> tuple:
    """The user's ``(q, k, v)`` as float64 arrays (NumPy arrays or torch tensors, (..., N, D))."""
    if not isinstance(samples, (tuple, list)) or len(samples) != 3:
        raise TypeError(f"samples must be a tuple (q, k, v) of float arrays, got {type(samples).__name__}")
    out = []
    for name, x in zip("qkv", samples):
        if hasattr(x, "detach"):  # a torch tensor, without importing torch
            x = x.detach().float().cpu().numpy()
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating) or x.ndim < 2 or x.size == 0:
            raise ValueError(f"samples: {name} must be a non-empty float array (..., N, D), got dtype {x.dtype}, "
                             f"shape {x.shape}")
        out.append(x.astype(np.float64))
    return tuple(out)


def _triples(samples) -> list[tuple]:
    """The user's data as a list of ``(q, k, v)``: one triple, a list of triples (say one per
    layer), or a model whose attention modules hold the triples they saw (``module.samples``, as
    ``qflash.calibrate(model, batches, samples=n)`` leaves them; any object with ``modules()``)."""
    if hasattr(samples, "modules"):
        found = [m.samples for m in samples.modules() if getattr(m, "samples", None) is not None]
        if not found:
            raise ValueError("the model holds no captured (q, k, v): calibrate it with "
                             "qflash.calibrate(model, batches, samples=8) first, or pass samples=(q, k, v)")
        return [_samples(t) for t in found]
    if isinstance(samples, list) and samples and isinstance(samples[0], (tuple, list)):
        return [_samples(t) for t in samples]
    return [_samples(samples)]


def _data(workload, distribution, seed, amplitude, samples) -> tuple:
    """``(triples, where)``: the user's samples (one or several ``(q, k, v)``), or one draw of the
    named workload."""
    if samples is not None:
        triples = _triples(samples)
        q, k = triples[0][:2]
        where = (f"your samples (q {q.shape}, k {k.shape})" if len(triples) == 1 else
                 f"your samples ({len(triples)} attention inputs, pooled)")
        return triples, where
    _check_workload(workload, distribution)
    _check_amplitude(amplitude)
    where = f"{workload}/{distribution}" + ("" if amplitude is None else f" at amplitude {amplitude:g}") + \
        f" (seed {seed})"
    return [qkv(workload, distribution, seed=seed, amplitude=amplitude)], where


def _pooled(triples, run) -> float:
    """SQNR of ``run(q, k, v)`` against float attention, pooled over the triples (total signal over
    total noise)."""
    ref = np.concatenate([float_attention(*t).reshape(-1) for t in triples])
    return float(sqnr_db(ref, np.concatenate([np.asarray(run(*t)).reshape(-1) for t in triples])))


def evaluate(candidates=None, workload: str = "A2", distribution: str = "uniform", seed: int = 0,
             amplitude: float | None = None, samples=None) -> list[Candidate]:
    """SQNR and cost of every candidate (default: :func:`catalog`) on one draw of ``workload``
    (``amplitude``: the distribution's scale, see :func:`intsoftmax.workloads.sample`), or on
    ``samples``, activations of the user's own model (one ``(q, k, v)``, a list of them, or a
    model holding them: see :func:`select`).

    Candidates whose :meth:`Recipe.max_seq_len` is below the sequence length are left out
    (they cannot run it). Returns them in catalog order.
    """
    triples, _ = _data(workload, distribution, seed, amplitude, samples)
    recipes = _as_mapping(candidates)
    n = max(t[1].shape[-2] for t in triples)
    return [Candidate(label, r, _pooled(triples, r.attention), r.op_count().total)
            for label, r in recipes.items() if r.max_seq_len() >= n]


def pareto_front(candidates: Iterable[Candidate]) -> list[Candidate]:
    """The candidates no other beats on both cost (ops) and SQNR, cheapest first.

    A candidate is on the front when every cheaper-or-equal one has a lower SQNR; among
    equal ops only the most accurate can be on it.
    """
    front, best = [], -math.inf
    for c in sorted(candidates, key=lambda c: (c.ops, -c.sqnr_db, c.cost_key)):
        if c.sqnr_db > best:
            front.append(c)
            best = c.sqnr_db
    return front


@dataclasses.dataclass(frozen=True)
class Selection:
    """What :func:`select` chose: the recipe, its measured SQNR and cost, and why."""

    recipe: Recipe
    label: str
    sqnr_db: float
    ops_per_element: int
    target_sqnr_db: float
    workload: str
    distribution: str
    explanation: str

    def __str__(self) -> str:
        return self.explanation


def select(target_sqnr_db: float, workload: str = "A2", distribution: str = "uniform", *, seed: int = 0,
           amplitude: float | None = None, candidates=None, samples=None, model=None) -> Selection:
    """The cheapest recipe whose SQNR on ``workload``/``distribution`` is at least ``target_sqnr_db``.

    target_sqnr_db: required SQNR in dB against float64 attention.
    workload: one of ``intsoftmax.workloads.WORKLOADS`` (A1-A7).
    distribution: ``"uniform"`` (U[-4, 4]), ``"gaussian"`` (sigma 2) or ``"outlier"``.
    seed: the draw of Q, K, V (deterministic).
    amplitude: the distribution's scale (default: U[-4, 4], sigma 2, outlier base sigma 1);
    the cheapest recipe at one amplitude can fail at another (QFlash's exp at small ones).
    candidates: recipes to choose from, a mapping label -> Recipe or an iterable of
    Recipes; default: the built-in :func:`catalog` (100 recipes).
    samples: ``(q, k, v)`` captured from your own model (NumPy arrays or torch tensors,
    (..., N, D)), or a list of such triples (SQNR pooled over them): measure on them instead of
    a synthetic workload.
    model: a model calibrated with ``qflash.calibrate(model, batches, samples=n)``: measure on the
    ``(q, k, v)`` each of its attention modules saw during calibration, pooled (without the
    modules' masks or biases).

    "Cheapest" means the fewest integer ops per score element
    (``Recipe.op_count().total``); ties go to fewer P bits, then to one pass over the
    keys, then to the higher SQNR. SQNR is measured by the golden model on one fixed-seed
    draw of the workload (see the module docstring), so it describes that data, not a
    guarantee: leave a margin, or select on the distribution your model sees.

    Raises ``ValueError`` when no candidate reaches the target (the message names the
    best one and the INT8 ceiling), ``TypeError``/``ValueError`` for invalid arguments.
    """
    _check_target(target_sqnr_db)
    if model is not None:
        if samples is not None:
            raise ValueError("pass samples or model, not both")
        samples = model
    results = evaluate(candidates, workload, distribution, seed, amplitude, samples)
    return choose(results, target_sqnr_db, workload, distribution, seed, amplitude, samples)


def _check_target(target_sqnr_db) -> None:
    if isinstance(target_sqnr_db, bool) or not isinstance(target_sqnr_db, (int, float)):
        raise TypeError(f"target_sqnr_db must be a number of dB, got {target_sqnr_db!r}")
    if not math.isfinite(target_sqnr_db):
        raise ValueError(f"target_sqnr_db={target_sqnr_db!r}: must be finite (e.g. 30.0 dB)")


def choose(results: list[Candidate], target_sqnr_db: float, workload: str, distribution: str,
           seed: int = 0, amplitude: float | None = None, samples=None) -> Selection:
    """:func:`select`'s decision on already evaluated candidates (from :func:`evaluate` with the
    same data), so one evaluation can answer several targets."""
    _check_target(target_sqnr_db)
    triples, where = _data(workload, distribution, seed, amplitude, samples)
    if not results:
        raise ValueError(f"no candidate supports the {max(t[1].shape[-2] for t in triples)} keys of {where}; "
                         "use recipes with a larger max_seq_len()")
    meeting = sorted((c for c in results if c.sqnr_db >= target_sqnr_db), key=lambda c: c.cost_key)
    if not meeting:
        best = max(results, key=lambda c: c.sqnr_db)
        ceiling = _pooled(triples, best.recipe.quantized_reference)
        raise ValueError(f"target_sqnr_db={target_sqnr_db:g}: no recipe of the {len(results)} candidates reaches it "
                         f"on {where}; the best is {best.label!r} at {best.sqnr_db:.2f} dB, and INT8 inputs alone "
                         f"allow {ceiling:.2f} dB. Lower the target or pass other candidates.")
    chosen = meeting[0]
    cheaper = [c for c in results if c.ops < chosen.ops]
    explanation = (f"{chosen.label}: {chosen.ops} integer ops per score element, {chosen.sqnr_db:.2f} dB on {where} "
                   f"(target {target_sqnr_db:g} dB); the cheapest of the {len(meeting)} of {len(results)} candidates "
                   "that meet the target")
    if cheaper:
        best_cheaper = max(cheaper, key=lambda c: c.sqnr_db)
        explanation += (f"; every cheaper recipe falls short (best: {best_cheaper.label!r}, {best_cheaper.ops} ops, "
                        f"{best_cheaper.sqnr_db:.2f} dB)")
    if samples is not None:
        workload, distribution = "samples", "yours"
    return Selection(chosen.recipe, chosen.label, chosen.sqnr_db, chosen.ops, float(target_sqnr_db), workload,
                     distribution, explanation + ".")
