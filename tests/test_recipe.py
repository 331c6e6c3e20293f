"""Recipe construction, validation, identity (hash, name, JSON) and limits."""
import json

import numpy as np
import pytest
from hypothesis import given

import intsoftmax as ism
from intsoftmax.testing import recipes


@given(recipes(kernel_only=False))
def test_recipes_round_trip_through_json(recipe):
    text = recipe.to_json()
    back = ism.Recipe.from_json(text)
    assert back == recipe and hash(back) == hash(recipe) and back.name == recipe.name
    assert json.loads(text)["version"] == 1


def test_name_is_built_from_every_field():
    r = ism.Recipe.per_tensor()
    for field, value in [("p_bits", 9), ("block_n", 32), ("out_frac_bits", 3), ("exp", ism.LutExp2()),
                         ("accumulation", ism.ScaleRelease()), ("q_granularity", ism.PerToken()),
                         ("k_granularity", ism.PerHead()), ("v_granularity", ism.PerHead()), ("float_out", "rounded")]:
        other = r.replace(**{field: value})
        assert other.name != r.name and other != r


def test_builtin_recipes():
    qf, df = ism.Recipe.qflash(), ism.Recipe.per_tensor()
    assert qf.p_bits == 7 and qf.block_n == 32 and isinstance(qf.exp, ism.QFlashExp2)
    assert qf.max_seq_len() == (2**31 - 1) // (128 * 127)
    assert df.max_seq_len() == (2**31 - 1) // (128 * 2047) >= 8192
    assert qf.in_kernel and df.in_kernel
    assert not df.replace(exp=ism.ExactExp()).in_kernel
    assert not df.replace(accumulation=ism.NaiveScaleAccumulation()).in_kernel
    assert qf.op_count().total < df.op_count().total


def test_available_strategies_lists_every_kind():
    avail = ism.available_strategies()
    assert set(avail) == {"exp", "accumulation", "granularity", "transform"}
    assert {"shift_linear_exp2", "shiftmax_exp", "ibert_exp", "poly_exp2", "lut_exp2", "qflash_exp2",
            "exact_exp"} <= set(avail["exp"])
    assert set(avail["accumulation"]) == {"scale_release", "naive_scale_accumulation", "two_pass", "lazy_rescale",
                                          "float_softmax"}
    assert set(avail["granularity"]) == {"per_tensor", "per_head", "per_token", "per_block", "per_channel"}
    assert set(avail["transform"]) == {"key_offset", "value_offset", "channel_balance"}
    assert ism.available_strategies("exp") == avail["exp"]


@pytest.mark.parametrize("changes, exc, match", [
    (dict(k_granularity=ism.PerToken()), ValueError, "k_granularity=per_token.*integer row max"),
    (dict(k_granularity=ism.PerBlock(size=64)), ValueError, "k_granularity=per_block"),
    (dict(v_granularity=ism.PerToken()), ValueError, "v_granularity=per_token"),
    (dict(p_bits=0), ValueError, "p_bits=0"),
    (dict(p_bits=15), ValueError, "p_bits=15"),
    (dict(p_bits=8.0), TypeError, "p_bits must be an int"),
    (dict(p_bits=True), TypeError, "p_bits must be an int"),
    (dict(block_n=48), ValueError, "block_n=48"),
    (dict(exp=ism.QFlashExp2(), accumulation=ism.ScaleRelease(20)), ValueError,
     "release_shift=20 is too small.*release_shift >= 29"),
    (dict(accumulation=ism.LazyRescale(release_shift=18)), ValueError, "release_shift >= 19"),
    (dict(out_frac_bits=17), ValueError, "out_frac_bits=17"),
    (dict(float_out="exact"), ValueError, r"float_out='exact': must be one of \('pair', 'rounded'\)"),
    (dict(exp=ism.ScaleRelease()), TypeError, "Recipe.exp must be a ExpStrategy"),
    (dict(accumulation="scale_release"), TypeError, "Recipe.accumulation"),
    (dict(q_granularity=None), TypeError, "Recipe.q_granularity"),
])
def test_invalid_recipes_raise_value_or_type_errors(changes, exc, match):
    with pytest.raises(exc, match=match) as info:
        ism.Recipe.per_tensor().replace(**changes)
    assert not isinstance(info.value, AssertionError)


