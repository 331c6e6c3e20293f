"""Integer softmax against the exact softmax, within each recipe's stated bound."""
import numpy as np
import pytest
from hypothesis import given, settings

import intsoftmax as ism
from intsoftmax.testing import check_softmax_bound, logit_rows, recipes

RECIPES = {
    "default": ism.Recipe.per_tensor(),
    "qflash": ism.Recipe.qflash(),
    "two_pass_lut": ism.Recipe(exp=ism.LutExp2(), accumulation=ism.TwoPass(), p_bits=8),
    "lazy_shiftlinear": ism.Recipe(exp=ism.ShiftLinearExp2(), accumulation=ism.LazyRescale(), p_bits=9),
    "ibert": ism.Recipe(exp=ism.IBertExp(), p_bits=12, block_n=128),
}


@pytest.mark.parametrize("name", RECIPES)
@given(rows=logit_rows(max_len=4096))
def test_softmax_within_stated_bound(name, rows):
    recipe = RECIPES[name]
    report = check_softmax_bound(recipe, rows.logits, rows.unit, rows.mask).check()
    assert np.isfinite(report.bound) or report.error == 0


@settings(max_examples=15)
@given(recipe=recipes(kernel_only=False), rows=logit_rows(max_len=600))
def test_any_recipe_within_its_bound(recipe, rows):
    check_softmax_bound(recipe, rows.logits, rows.unit, rows.mask).check()


@given(rows=logit_rows(max_len=1000, kinds=("random", "ties", "one_huge", "masked")))
def test_output_is_a_distribution(rows):
    recipe = RECIPES["default"]
    p = recipe.softmax(rows.logits, rows.unit, rows.mask, frac_bits=15)
    assert p.min() >= 0
    assert (p.sum(-1) <= 2**15 + rows.logits.shape[-1]).all()  # each entry rounds by < 1 LSB


def test_fully_masked_rows_are_zero_never_nan():
    logits = np.array([[3, 1, 2], [5, 5, 5]])
    mask = np.array([[False, False, False], [True, False, True]])
    for recipe in RECIPES.values():
        p = recipe.softmax(logits, 0.01, mask)
        assert p[0].tolist() == [0, 0, 0]
        assert p[1, 1] == 0 and abs(int(p[1, 0]) - 2**14) <= 1 and p[1, 0] == p[1, 2]
        assert not np.isnan(recipe.softmax_error_bound(logits, 0.01, mask)).any()


def test_single_key_and_constant_rows_are_exact():
    for recipe in RECIPES.values():
        assert recipe.softmax(np.array([[7]]), 0.1).tolist() == [[2**15]]
        p = recipe.softmax(np.full((1, 197), -12), 0.05, frac_bits=20)
        assert (np.abs(p - 2**20 / 197) <= 1).all()


def test_one_huge_logit_takes_everything():
    logits = np.zeros((1, 4096), dtype=np.int64)
    logits[0, 1234] = 2**20
    p = RECIPES["default"].softmax(logits, 1e-3)
    assert p[0, 1234] == 2**15 and p.sum() == 2**15


def test_row_length_limit_is_enforced():
    recipe = ism.Recipe.per_tensor()
    n = recipe.max_seq_len()
    with pytest.raises(ValueError, match=f"limit of {n} keys"):
        recipe.softmax(np.zeros((1, n + 1), dtype=np.int64), 0.1)


@pytest.mark.parametrize("bad, exc, match", [
    (dict(logits=np.zeros((1, 3))), TypeError, "integer logits"),
    (dict(logits=np.array([[2**29]])), ValueError, r"\[-2\*\*28, 2\*\*28\]"),
    (dict(unit=0.0), ValueError, "unit"),
    (dict(unit=float("nan")), ValueError, "unit"),
    (dict(frac_bits=31), ValueError, "frac_bits"),
    (dict(attn_mask=np.ones((1, 3))), TypeError, "boolean"),
])
def test_softmax_input_errors(bad, exc, match):
    args = dict(logits=np.array([[1, 2, 3]]), unit=0.1)
    args.update(bad)
    with pytest.raises(exc, match=match):
        ism.Recipe.per_tensor().softmax(**args)


def test_bound_catches_a_wrong_strategy():
    """The checker is not vacuous: a strategy that understates its error is caught."""

    class Overconfident(ism.ShiftLinearExp2):
        def error_bound(self, consts=None):
            return ism.exp.ErrorBound(rel=1e-4, abs_lsb=1.0)

    recipe = ism.Recipe(exp=Overconfident(), p_bits=11)
    logits = np.arange(0, -3000, -7)[None, :]
    report = check_softmax_bound(recipe, logits, 2e-3)
    assert not report.ok
    with pytest.raises(AssertionError, match="worst"):
        report.check()
