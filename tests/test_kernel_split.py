"""Split-key calls (two-pass rules): the keys in several ranges, each its own program, their
integer sums added by the last one; bit for bit the golden model's, which has no splits."""
import numpy as np
import pytest
import torch

import intsoftmax as ism
import qflash
from qflash import api

from kernel_utils import n, needs_kernel, t

pytestmark = needs_kernel

RECIPES = {"default": ism.Recipe.per_tensor(), "p8_offset_form": ism.Recipe.fast().replace(p_bits=8),
           "p7": ism.Recipe.fast(), "long_context": ism.Recipe.long_context(),
           "lut": ism.Recipe(exp=ism.LutExp2(), accumulation=ism.TwoPass(), p_bits=8)}


@pytest.fixture
def splits(monkeypatch):
    """Force the split count of every two-pass call; returns the list of counts the calls asked for."""
    asked = []

    def force(k):
        monkeypatch.setattr(api, "_splits", lambda spec, call, block_m: asked.append(k) or (k if spec.two_pass else 1))
    return force, asked


def inputs(seed, nq, nk, d=32, heads=2):
    rng = np.random.default_rng(seed)
    q = rng.normal(0, 2, (1, heads, nq, d)).astype(np.float32)
    k, v = (rng.normal(0, 2, (1, heads, nk, d)).astype(np.float32) for _ in range(2))
    return q, k, v


@pytest.mark.parametrize("recipe", list(RECIPES.values()), ids=list(RECIPES))
@pytest.mark.parametrize("nq, nk, k", [(1, 333, 3), (3, 700, 4), (70, 200, 7), (2, 1000, 40)])
def test_split_keys_equal_golden(splits, recipe, nq, nk, k):
    """Splits of whole 64-key tiles, the last one partial (32-key tails), or empty (40 splits of
    1000 keys: 16 ranges of 64, the rest past the keys); two row blocks at Nq = 70."""
    force, asked = splits
    force(k)
    q, k_, v = inputs(nq * 7 + nk, nq, nk)
    values, _ = qflash.attention_int(t(q), t(k_), t(v), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k_, v).values)
    assert asked, "the call did not ask for splits"


@pytest.mark.parametrize("recipe", [RECIPES["default"], RECIPES["p8_offset_form"]], ids=["default", "p8"])
def test_split_keys_with_masks_equal_golden(splits, recipe):
    """Causal rows (splits past a row block's diagonal hold no keys), a boolean mask with a fully
    masked row, and a float bias."""
    force, _ = splits
    force(5)
    q, k, v = inputs(11, 70, 300)
    values, _ = qflash.attention_int(t(q), t(k), t(v), is_causal=True, recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, is_causal=True).values)
    rng = np.random.default_rng(12)
    mask = rng.random((1, 2, 70, 300)) < 0.3
    mask[0, 1, 4] = False
    values, _ = qflash.attention_int(t(q), t(k), t(v), t(mask), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, attn_mask=mask).values)
    assert (n(values)[0, 1, 4] == 0).all()
    bias = rng.normal(0, 3, (70, 300)).astype(np.float32)
    values, _ = qflash.attention_int(t(q), t(k), t(v), t(bias), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, attn_bias=bias).values)


def test_split_keys_int8_in_and_out(splits):
    """Pre-quantized inputs, per-head scales, an int8 output (requantized after the merge)."""
    force, _ = splits
    force(3)
    recipe = ism.Recipe.per_tensor().replace(k_granularity=ism.PerHead(), v_granularity=ism.PerHead())
    q, k, v = inputs(13, 2, 500)
    (q8, s_q), (k8, s_k), (v8, s_v) = recipe.quantize_inputs(q, k, v)
    out = qflash.attention_int8(t(q8), t(k8), t(v8), t(s_q.reshape(1).astype(np.float32)),
                                t(s_k.reshape(-1).astype(np.float32)), t(s_v.reshape(-1).astype(np.float32)),
                                recipe=recipe, out_scale=0.01)
    np.testing.assert_array_equal(n(out), recipe.attention_int(q, k, v, out_scale=0.01).values)