def test_per_token_and_per_block_q_are_allowed():
    ism.Recipe.per_tensor().replace(q_granularity=ism.PerToken())
    ism.Recipe.per_tensor().replace(q_granularity=ism.PerBlock(size=32))


@pytest.mark.parametrize("data, exc, match", [
    ({"version": 2}, ValueError, "version 2"),
    ({"colour": 1}, ValueError, "unknown Recipe fields"),
    ({"exp": {"kind": "magic"}}, ValueError, "unknown exp strategy kind 'magic'"),
    ({"exp": {"degree": 2}}, ValueError, "'kind' key"),
    ({"exp": {"kind": "poly_exp2", "degree": 9}}, ValueError, "degree=9"),
    ({"exp": {"kind": "poly_exp2", "power": 2}}, TypeError, "power"),
    ([1, 2], TypeError, "expects a dict"),
])
def test_from_dict_errors(data, exc, match):
    with pytest.raises(exc, match=match):
        ism.Recipe.from_dict(data)


def test_recipes_are_frozen_and_hashable():
    r = ism.Recipe.per_tensor()
    with pytest.raises(AttributeError):
        r.p_bits = 8
    assert len({r, ism.Recipe.per_tensor(), ism.Recipe.qflash()}) == 2


@pytest.mark.parametrize("g", [ism.PerTensor(), ism.PerHead(), ism.PerToken(), ism.PerBlock(size=4)],
                         ids=lambda g: g.name)
def test_granularity_block_matches_its_golden_ranges(g):
    """``block()`` (the one primitive qflash reads) agrees with the golden ``amax``: one range per
    ``(heads, rows)`` block, ``None`` = all of them."""
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 10, 8)).astype(np.float32)
    a = np.broadcast_to(g.amax(x), x.shape[:-1] + (1,))[..., 0]  # one range per (b, h, row)
    heads, rows = g.block()
    if heads is None:
        assert np.unique(a).size == 1
    else:
        assert np.unique(a.reshape(6, 10)[:, 0]).size == 6  # distinct heads, distinct ranges
    for start in range(0, 10, rows or 10):
        chunk = a[..., start:start + (rows or 10)]
        assert (chunk == chunk[..., :1]).all()


def test_per_channel_is_for_v_only():
    """V's scale may vary per channel (each output channel is dequantized apart); Q's or K's may not
    (the logit would no longer be one integer dot product), and int8 output needs one V scale per row."""
    x = np.random.default_rng(1).normal(0, 1, (2, 3, 10, 8)).astype(np.float32)
    x[..., 2] *= 10
    g = ism.PerChannel()
    assert g.per_channel and g.row_uniform and g.amax(x).shape == (2, 3, 1, 8)
    assert g.amax(x)[0, 0, 0, 2] == np.abs(x[0, 0, :, 2]).max()
    r = ism.Recipe.per_tensor().replace(v_granularity=g)
    assert ism.Recipe.from_json(r.to_json()) == r and "v=per_channel()" in r.name
    for name in ("q_granularity", "k_granularity"):
        with pytest.raises(ValueError, match="Only V may be per channel"):
            ism.Recipe.per_tensor().replace(**{name: g})
    with pytest.raises(ValueError, match="take float output"):
        r.attention_int(x, x, x, out_scale=0.1)
    res = r.attention_int(x, x, x)
    assert res.scale.shape == x.shape and (res.scale[0, 0, 0] != res.scale[0, 0, 0, 0]).any()


def test_release_shift_keeps_four_bits_of_rel_m_at_every_scale():
    """The smallest accepted binary point keeps rel_M = floor(2**S / one) >= 16 where one is largest:
    QFlash's exp2 at the tiniest logit scale (R = 2**25), the others at their fixed 2**15."""
    for exp in (ism.QFlashExp2(), ism.FusedExp2(), ism.PolyExp2()):
        s = ism.accumulation.min_release_shift(exp.one_upper_bound())
        recipe = ism.Recipe(exp=exp, accumulation=ism.ScaleRelease(s), p_bits=7)
        plan = recipe.plan(np.float32(1e-4), np.float32(1e-4), 0.125)
        assert int(np.min(plan.rel_M)) >= 16
        with pytest.raises(ValueError, match="too small"):
            recipe.replace(accumulation=ism.ScaleRelease(s - 1))
