"""Study 1: every exp strategy against the exact exp over its whole integer domain.

Each strategy's golden model runs on every native input ``u = 0 .. u_max`` (the same
exhaustive sweep the tests use) and is compared with ``one * 2**(-u * unit)``; its stated
bound ``rel * exact + abs`` is evaluated on the same points. Raw-unit strategies (QFlash's
exp2, the exact reference) take their constants from a scale: the QK unit of per-tensor
INT8 inputs of amplitude ``a`` at head dim 64, ``(a / 127)**2 / 8`` nats.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from intsoftmax import ExpStrategy, QFlashExp2, Recipe, available_strategies
from intsoftmax.exp.base import ErrorBound
from intsoftmax.select import catalog_exps
from intsoftmax.strategy import strategy_class

from .progress import quiet

HEAD_DIM = 64
#: Amplitude of the uniform inputs whose scale the raw strategies are planned for (the paper's).
AMPLITUDE = 4.0
#: QFlash's exp is also shown at this small amplitude, where its range reduction breaks down.
SMALL_AMPLITUDE = 0.5


def nat_unit(amplitude: float, head_dim: int = HEAD_DIM) -> float:
    """Nats per QK unit for per-tensor INT8 Q and K of amplitude ``amplitude``."""
    return (amplitude / 127.0) ** 2 / head_dim**0.5


def strategies() -> dict[str, tuple[ExpStrategy, float | None]]:
    """label -> (strategy, nat_unit or None): every registered kind at its defaults, the
    catalog's variants of :func:`intsoftmax.select`, and QFlash's exp at a small amplitude."""
    out: dict[str, tuple[ExpStrategy, float | None]] = {}
    found = {kind: strategy_class("exp", kind)() for kind in available_strategies("exp")}
    found.update({v.name: v for v in catalog_exps().values()})
    for s in sorted(set(found.values()), key=lambda s: (s.kind, s.name)):
        raw = s.input_unit_octaves() is None
        label = _label(s) + (f", a={AMPLITUDE:g}" if raw else "")
        out[label] = (s, nat_unit(AMPLITUDE) if raw else None)
    small = QFlashExp2()
    out[f"{_label(small)}, a={SMALL_AMPLITUDE:g}"] = (small, nat_unit(SMALL_AMPLITUDE))
    return out


def _label(s: ExpStrategy) -> str:
    """A short label: the kind plus the fields that differ from its defaults."""
    default = type(s)()
    changed = [f"{f.name}={getattr(s, f.name)}" for f in dataclasses.fields(s)
               if getattr(s, f.name) != getattr(default, f.name)]
    return s.kind + (f"({','.join(changed)})" if changed else "")


@dataclasses.dataclass(frozen=True)
class ExpCurve:
    """One strategy swept over its domain (arrays indexed by native input ``u``)."""

    label: str
    strategy: ExpStrategy
    nat_unit: float | None
    unit_octaves: float  # octaves per native input unit
    one: float
    exact: np.ndarray  # one * 2**(-u * unit), float64
    got: np.ndarray  # the golden model's integers
    bound: ErrorBound
    exp_ops: int
    recipe_ops: int  # Recipe(exp=strategy).op_count().total: ops per score element in a recipe

    @property
    def octaves(self) -> np.ndarray:
        return np.arange(self.got.size) * self.unit_octaves

    @property
    def abs_error(self) -> np.ndarray:
        """|golden - exact| in output LSBs."""
        return np.abs(self.got - self.exact)

    @property
    def limit(self) -> np.ndarray:
        """The stated bound at each input: ``rel * exact + abs``."""
        return self.bound.limit(self.exact)

    @property
    def max_abs_error(self) -> float:
        return float(self.abs_error.max())

    @property
    def max_rel_error_first_octave(self) -> float:
        """Largest ``|error| / exact`` over the first octave (``exact >= one / 2``), where the
        outputs carry their full precision; further out the output grid's LSB dominates."""
        keep = self.exact >= self.one / 2
        return float((self.abs_error[keep] / self.exact[keep]).max())

    @property
    def bound_ratio(self) -> float:
        """Worst ``|error| / bound`` over the domain (``<= 1``: the bound holds)."""
        err = self.abs_error
        return float(np.max(np.where(err == 0, 0.0, err / self.limit)))


def sweep(label: str, strategy: ExpStrategy, unit: float | None) -> ExpCurve:
    """Run ``strategy``'s golden model on its whole domain (``unit``: nats per QK unit, raw strategies)."""
    consts = None
    if strategy.input_unit_octaves() is None:
        consts = strategy.plan(np.float64(unit)).consts
        unit_octaves = float(np.asarray(consts["c"]))
    else:
        unit_octaves = strategy.input_unit_octaves()
    u = strategy.domain(consts)
    got = strategy.golden(u, consts).astype(np.float64)
    exact = strategy.exact(u, consts)
    return ExpCurve(label, strategy, unit, unit_octaves, float(np.asarray(strategy.plan_one(consts))), exact, got,
                    strategy.error_bound(consts), strategy.op_count().total, Recipe(exp=strategy).op_count().total)


@dataclasses.dataclass(frozen=True)
class ExpStudy:
    curves: list[ExpCurve]


def compute(quick: bool = False, progress=quiet) -> ExpStudy:
    """Every strategy of :func:`strategies`, swept exhaustively (cheap: quick mode is the same)."""
    todo = strategies()
    curves = []
    with progress("exp strategies", len(todo)) as p:
        for label, (s, unit) in todo.items():
            curves.append(sweep(label, s, unit))
            p.step()
    return ExpStudy(curves)


def markdown(study: ExpStudy) -> str:
    rows = ["| strategy | integer | exp ops | ops / element in a recipe | one (1.0 as an integer) | "
            "max abs error (LSB) | max rel. error, first octave | bound: rel | bound: abs (LSB) | "
            "worst error / bound |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in study.curves:
        rows.append(f"| `{c.label}` | {'yes' if c.strategy.integer_only else 'no (float)'} | {c.exp_ops} | "
                    f"{c.recipe_ops} | {c.one:.6g} | {c.max_abs_error:.3g} | {c.max_rel_error_first_octave:.3g} | "
                    f"{c.bound.rel:.3g} | {c.bound.abs_lsb:.3g} | {c.bound_ratio:.3f} |")
    held = sum(c.bound_ratio <= 1.0 for c in study.curves)
    tight = min(study.curves, key=lambda c: c.bound_ratio)
    integer = [c for c in study.curves if c.strategy.integer_only and c.nat_unit is None]
    best = min(integer, key=lambda c: c.max_rel_error_first_octave)
    summary = (f"The stated bound holds for {held} of {len(study.curves)} strategies on every input of their "
               f"domains (worst error / bound <= 1); the loosest is `{tight.label}` at {tight.bound_ratio:.2f} "
               f"of its bound. Most accurate integer strategy in the first octave: `{best.label}` "
               f"({best.max_rel_error_first_octave:.2g}, {best.recipe_ops} ops per element in a recipe).")
    return summary + "\n\n" + "\n".join(rows)
