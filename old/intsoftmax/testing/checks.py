"""Checks of strategies and recipes against their stated error bounds, with worst-case reports."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..exp.base import ExpStrategy
from ..metrics import float_softmax


class BoundViolation(AssertionError):
    """An observed error exceeded the stated bound (raised by :meth:`BoundReport.check`)."""


@dataclasses.dataclass(frozen=True)
class BoundReport:
    """Worst case of ``|observed error| / bound`` over the checked points.

    ratio: the largest ratio (``<= 1`` means the bound holds everywhere; a ratio near 1
    means the bound is tight). index: where it occurred. error, bound: their values there.
    """

    what: str
    ratio: float
    index: tuple
    error: float
    bound: float
    points: int

    @property
    def ok(self) -> bool:
        return self.ratio <= 1.0

    def check(self) -> "BoundReport":
        """Raise :class:`BoundViolation` if the bound is exceeded; return ``self`` otherwise."""
        if not self.ok:
            raise BoundViolation(str(self))
        return self

    def __str__(self) -> str:
        return (f"{self.what}: worst |error|/bound = {self.ratio:.4g} at {self.index} "
                f"(error {self.error:.4g}, bound {self.bound:.4g}, {self.points} points)")


def _report(what, err, bound) -> BoundReport:
    err, bound = np.asarray(err, np.float64), np.asarray(bound, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / bound)
    if ratio.size == 0:
        return BoundReport(what, 0.0, (), 0.0, 0.0, 0)
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return BoundReport(what, float(ratio[i]), tuple(int(x) for x in i), float(err[i]), float(bound[i]), ratio.size)


def check_exp_bound(strategy: ExpStrategy, nat_unit: float | None = None) -> BoundReport:
    """Sweep ``strategy`` exhaustively over its integer domain ``0 .. u_max`` against ``one * g(u)``.

    Raw-unit strategies (``input_unit_octaves() is None``) need ``nat_unit``, the nats per
    QK unit their constants are derived for. The index in the report is ``(u,)``.
    """
    consts = None
    if strategy.input_unit_octaves() is None:
        if nat_unit is None:
            raise ValueError(f"{strategy.name} works on raw QK units: pass nat_unit (nats per QK unit)")
        consts = strategy.plan(np.float64(nat_unit)).consts
    u = strategy.domain(consts)
    got = strategy.golden(u, consts).astype(np.float64)
    exact = strategy.exact(u, consts)
    return _report(strategy.name, np.abs(got - exact), strategy.error_bound(consts).limit(exact))


def check_softmax_bound(recipe, logits, unit, attn_mask=None, frac_bits: int = 15) -> BoundReport:
    """Compare ``recipe.softmax`` with the exact softmax of ``logits * unit`` against
    ``recipe.softmax_error_bound``. The index in the report is the element's position."""
    got = recipe.softmax(logits, unit, attn_mask, frac_bits) * 2.0**-frac_bits
    unit_rows = np.asarray(unit, np.float64)
    x = np.asarray(logits, np.float64) * (unit_rows[..., None] if unit_rows.ndim else unit_rows)
    exact = float_softmax(x, mask=attn_mask)
    bound = recipe.softmax_error_bound(logits, unit, attn_mask, frac_bits)
    return _report(f"softmax of {recipe.name}", np.abs(got - exact), bound)
