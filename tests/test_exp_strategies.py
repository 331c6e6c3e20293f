"""Every exp strategy, swept exhaustively over its integer domain, against its stated bound."""
import json

import numpy as np
import pytest

import intsoftmax as ism
from intsoftmax.exp.base import LOG2E, U_MAX_LIMIT, prescale
from intsoftmax.testing import check_exp_bound

PRESCALED = [
    ism.ShiftLinearExp2(), ism.ShiftLinearExp2(frac_bits=8),
    ism.ShiftmaxExp(), ism.ShiftmaxExp(frac_bits=8),
    ism.IBertExp(), ism.IBertExp(frac_bits=8),
    ism.PolyExp2(), ism.PolyExp2(degree=2), ism.PolyExp2(degree=1), ism.PolyExp2(degree=4, frac_bits=12),
    ism.LutExp2(), ism.LutExp2(interpolate=False), ism.LutExp2(index_bits=3), ism.LutExp2(index_bits=8, frac_bits=10),
]
# QFlash's constants come from the scale: nats per QK unit for amplitudes 2**-2 .. 2**6 at D = 64
QFLASH_UNITS = [(a / 127) ** 2 / 8 for a in (0.25, 1.0, 4.0, 16.0, 64.0)]


@pytest.mark.parametrize("strategy", PRESCALED, ids=lambda s: s.name)
def test_bound_holds_and_is_tight(strategy):
    report = check_exp_bound(strategy).check()
    assert report.ratio >= 0.5, f"bound is loose: {report}"


@pytest.mark.parametrize("nat_unit", QFLASH_UNITS)
def test_qflash_bound_holds_and_is_tight(nat_unit):
    report = check_exp_bound(ism.QFlashExp2(), nat_unit).check()
    assert report.ratio >= 0.5, f"bound is loose: {report}"


@pytest.mark.parametrize("strategy", PRESCALED + [ism.QFlashExp2()], ids=lambda s: s.name)
def test_output_range_and_monotone(strategy):
    consts = strategy.plan(np.float64(QFLASH_UNITS[2])).consts
    u = strategy.domain(consts)
    e = strategy.golden(u, consts)
    assert e.min() >= 0 and e.max() <= strategy.plan_one(consts)
    assert (np.diff(e) <= 0).all()


@pytest.mark.parametrize("strategy", PRESCALED, ids=lambda s: s.name)
def test_prescale_domain_limits(strategy):
    assert strategy.u_max() < U_MAX_LIMIT
    assert strategy.golden(np.array([strategy.u_max()]))[0] <= 1  # the clamp target is ~0


@pytest.mark.parametrize("strategy", PRESCALED, ids=lambda s: s.name)
def test_prescale_is_floor_of_exact_product(strategy):
    """u = floor(t * M * 2**-shift), computed in 32-bit steps, equals the exact value."""
    rng = np.random.default_rng(0)
    for nat_unit in 2.0 ** rng.uniform(-40, 12, 200):
        plan = strategy.plan(nat_unit)
        t = np.concatenate([rng.integers(0, 2**31, 64), rng.integers(0, 2**12, 64), [0, 1, 2**31 - 1]])
        got = prescale(t, plan)
        shift = 32 - int(plan.pre_l) + int(plan.pre_r)
        exact = [min((int(x) * int(plan.pre_M)) >> shift, strategy.u_max()) for x in t]
        assert got.tolist() == exact
        ratio = min(nat_unit * strategy.native_per_nat(), 2.0**27)
        assert abs(int(plan.pre_M) * 2.0**-shift / ratio - 1) < 2.0**-29 or ratio < 2.0**-31


def test_native_units_are_exact():
    assert ism.PolyExp2(frac_bits=14).native_per_nat() == LOG2E * 2**14
    assert ism.IBertExp(frac_bits=10).native_per_nat() == 2**10
    assert ism.ShiftmaxExp(frac_bits=12).native_per_nat() == 2**12


def test_exact_strategy_is_a_float_reference():
    s = ism.ExactExp()
    assert not s.integer_only
    report = check_exp_bound(s, nat_unit=1e-3).check()
    assert report.ratio > 0.9  # rounding to the grid reaches half an LSB


