"""A new exp strategy is its golden class plus one registered Triton twin. Defined in this file
alone, it flows through select's catalog, the hypothesis strategies and the kernel (in the
interpreter on CI), bit-exact with its golden model."""
import numpy as np
import pytest
import triton
import triton.language as tl
from hypothesis import find

import intsoftmax as ism
import qflash
from intsoftmax.exp.base import ErrorBound, OpCount, linear_max_rel
from intsoftmax.select import catalog
from intsoftmax.strategy import register, unregister
from intsoftmax.testing import exp_strategies
from qflash.exp import TWINS, twin

from kernel_utils import n, needs_kernel, t

KIND = "test_rounded_linear_exp2"


@pytest.fixture
def rounded_linear():
    """The shift-linear exp2 with a rounding final shift, registered for one test, then forgotten."""

    @register("exp", KIND)
    class RoundedLinearExp2(ism.ShiftLinearExp2):
        """``((1 - f/2) + 2**(q-1)) >> q``: shift-linear, rounded instead of floored."""
        catalog = {"rounded_linear": {}}
        search_space = {"frac_bits": range(4, 13)}

        def golden(self, u, consts=None):
            q = np.asarray(u, dtype=np.int64) >> self.frac_bits
            return (super().golden(np.asarray(u) & ((1 << self.frac_bits) - 1)) + ((1 << q) >> 1)) >> q

        def error_bound(self, consts=None):
            return ErrorBound(rel=linear_max_rel(), abs_lsb=0.5)

        def op_count(self):
            return OpCount(shift=4, add=3)

    @twin(KIND, lambda s: (s.frac_bits, s.out_bits))
    @triton.jit
    def rounded_linear_exp2(u, rc0, rc1, table, ARGS: tl.constexpr):
        F: tl.constexpr = ARGS[0]
        E: tl.constexpr = ARGS[1]
        q = u >> F
        m = ((1 << (F + 1)) - (u & ((1 << F) - 1))) << (E - F - 1)
        return (m + ((1 << q) >> 1)) >> q

    yield RoundedLinearExp2
    unregister("exp", KIND)
    TWINS.pop(KIND)


def test_a_registered_strategy_reaches_select_and_hypothesis(rounded_linear):
    ours = {label: r for label, r in catalog().items() if label.startswith("rounded_linear")}
    assert len(ours) == 9 and all(isinstance(r.exp, rounded_linear) for r in ours.values())
    choice = ism.select(target_sqnr_db=20.0, candidates=ours)
    assert choice.recipe.exp.kind == KIND and choice.sqnr_db >= 20.0
    drawn = find(exp_strategies(), lambda s: s.kind == KIND and s.frac_bits == 5)
    assert drawn == rounded_linear(frac_bits=5)
    ism.testing.check_exp_bound(rounded_linear()).check()


@needs_kernel
@pytest.mark.parametrize("rule", [ism.TwoPass(), ism.ScaleRelease()], ids=lambda r: r.name)
def test_a_registered_strategy_runs_in_the_kernel_bit_exact(rounded_linear, rule):
    recipe = ism.Recipe(exp=rounded_linear(), accumulation=rule, p_bits=8)
    rng = np.random.default_rng(0)
    q, k, v = (rng.uniform(-3, 3, (1, 2, 100, 32)).astype(np.float32) for _ in range(3))
    values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v).values)


def test_the_throwaway_is_gone_after_its_test():
    assert KIND not in ism.available_strategies("exp") and KIND not in TWINS
    assert not any(label.startswith("rounded_linear") for label in catalog())
