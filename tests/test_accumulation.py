"""Accumulation rules: scale release never grows, naive accumulation explodes where predicted."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import intsoftmax as ism
from intsoftmax import golden
from intsoftmax.fixedpoint import IntegerOverflowError


def staircase(recipe, n, rising=True, check_limits=False):
    """Worst case for accumulation: every key tile raises the row max by one QK unit (or, with
    ``rising=False``, all keys are equal), every key of a tile shares that max (P = P_max) and
    V = -128, so |acc| = 128 * l. The QK unit is far below the exp's resolution, so alpha is
    exactly the integer for 1.0."""
    tile = np.arange(n) // recipe.block_n if rising else np.zeros(n, int)
    q8 = np.ones((1, 1, 1, 1), np.int8)
    k8 = tile.astype(np.int8).reshape(1, 1, n, 1)
    v8 = np.full((1, 1, n, 1), -128, np.int8)
    plan = recipe.plan(np.float32(1e-6), np.float32(1e-6), 1.0)
    return golden.attention_core(recipe, q8, k8, v8, plan, check_limits=check_limits)


@pytest.mark.parametrize("acc_bits", [32, 64])
@pytest.mark.parametrize("p_bits, block_n", [(7, 32), (11, 16), (8, 64)])
def test_naive_accumulation_overflows_exactly_where_the_recipe_says(acc_bits, p_bits, block_n):
    recipe = ism.Recipe(accumulation=ism.NaiveScaleAccumulation(acc_bits=acc_bits), p_bits=p_bits, block_n=block_n)
    limit = recipe.max_seq_len()
    assert limit % block_n == 0 and limit >= block_n
    staircase(recipe, limit)  # fits
    with pytest.raises(IntegerOverflowError, match=f"after key tile {limit // block_n}.*scale explosion"):
        staircase(recipe, limit + 1)


def test_naive_accumulation_raises_on_ordinary_data_instead_of_wrapping():
    from intsoftmax.workloads import qkv
    q, k, v = qkv("A2", "uniform", seed=0)
    recipe = ism.Recipe(accumulation=ism.NaiveScaleAccumulation(acc_bits=32))
    with pytest.raises(ValueError, match="exceeds this recipe's limit"):
        recipe.attention(q, k, v)
    with pytest.raises(IntegerOverflowError, match="scale explosion"):
        recipe.attention(q, k, v, check_limits=False)


@pytest.mark.parametrize("rule", [ism.ScaleRelease(), ism.TwoPass(), ism.LazyRescale(headroom_octaves=2)])
@pytest.mark.parametrize("p_bits", [11, 14])
@pytest.mark.parametrize("rising", [True, False])
def test_rescaling_rules_hold_their_limit_on_the_worst_case(rule, p_bits, rising):
    recipe = ism.Recipe(accumulation=rule, p_bits=p_bits, block_n=16)
    n = recipe.max_seq_len()
    out = staircase(recipe, n, rising, check_limits=True)  # every int32 check passes
    assert (out < 0).all()
    if not rising:  # all keys at the max: the bound is attained, one more key overflows
        with pytest.raises(IntegerOverflowError, match="acc after key tile"):
            staircase(recipe, n + 1, rising, check_limits=True)


@pytest.mark.parametrize("rule", [ism.TwoPass(acc_bits=64), ism.ScaleRelease(acc_bits=64)], ids=["two_pass", "online"])
def test_wide_accumulator_holds_its_limit_where_l_alone_bounds_the_keys(rule):
    """A wide accumulator (int64 acc, long_context's exp and P): 1049088 keys at P_max with V = -128
    keep l in int32 and the output exact (the narrowing loses nothing here: the mean of V is -128
    exactly); one key more overflows l, not acc."""
    recipe = ism.Recipe.long_context().replace(accumulation=rule)
    n = recipe.max_seq_len()
    assert n == (2**31 - 1) // recipe.p_max >= 131072
    assert (staircase(recipe, n, rising=False, check_limits=True) == -128 * 2**recipe.out_frac_bits).all()
    with pytest.raises(IntegerOverflowError, match="l after key tile"):
        staircase(recipe, n + 1, rising=False, check_limits=True)


def test_online_wide_rule_matches_long_context_accuracy():
    """ScaleRelease(acc_bits=64) with long_context's exp and P: no first pass, and on U[-4, 4] at
    N = 2048, D = 128 within 0.3 dB of the two-pass rule (36.2-36.4 against 36.0-36.2 dB, seeds
    2048, 0, 1: rescales round only the sums)."""
    two_pass = ism.Recipe.long_context()
    online = two_pass.replace(accumulation=ism.ScaleRelease(acc_bits=64))
    assert online.max_seq_len() == two_pass.max_seq_len()
    rng = np.random.default_rng(2048)
    q, k, v = (rng.uniform(-4, 4, (1, 1, 2048, 128)) for _ in range(3))
    ref = ism.float_attention(q, k, v)
    a, b = ism.sqnr_db(ref, two_pass.attention(q, k, v)), ism.sqnr_db(ref, online.attention(q, k, v))
    assert b >= 35.0 and abs(a - b) < 0.3


@given(acc=st.integers(-128, 128), l=st.integers(0, 2**31 - 1), noise=st.integers(-2**20, 2**20))
def test_narrowing_keeps_24_bits_and_rounds_half_up(acc, l, noise):
    a = np.int64(acc * l + (noise if l else 0))
    narrowed, l2 = golden.narrow(np.array([a]), np.array([l]))
    assert 0 <= l2[0] < golden.NORM_L_LIMIT
    sh = max(int(l).bit_length() - 24, 0)
    assert l2[0] == l >> sh and narrowed[0] == (int(a) + (1 << sh >> 1)) >> sh  # exact rounding, Python ints
    if l < 2**24:
        assert narrowed[0] == a


@given(x=st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=20),
       one_bits=st.integers(4, 25), shift=st.integers(16, 30), data=st.data())
def test_scale_release_never_increases_a_magnitude(x, one_bits, shift, data):
    one = data.draw(st.integers(2 ** (one_bits - 1), 2**one_bits))
    if one > 2**shift:
        return
    alpha = np.array(data.draw(st.lists(st.integers(0, one), min_size=len(x), max_size=len(x))), np.int64)
    rel_M = np.int64(2**shift // one)
    x = np.array(x, np.int64)
    out = ism.ScaleRelease(release_shift=shift).rescale(x, alpha, np.ones(len(x), bool), rel_M)
    assert (np.abs(out) <= np.abs(x)).all()
    exact = x * alpha / one
    assert (np.abs(out - exact) <= 0.5 + np.abs(x) * one / 2.0**shift + 1e-9).all()


def test_lazy_rescale_rescales_less_often():
    from intsoftmax.workloads import qkv
    q, k, v = qkv("A3", "gaussian", seed=0)
    ref = ism.float_attention(q, k, v)
    for h in (1, 2):
        got = ism.Recipe(accumulation=ism.LazyRescale(headroom_octaves=h)).attention(q, k, v)
        assert ism.sqnr_db(ref, got) > 29.0


@pytest.mark.parametrize("rule", [ism.LazyRescale(headroom_octaves=1), ism.LazyRescale(headroom_octaves=4),
                                  ism.TwoPass()], ids=["lazy1", "lazy4", "two_pass"])
def test_qflash_keeps_the_row_max_at_any_scale(rule):
    """`QFlashExp2` at amplitudes 1e-4 to 100 with one key: the output is that key's V. Three
    defects hid here (found by hypothesis): its official ``req_M`` is 0 below ``c = 6e-8`` (every
    ``P`` 0, now at least 1); its ``exp_M >= 1`` counts octaves at ``2**-16`` per unit however
    small ``c``, so lazy headroom measured at the true rate spanned many more octaves (now capped,
    ``intsoftmax.plan.headroom_limits``); and with ``R = round(1/c) < 2**h`` its exp is 0 ``h``
    octaves down (now at most ``floor(log2(R))`` octaves of headroom)."""
    recipe = ism.Recipe(exp=ism.QFlashExp2(), accumulation=rule, p_bits=7, block_n=16, out_frac_bits=0)
    rng = np.random.default_rng(0)
    for amplitude in 10.0 ** np.linspace(-4, 2, 25):
        q, k, v = (rng.normal(0, amplitude, (1, 1, 1, 16)).astype(np.float32) for _ in range(3))
        (_, _), (_, _), (v8, s_v) = recipe.quantize_inputs(q, k, v)
        out = recipe.attention_int(q, k, v).dequantize()
        np.testing.assert_allclose(out, v8 * s_v.astype(np.float64), rtol=1e-6, err_msg=f"amplitude {amplitude}")


def test_lazy_headroom_is_capped_at_the_strategy_rate():
    """The cap itself: one octave of headroom at QFlash's slowest rate is ``2**16`` QK units."""
    recipe = ism.Recipe(exp=ism.QFlashExp2(), accumulation=ism.LazyRescale(headroom_octaves=1))
    s = np.float32(0.2 / 127)  # c ~ 2**-21: below 2**-16
    assert recipe.plan(s, s, 0.25).headroom.max() == 2**16
    assert ism.Recipe.per_tensor().replace(accumulation=ism.LazyRescale(headroom_octaves=1)).plan(s, s, 0.25).headroom \
        > 2**16  # FusedExp2 has no slowest rate