def test_strategies_are_data():
    a, b = ism.PolyExp2(degree=2), ism.PolyExp2(degree=2)
    assert a == b and hash(a) == hash(b) and a != ism.PolyExp2()
    assert a.name == "poly_exp2(degree=2,frac_bits=14,out_bits=15)"
    for s in PRESCALED + [ism.QFlashExp2(), ism.ExactExp()]:
        back = ism.strategy.from_dict("exp", json.loads(s.to_json()))
        assert back == s and back.name == s.name
    with pytest.raises(AttributeError):
        a.degree = 3  # frozen


def test_op_counts_are_positive_and_ordered():
    counts = {s.name: s.op_count().total for s in PRESCALED}
    assert all(v > 0 for v in counts.values())
    assert ism.PolyExp2(degree=3).op_count().total > ism.PolyExp2(degree=2).op_count().total
    assert ism.ShiftLinearExp2().op_count().total < ism.PolyExp2().op_count().total


@pytest.mark.parametrize("bad, exc", [
    (lambda: ism.PolyExp2(degree=5), ValueError),
    (lambda: ism.PolyExp2(frac_bits=20, out_bits=15), ValueError),
    (lambda: ism.PolyExp2(degree=2.0), TypeError),
    (lambda: ism.LutExp2(index_bits=10, frac_bits=8), ValueError),
    (lambda: ism.LutExp2(interpolate=1), TypeError),
    (lambda: ism.ShiftLinearExp2(frac_bits=15, out_bits=15), ValueError),
    (lambda: ism.IBertExp(frac_bits=12), ValueError),
    (lambda: ism.QFlashExp2(mul_shift=40), ValueError),
    (lambda: ism.ShiftmaxExp(out_bits=True), TypeError),
])
def test_invalid_strategies_raise(bad, exc):
    with pytest.raises(exc) as info:
        bad()
    assert not isinstance(info.value, AssertionError)


FUSED = [ism.FusedExp2(degree=d) for d in (1, 2, 3, 4)] + [ism.FusedExp2(frac_bits=10)]


@pytest.mark.parametrize("nat_unit", QFLASH_UNITS)
@pytest.mark.parametrize("strategy", FUSED, ids=lambda s: s.name)
def test_fused_bound_holds_and_is_tight(strategy, nat_unit):
    report = check_exp_bound(strategy, nat_unit).check()
    assert report.ratio >= 0.5, f"bound is loose: {report}"


@pytest.mark.parametrize("p_bits", [7, 8, 11, 14])
@pytest.mark.parametrize("strategy", FUSED, ids=lambda s: s.name)
def test_fused_probabilities_round_the_exact_value(strategy, p_bits):
    """P = round(P_max 2**(-t c')) within the stated bound, P(0) = P_max, non-increasing, 0 from t_cap on."""
    p_max = 2**p_bits - 1
    for nat_unit in QFLASH_UNITS + [1e-12, 0.3]:
        consts = strategy.plan(np.float64(nat_unit)).consts
        cap = int(strategy.t_cap(consts["M"], p_max))
        t = np.unique(np.concatenate([np.arange(min(cap + 2, 200000)), np.linspace(0, 2**31 - 1, 4097).astype(np.int64)]))
        P = strategy.fused_p(t, consts, p_max)
        assert P[0] == p_max and P.min() >= 0 and (np.diff(P) <= 0).all()
        if cap < 2**31 - 1:
            assert (P[t >= cap] == 0).all()
        exact = p_max * np.exp2(-t * (consts["M"] * 2.0**-32))
        eb = strategy.error_bound(None, top=p_max)
        assert (np.abs(P - exact) <= eb.rel * exact + eb.abs_lsb + 1e-9).all()


def test_fused_multiplier_saturates_and_vanishes():
    s = ism.FusedExp2()
    big, tiny = s.plan(np.float64(10.0)).consts, s.plan(np.float64(1e-15)).consts
    assert big["M"] == 2**32 - 1 and tiny["M"] == 0
    assert (s.fused_p(np.array([0, 1, 2**31 - 1]), tiny, 255) == 255).all()  # every key weighs P_max
