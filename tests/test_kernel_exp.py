"""Each strategy's Triton helper equals its golden model over the whole integer domain."""
import numpy as np
import pytest
import torch
import triton
import triton.language as tl

import intsoftmax as ism
from qflash.exp import exp_spec, exp_twin
from qflash.kernel import _narrow, _normalize
from qflash.spec import KernelSpec, MaskKind, OutKind

from kernel_utils import DEVICE, n, needs_kernel, t

pytestmark = needs_kernel


@triton.jit
def _apply(U, OUT, T, count, rc0, rc1, EXP_FN: tl.constexpr, ARGS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    u = tl.load(U + offs, mask=offs < count, other=0)
    tl.store(OUT + offs, EXP_FN(u, rc0, rc1, T, ARGS), mask=offs < count)


STRATEGIES = [ism.ShiftLinearExp2(), ism.ShiftLinearExp2(frac_bits=6), ism.ShiftmaxExp(), ism.ShiftmaxExp(frac_bits=8),
              ism.IBertExp(), ism.IBertExp(frac_bits=8), ism.PolyExp2(), ism.PolyExp2(degree=2),
              ism.PolyExp2(degree=4, frac_bits=12), ism.LutExp2(), ism.LutExp2(interpolate=False),
              ism.LutExp2(index_bits=8, frac_bits=8)]


def run_helper(strategy, consts):
    u = strategy.domain(consts)
    _, args = exp_spec(strategy)
    lut = t(np.asarray(getattr(strategy, "table", [0]), np.int32))
    out = torch.empty(len(u), dtype=torch.int32, device=DEVICE)
    rc = [0 if x is None else int(np.asarray(x)) for x in strategy.kernel_row_constants(consts or {}, 127)]
    _apply[(triton.cdiv(len(u), 8192),)](t(u.astype(np.int32)), out, lut, len(u), *rc, exp_twin(strategy).fn, args,
                                         8192)
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


def test_float_exp_compiles_only_in_the_float_softmax():
    """ExactExp's twin is the float softmax baseline's exp2; no integer rule compiles it."""
    with pytest.raises(ValueError, match="does not compile exact_exp"):
        KernelSpec.build(ism.Recipe(exp=ism.ExactExp()), 64, MaskKind.NONE, OutKind.FLOAT)
    spec = KernelSpec.build(ism.Recipe.int_flashattention(), 64, MaskKind.NONE, OutKind.FLOAT)
    assert spec.float_softmax and spec.exp_kind == "exact_exp" and not spec.two_pass


@triton.jit
def _normalize_rows(ACC, L, OUT, OUT_FRAC: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, D)
    acc = tl.load(ACC + rows[:, None] * D + cols[None, :])
    tl.store(OUT + rows[:, None] * D + cols[None, :], _normalize(acc, tl.load(L + rows), False, OUT_FRAC, PTX))


PTX = tl.constexpr(DEVICE != "cpu")


@triton.jit
def _narrow_normalize_rows(ACC, L, OUT, OUT_FRAC: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, D)
    acc, l = _narrow(tl.load(ACC + rows[:, None] * D + cols[None, :]), tl.load(L + rows))
    tl.store(OUT + rows[:, None] * D + cols[None, :], _normalize(acc, l, False, OUT_FRAC, PTX))


def test_wide_accumulator_narrowing_equals_golden():
    """A wide (int64) acc and an int32 l up to 2**31 - 1: the kernel's narrowing (l to 24 bits, acc
    rounded half up to the same scale, both clamps) then the normalization equal the golden
    model's, at every power of two and its neighbours, near the extremes and at random."""
    rng = np.random.default_rng(64)
    edges = [v for k in range(32) for v in (2**k - 1, 2**k, 2**k + 1) if 0 <= v < 2**31]
    l = np.concatenate([np.arange(0, 64), edges, rng.integers(2**24, 2**31, 1000)]).astype(np.int64)
    l = np.concatenate([l, np.ones((-len(l)) % 64, np.int64)])
    D = 32
    acc = rng.integers(-128, 129, (len(l), D)) * l[:, None] // 128 + rng.integers(-3, 4, (len(l), D))
    acc[:, 0], acc[:, 1], acc[:, 2] = 128 * l, -128 * l, -128 * l + 1
    out = torch.empty((len(l), D), dtype=torch.int32, device=DEVICE)
    _narrow_normalize_rows[(len(l) // 64,)](t(acc), t(l.astype(np.int32)), out, 8, D, 64)
    gold = ism.golden.normalize(acc, l[:, None], 8)
    np.testing.assert_array_equal(n(out), gold)
    wide = l >= 2**24
    assert wide.sum() > 1000 and (gold[wide, 0] == 128 * 256).all() and (gold[wide, 1] == -128 * 256).all()


@pytest.mark.parametrize("frac_bits", [8, 16])
def test_normalize_equals_golden(frac_bits):
    """The kernel's per-row reciprocal (a float64 estimate corrected to the floor) equals the golden
    model's at every power of two and its neighbours, small l, and random l below ``2**24``."""
    rng = np.random.default_rng(frac_bits)
    edges = [v for k in range(25) for v in (2**k - 1, 2**k, 2**k + 1) if 0 <= v < ism.golden.NORM_L_LIMIT]
    l = np.concatenate([np.arange(0, 300), edges, rng.integers(1, ism.golden.NORM_L_LIMIT, 1000)]).astype(np.int64)
    l = np.concatenate([l, np.ones((-len(l)) % 64, np.int64)])
    D = 32
    acc = rng.integers(-128, 129, (len(l), D)) * l[:, None] // 128
    acc[:, 0], acc[:, 1] = 128 * l, -128 * l
    out = torch.empty((len(l), D), dtype=torch.int32, device=DEVICE)
    _normalize_rows[(len(l) // 64,)](t(acc.astype(np.int32)), t(l.astype(np.int32)), out, frac_bits, D, 64)
    np.testing.assert_array_equal(n(out), ism.golden.normalize(acc, l[:, None], frac_bits))