@pytest.mark.parametrize("static", [False, True], ids=["measured_ranges", "static_ranges_on_load"])
@pytest.mark.parametrize("where", ["k", "v", "bias"])
def test_a_non_finite_value_in_one_split_poisons_the_whole_row(monkeypatch, splits, where, static):
    """A NaN in one split's keys or values, or a NaN bias there, reaches the merged row: the
    splits' maxima carry a key's and a bias's (POISON); with static ranges quantized on load (a
    small call on a large GPU), the done-counter carries V's."""
    force, _ = splits
    force(4)
    q, k, v = inputs(14, 3, 600, heads=1)
    bias = np.zeros((3, 600), np.float32)
    {"k": k, "v": v, "bias": bias[None, None]}[where][0, 0, 2 if where == "bias" else 450, 5] = np.nan
    recipe = ism.Recipe.per_tensor()
    scales = None
    if static:
        monkeypatch.setattr(api, "_sm_count", lambda device: 10**6)
        scales = qflash.static_scales(recipe, 8.0, 8.0, 8.0, heads=1, head_dim=32, device=t(q).device)
    out = n(qflash.attention(t(q), t(k), t(v), t(bias), recipe=recipe, static=scales))
    nan_rows = np.isnan(out[0, 0]).all(-1)
    assert nan_rows.tolist() == ([False, False, True] if where == "bias" else [True] * 3)
    assert not np.isnan(out[0, 0][~nan_rows]).any()


def test_split_policy_fills_the_gpu_on_decode_shapes(monkeypatch):
    """The first power of two giving 1.5 programs per SM where the row blocks are few, at least
    1024 keys each; none for online rules, calls that fill the GPU already, or off a GPU."""
    spec = api._spec(ism.Recipe.per_tensor(), 128, api.MaskKind.NONE, api.OutKind.FLOAT)
    online = api._spec(ism.Recipe.qflash(), 128, api.MaskKind.NONE, api.OutKind.FLOAT)

    def call(B, H, NQ, NK, device="cuda"):
        return api.Call((B,), B, 1, H, NQ, NK, 128, 0.1, api.MaskKind.NONE, torch.device(device))
    assert api._splits(spec, call(1, 32, 1, 32768, "cpu"), 64) == 1
    monkeypatch.setattr(api, "_sm_count", lambda device: 132 if device.type == "cuda" else 0)
    assert api._splits(spec, call(8, 32, 1, 32768), 64) == 1  # D1: 256 row blocks, 1.9 per SM
    assert api._splits(spec, call(1, 32, 1, 32768), 64) == 8  # one sequence: 32 row blocks
    assert api._splits(spec, call(8, 8, 4, 32768), 64) == 4  # D2: 64 row blocks of 4 packed heads
    assert api._splits(spec, call(1, 32, 1, 4000), 64) == 2  # at least 1024 keys per split
    assert api._splits(spec, call(2, 32, 4096, 4096), 64) == 1  # L1 fills the GPU
    assert api._splits(online, call(1, 32, 1, 32768), 64) == 1


def test_split_keys_with_per_row_constants_and_packed_groups(splits):
    """Q per token (one constant row per query) and a grouped decode call (4 query heads packed into
    the rows of each K/V head) split the same way, bit-exact."""
    force, _ = splits
    force(6)
    recipe = ism.Recipe.per_tensor().replace(q_granularity=ism.PerToken(), k_granularity=ism.PerHead(),
                                          v_granularity=ism.PerHead())
    q, k, v = inputs(15, 5, 900)
    values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v).values)
    rng = np.random.default_rng(16)
    q = rng.normal(0, 1, (2, 8, 1, 32)).astype(np.float32)
    k, v = (rng.normal(0, 1, (2, 2, 900, 32)).astype(np.float32) for _ in range(2))
    values, _ = qflash.attention_int(t(q), t(k), t(v), enable_gqa=True, recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, enable_gqa=True).values)
