"""Each strategy's Triton helper equals its golden model over the whole integer domain."""
import numpy as np
import pytest
import torch
import triton
import triton.language as tl

import intsoftmax as ism
from qflash.exp import exp_int, exp_spec

from kernel_utils import DEVICE, n, needs_kernel, t

pytestmark = needs_kernel


@triton.jit
def _apply(U, OUT, T, count, rc0, rc1, KIND: tl.constexpr, ARGS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    u = tl.load(U + offs, mask=offs < count, other=0)
    tl.store(OUT + offs, exp_int(u, rc0, rc1, T, KIND, ARGS), mask=offs < count)


STRATEGIES = [ism.ShiftLinearExp2(), ism.ShiftLinearExp2(frac_bits=6), ism.ShiftmaxExp(), ism.ShiftmaxExp(frac_bits=8),
              ism.IBertExp(), ism.IBertExp(frac_bits=8), ism.PolyExp2(), ism.PolyExp2(degree=2),
              ism.PolyExp2(degree=4, frac_bits=12), ism.LutExp2(), ism.LutExp2(interpolate=False),
              ism.LutExp2(index_bits=8, frac_bits=8)]


def run_helper(strategy, consts):
    u = strategy.domain(consts)
    kind, args = exp_spec(strategy)
    lut = t(np.asarray(getattr(strategy, "table", [0]), np.int32))
    out = torch.empty(len(u), dtype=torch.int32, device=DEVICE)
    rc = [0 if x is None else int(np.asarray(x)) for x in strategy.kernel_row_constants(consts or {}, 127)]
    _apply[(triton.cdiv(len(u), 8192),)](t(u.astype(np.int32)), out, lut, len(u), *rc, kind, args, 8192)
    return n(out), strategy.golden(u, consts)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_helper_equals_golden_everywhere(strategy):
    got, want = run_helper(strategy, None)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("nat_unit", [(a / 127) ** 2 / 8 for a in (0.25, 4.0, 64.0)])
def test_qflash_helper_equals_golden_everywhere(nat_unit):
    s = ism.QFlashExp2()
    got, want = run_helper(s, s.plan(np.float64(nat_unit)).consts)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("nat_unit", [(a / 127) ** 2 / 8 for a in (0.25, 4.0, 64.0)])
@pytest.mark.parametrize("degree", [1, 2, 3])
def test_fused_helper_equals_golden_everywhere(nat_unit, degree):
    s = ism.FusedExp2(degree=degree)
    got, want = run_helper(s, s.plan(np.float64(nat_unit)).consts)
    np.testing.assert_array_equal(got, want)


def test_float_strategies_are_not_compiled():
    with pytest.raises(TypeError, match="no integer exp for exact_exp"):
        exp_spec(ism.ExactExp())
