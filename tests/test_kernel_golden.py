"""The fused kernel against the golden model, bit for bit (CI: the Triton interpreter on the CPU)."""
import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import intsoftmax as ism
import qflash
from intsoftmax.testing import attention_inputs, recipes
from qflash.kernel import _key_order, _mma_operand

from kernel_utils import DEVICE, assert_float_output, combined_mask, n, needs_kernel, t

pytestmark = needs_kernel
# N up to 300 (1, 49 and 197 drawn often), every head dim; two (batch, head) slices keep the
# interpreter at about a second per example
SMALL = dict(max_n=300, head_dims=(16, 32, 64, 128), max_batch=1, max_heads=2)


def check_equal(recipe, x, dtype=np.float32):
    """qflash.attention_int (device quantization, constants and kernel) == Recipe.attention_int,
    on inputs (and a float bias) of ``dtype``."""
    mask = combined_mask(x.attn_bias, x.attn_mask)
    is_bias = mask is not None and mask.dtype != bool
    if is_bias:
        mask = mask.astype(dtype)
    q, k, v = (a.astype(dtype) for a in (x.q, x.k, x.v))
    golden = recipe.attention_int(q, k, v, attn_bias=mask if is_bias else None,
                                  attn_mask=None if is_bias else mask, scale=x.scale)
    values, _ = qflash.attention_int(t(q), t(k), t(v), None if mask is None else t(mask), scale=x.scale, recipe=recipe)
    np.testing.assert_array_equal(n(values), golden.values)


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(x=attention_inputs(**SMALL), recipe=recipes(kernel_only=True))
def test_kernel_equals_golden(x, recipe):
    check_equal(recipe, x)


@settings(max_examples=10)
@given(x=attention_inputs(**SMALL))
def test_builtin_recipes_equal_golden_with_half_inputs(x):
    for recipe in (ism.Recipe.per_tensor(), ism.Recipe.qflash()):
        check_equal(recipe, x, np.float16)


@pytest.mark.parametrize("n_tokens", [1, 49, 197])
@pytest.mark.parametrize("recipe", [ism.Recipe.per_tensor(), ism.Recipe.qflash(),
                                    ism.Recipe(exp=ism.LutExp2(), accumulation=ism.TwoPass(), p_bits=8)],
                         ids=["default", "qflash", "lut_two_pass"])
def test_odd_lengths(n_tokens, recipe):
    rng = np.random.default_rng(n_tokens)
    q, k, v = (rng.uniform(-4, 4, (1, 2, n_tokens, 64)).astype(np.float32) for _ in range(3))
    values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v).values)


@pytest.mark.parametrize("amplitude", [30.0, 300.0])
def test_large_inputs_saturate_the_fused_multiplier(amplitude):
    """At amplitude 300 a QK unit is worth ~26 octaves: the fused exp's multiplier saturates at
    2**32 - 1, and the device derivation must saturate exactly as the host does."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.normal(0, amplitude, (1, 2, 100, 16)).astype(np.float32) for _ in range(3))
    for recipe in (ism.Recipe.per_tensor(), ism.Recipe.fast()):
        values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
        np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v).values)


def test_long_odd_sequence():
    """N = 577 (ViT-B at 384 px): ten key tiles, the last one padded, and many rescales."""
    rng = np.random.default_rng(577)
    q, k, v = (rng.normal(0, 2, (1, 1, 577, 16)).astype(np.float32) for _ in range(3))
    recipe = ism.Recipe.per_tensor()
    values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v).values)


@pytest.mark.parametrize("p_bits, chunk", [(11, None), (11, 1024), (8, 1024)])
def test_long_context_recipe_past_the_int32_limit(monkeypatch, p_bits, chunk):
    """Recipe.long_context past the default's 8196 keys, on nearly flat attention (|logit| <= 0.03
    nats, so every P >= 0.97 P_max and, at 11 bits, l >= 12000 * 0.97 * 2047 > 2**24): the
    kernel's wide sum (128 hi + lo: P >> 7's MMAs into hi, lo's bits above the seventh carried
    into hi every 66048 keys at 11 bits, so not in 12000; here also every 1024, and for 8-bit P,
    whose offset form sums negative values; any chunk within the int32 bound is exact) and its
    narrowing of l to 24 bits equal the golden model; the default recipe rejects the length,
    naming the long-context recipe."""
    if chunk:
        monkeypatch.setattr(qflash.spec.KernelSpec, "chunk_keys", lambda self, block_n: chunk)
    rng = np.random.default_rng(12000)
    q = rng.uniform(-0.0075, 0.0075, (1, 1, 8, 16)).astype(np.float32)
    k = rng.uniform(-1, 1, (1, 1, 12000, 16)).astype(np.float32)
    v = rng.normal(0, 1, (1, 1, 12000, 16)).astype(np.float32)
    recipe = ism.Recipe.long_context().replace(p_bits=p_bits)
    values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v).values)
    with pytest.raises(ValueError, match="long_context"):
        qflash.attention_int(t(q), t(k), t(v), recipe=ism.Recipe.per_tensor())


@pytest.mark.parametrize("p_bits, rows, causal, block_n", [(11, "tensor", False, 64), (11, "token", True, 64),
                                                            (8, "tensor", True, 64), (7, "token", False, 64),
                                                            (14, "tensor", False, 64), (11, "tensor", False, 16)])
def test_online_wide_rule_without_a_first_pass(p_bits, rows, causal, block_n):
    """ScaleRelease(acc_bits=64): the wide sums (128 hi + lo) released exactly when a tile moves the
    row max (two int64 products), in the recipe's 64-key tiles (also the last, padded one: N =
    300), 8-bit P split rather than offset, Q per token (per-row release multipliers), causal
    rows; the moves come from inputs whose scale grows along the keys. Equal to the golden model."""
    recipe = ism.Recipe.long_context().replace(accumulation=ism.ScaleRelease(acc_bits=64), p_bits=p_bits,
                                               block_n=block_n)  # (16-key tiles padded to the MMA's 32)
    if rows == "token":
        recipe = recipe.replace(q_granularity=ism.PerToken())
    rng = np.random.default_rng(p_bits)
    q = rng.normal(0, 2, (1, 2, 130, 64)).astype(np.float32)
    k = (rng.normal(0, 1, (1, 2, 300, 64)) * np.linspace(0.2, 3, 300)[:, None]).astype(np.float32)
    v = rng.normal(0, 1, (1, 2, 300, 64)).astype(np.float32)
    if causal:
        k, v = k[:, :, :130], v[:, :, :130]
    values, _ = qflash.attention_int(t(q), t(k), t(v), is_causal=causal, recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, is_causal=causal).values)


@pytest.mark.parametrize("p_bits", [9, 11, 14])
@pytest.mark.parametrize("causal", [False, True])
def test_high_part_sums_at_head_dim_128(p_bits, causal):
    """At D = 128, 9-14-bit P's high part accumulates in its own sums (KernelSpec.hi_sum), added
    in the epilogue: two full key tiles, a 32-key tail tile and a padded one (N = 150), a second
    row block, causal rows; the integers equal the golden model's."""
    recipe = ism.Recipe.per_tensor().replace(p_bits=p_bits)
    assert qflash.spec.KernelSpec.build(recipe, 128, qflash.spec.MaskKind.NONE, qflash.spec.OutKind.INT32).hi_sum
    rng = np.random.default_rng(p_bits)
    q, k, v = (rng.normal(0, 2, (1, 1, 150, 128)).astype(np.float32) for _ in range(3))
    values, _ = qflash.attention_int(t(q), t(k), t(v), is_causal=causal, recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, is_causal=causal).values)


@pytest.mark.parametrize("keys", [128, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_row_max_pass_in_wide_tiles(monkeypatch, keys, causal):
    """The row-max pass of a kernel with the hi_sum sums reads its full tiles of int8 K ``keys`` at
    a time (spec.ROW_MAX_KEYS; float K quantized on load at most 128), then pass 2's 64-key tiles
    and the 32-key tail tiles (N = 350: one or two wide tiles, a 64-key tile or none, a partial
    tail): the max, and so the float pair, is the golden model's, for the default and the
    long-context recipe, full and causal rows, on int8 inputs and on float ones."""
    monkeypatch.setitem(qflash.spec.ROW_MAX_KEYS, 128, keys)
    rng = np.random.default_rng(keys)
    q, k, v = (rng.normal(0, 2, (1, 1, 350, 128)).astype(np.float32) for _ in range(3))
    for recipe in (ism.Recipe.per_tensor(), ism.Recipe.long_context()):
        spec = qflash.spec.KernelSpec.build(recipe, 128, qflash.spec.MaskKind.NONE, qflash.spec.OutKind.FLOAT)
        assert (spec.row_max_keys(1), spec.row_max_keys(4)) == (keys, 128)
        (q8, s_q), (k8, s_k), (v8, s_v) = recipe.quantize_inputs(q, k, v)
        out = qflash.attention_int8(*(t(x) for x in (q8, k8, v8)), *(t(s.reshape(1)) for s in (s_q, s_k, s_v)),
                                    is_causal=causal, recipe=recipe)
        gold = recipe.attention_int(q, k, v, is_causal=causal)
        assert_float_output(n(out), gold)
        values, _ = qflash.attention_int(t(q), t(k), t(v), is_causal=causal, recipe=recipe)
        np.testing.assert_array_equal(n(values), gold.values)


@pytest.mark.parametrize("alu", [True, False], ids=["dp4a", "ones_mma"])
@pytest.mark.parametrize("head_dim,block_n", [(32, 64), (128, 64), (32, 16)])
def test_row_sums_on_the_alu_or_by_mma(monkeypatch, alu, head_dim, block_n):
    """Two-pass rules' row sums l for 7 and 9-14-bit P (spec.ALU_ROW_SUMS): by dp4a on the MMA
    operands' words, carried per value over the full tiles and added as row vectors in the tail
    tiles, or by MMAs against ones; the same integers as the golden model either way, for 7-bit P,
    11-bit P (its hi_sum form at D = 128), the wide accumulator and a polynomial exp that does not
    fuse the requantization (P unpacked; 7 and 10 bits), over full, 32-key tail and one-tile
    slices, with a boolean mask (a fully masked row: l = 0) and without; also in 16-key tiles,
    padded to the MMA's 32 keys."""
    monkeypatch.setattr(qflash.spec, "ALU_ROW_SUMS", alu)
    config = qflash.api._launch_config
    monkeypatch.setattr(qflash.api, "_launch_config", lambda spec: {**config(spec), "block_n": block_n})
    rng = np.random.default_rng(head_dim)
    poly = ism.Recipe(exp=ism.PolyExp2(), accumulation=ism.TwoPass())
    recipes = (ism.Recipe.fast(), ism.Recipe.per_tensor(), ism.Recipe.long_context(), poly.replace(p_bits=7),
               poly.replace(p_bits=10))
    for recipe in recipes:
        assert qflash.spec.KernelSpec.build(recipe, head_dim, qflash.spec.MaskKind.NONE,
                                            qflash.spec.OutKind.INT32).alu_row_sums == alu
        for nk in (150, 49):
            q, k, v = (rng.normal(0, 2, (1, 2, nk, head_dim)).astype(np.float32) for _ in range(3))
            mask = rng.random((1, 2, nk, nk)) < 0.7
            mask[0, 1, 3] = False
            for m in (None, mask):
                values, _ = qflash.attention_int(t(q), t(k), t(v), None if m is None else t(m), recipe=recipe)
                np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, attn_mask=m).values)


@pytest.mark.parametrize("mma_order", [True, False], ids=["mma_order", "key_order"])
@pytest.mark.parametrize("recipe", [ism.Recipe.per_tensor(), ism.Recipe.fast(), ism.Recipe.fast().replace(p_bits=8),
                                    ism.Recipe.long_context()], ids=["11bit", "7bit", "8bit", "long_context"])
def test_keys_read_in_the_mma_operand_order(monkeypatch, recipe, mma_order):
    """Pass 2 reads K's rows in the order that leaves P where the int8 MMA wants its operand
    (kernel._key_order) or in their own: the same integers as the golden model either way, for 7-bit
    P, 8-bit P's offset form, 11-bit P's two halves and the wide accumulator, over full, 32-key
    and padded key tiles (N = 150) and a Swin-sized one-tile slice (N = 49)."""
    from qflash import kernel
    monkeypatch.setattr(kernel, "MMA_ORDER", mma_order)
    rng = np.random.default_rng(7)
    for shape in ((1, 2, 150, 32), (2, 2, 49, 32)):
        q, k, v = (rng.normal(0, 2, shape).astype(np.float32) for _ in range(3))
        values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
        np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v).values)


@triton.jit
def _mma_key_order(Out, N: tl.constexpr):
    """Out[:N]: the key of each logit column in the MMA order; Out[N:]: those keys relabelled as
    the P . V operand (its columns)."""
    c = tl.arange(0, N)
    keys = _key_order(N, True)
    tl.store(Out + c, keys)
    tl.store(Out + N + c, tl.reshape(_mma_operand(tl.reshape(keys, (1, N)), True), (N,)))


def test_mma_key_order_is_a_permutation_undone_by_the_operand_relabelling():
    """kernel._key_order puts each 32 keys in a permutation, and _mma_operand relabels the
    logit columns back into the keys' own order (the pairing P . V relies on)."""
    out = torch.empty(2 * 64, dtype=torch.int32, device=DEVICE)
    _mma_key_order[(1,)](out, N=64)
    keys, relabelled = out[:64].tolist(), out[64:].tolist()
    assert sorted(keys) == list(range(64)) and keys != list(range(64))
    assert relabelled == list(range(64))


@pytest.mark.parametrize("float_out", ["pair", "rounded"])
def test_float_output_dequantizes_the_pair_or_the_integers(float_out):
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(0, 2, (2, 3, 49, 32)).astype(np.float32) for _ in range(3))
    recipe = ism.Recipe.per_tensor().replace(float_out=float_out)
    golden = recipe.attention_int(q, k, v)
    out = qflash.attention(t(q), t(k), t(v), recipe=recipe)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 49, 32)
    # the pair: the golden model's float32 steps, bit for bit; rounded: the integers times s_v 2**-F
    if float_out == "pair":
        assert_float_output(n(out), golden)
        exact = np.where(golden.pair[1] > 0, golden.pair[0] * golden.pair[2].astype(np.float64) / golden.pair[1], 0)
        np.testing.assert_allclose(n(out), exact, rtol=2**-22, atol=0)  # three float32 roundings of acc s_v / l
        step = np.abs(n(out) - golden.values * golden.scale) / golden.scale  # not the rounded output: up to half an LSB
        assert 0.25 < step.max() <= 0.51
    else:
        np.testing.assert_allclose(n(out), golden.dequantize(), rtol=2**-23, atol=0)
    half = qflash.attention(t(q, torch.float16), t(k, torch.float16), t(v, torch.float16), recipe=ism.Recipe.per_tensor())
    assert half.dtype == torch.float16
    ref = ism.Recipe.per_tensor().attention(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16))
    np.testing.assert_allclose(n(half).astype(np.float64), ref, rtol=2**-10, atol=2**-24)


@settings(max_examples=10)
@given(x=attention_inputs(max_n=120, head_dims=(32, 64), bias=False, mask=False), data=st.data())
def test_int8_inputs_and_int8_output(x, data):
    recipe = data.draw(recipes(kernel_only=True, p_bits=st.integers(7, 11)))
    (q8, s_q), (k8, s_k), (v8, s_v) = recipe.quantize_inputs(x.q, x.k, x.v)
    B, H = x.q.shape[:2]

    def flat(s, g):  # the API's scale shapes: (1,) per tensor, (B*H,) per head, (B*H, N) per row
        if isinstance(g, ism.PerTensor):
            return s.reshape(1)
        s = np.broadcast_to(s, (B, H) + s.shape[2:])
        return s.reshape(B * H) if isinstance(g, ism.PerHead) else s.reshape(B * H, -1)

    grans = (recipe.q_granularity, recipe.k_granularity, recipe.v_granularity)
    args = [t(a) for a in (q8, k8, v8)] + [t(flat(s, g)) for s, g in zip((s_q, s_k, s_v), grans)]
    golden = recipe.attention_int(x.q, x.k, x.v, scale=x.scale)
    out = qflash.attention_int8(*args, scale=x.scale, recipe=recipe)
    if golden.pair is not None:
        assert_float_output(n(out), golden)
    else:
        np.testing.assert_allclose(n(out), golden.dequantize(), rtol=2**-23, atol=0)
    out_scale = float(np.abs(golden.dequantize()).max() / 100 + 1e-6)
    golden8 = recipe.attention_int(x.q, x.k, x.v, scale=x.scale, out_scale=out_scale)
    out8 = qflash.attention_int8(*args, scale=x.scale, recipe=recipe, out_scale=out_scale)
    assert out8.dtype == torch.int8
    np.testing.assert_array_equal(n(out8), golden8.values)


def test_static_scales_equal_dynamic_scales_with_the_same_ranges():
    rng = np.random.default_rng(2)
    q, k, v = (rng.uniform(-3, 3, (2, 4, 49, 32)).astype(np.float32) for _ in range(3))
    recipe = ism.Recipe.per_tensor().replace(q_granularity=ism.PerHead(), k_granularity=ism.PerHead())
    amax = [np.abs(x).max(axis=(0, 2, 3)) for x in (q, k)] + [np.abs(v).max()]
    static = qflash.static_scales(recipe, *amax, heads=4, head_dim=32, device=DEVICE)
    values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe, static=static)
    gold = recipe.attention_int(q, k, v, amax=(amax[0].reshape(1, 4, 1, 1), amax[1].reshape(1, 4, 1, 1), amax[2]))
    np.testing.assert_array_equal(n(values), gold.values)


@pytest.mark.parametrize("q_gran", [ism.PerToken(), ism.PerBlock(size=16)], ids=["per_token", "per_block"])
def test_static_k_v_beside_a_q_measured_per_call(q_gran):
    """A Q per token (or block) keeps its ranges per call beside calibrated K and V ranges: the
    golden model's amax=(None, amax_k, amax_v), bit for bit, with float16 inputs and a bias."""
    rng = np.random.default_rng(12)
    q, k, v = (rng.uniform(-3, 3, (2, 4, 70, 32)).astype(np.float16) for _ in range(3))
    bias = rng.normal(0, 1, (70, 70)).astype(np.float32)
    recipe = ism.Recipe.per_tensor().replace(q_granularity=q_gran, k_granularity=ism.PerHead())
    amax_k, amax_v = np.full(4, 3.5, np.float32), np.float32(3.0)
    static = qflash.static_scales(recipe, None, amax_k, amax_v, heads=4, head_dim=32, device=DEVICE)
    assert static.table is None and static.amax_q is None
    values, _ = qflash.attention_int(t(q), t(k), t(v), t(bias), recipe=recipe, static=static)
    gold = recipe.attention_int(q, k, v, attn_bias=bias, amax=(None, amax_k.reshape(1, 4, 1, 1), amax_v))
    np.testing.assert_array_equal(n(values), gold.values)
    out = n(qflash.attention(t(q), t(k), t(v), t(bias), recipe=recipe, static=static))
    np.testing.assert_allclose(out.astype(np.float64), gold.dequantize(), rtol=2**-10, atol=2**-24)  # fp16 output
    with pytest.raises(ValueError, match="amax_q=None"):
        qflash.static_scales(recipe, 1.0, amax_k, amax_v, heads=4, head_dim=32, device=DEVICE)
    with pytest.raises(ValueError, match="no out_scale"):
        qflash.static_scales(recipe, None, amax_k, amax_v, heads=4, head_dim=32, out_scale=0.1, device=DEVICE)
    q8 = t(np.zeros((2, 4, 70, 32), np.int8))
    with pytest.raises(ValueError, match="pass s_q, s_k, s_v instead of static"):
        qflash.attention_int8(q8, q8, q8, recipe=recipe, static=static)


def _per_token_q_case(seed):
    """float32 q (2, 3, 100, 32) with rows of scales 0.1-4, k and v (2, 3, 90, 32), a float bias, and
    the recipe with Q per token, K and V per head."""
    rng = np.random.default_rng(seed)
    q = (rng.normal(0, 1, (2, 3, 100, 32)) * rng.uniform(0.1, 4, (2, 3, 100, 1))).astype(np.float32)
    k, v = (rng.normal(0, 2, (2, 3, 90, 32)).astype(np.float32) for _ in range(2))
    bias = rng.normal(0, 1, (100, 90)).astype(np.float32)
    recipe = ism.Recipe.per_tensor().replace(q_granularity=ism.PerToken(), k_granularity=ism.PerHead(),
                                          v_granularity=ism.PerHead())
    return q, k, v, bias, recipe


@pytest.mark.parametrize("static", [False, True], ids=["measured_k_v", "static_k_v"])
def test_q_per_token_measured_on_load(monkeypatch, static):
    """Small float calls with Q per token: each attention program measures its own rows' ranges on
    load and derives one constant row per query (no quantization and no table launch), beside
    static or measured per-head K and V ranges; the float output is the golden model's bit for bit,
    with a float bias; a NaN in one Q row makes that row NaN."""
    from qflash import api, kernel
    monkeypatch.setattr(api, "_sm_count", lambda device: 10**6)
    monkeypatch.setattr(api._backend()[0], "quantize_qkv", lambda *a, **k: pytest.fail("quantization launch"))
    monkeypatch.setattr(api._backend()[0], "table", lambda *a, **k: pytest.fail("table launch"))
    rows = []
    launch = kernel.launch
    monkeypatch.setattr(kernel, "launch", lambda *a, **k: rows.append(k["q_rows"]) or launch(*a, **k))
    q, k, v, bias, recipe = _per_token_q_case(101)
    amax_k, amax_v = np.full(3, 7.0, np.float32), np.full(3, 8.0, np.float32)
    scales = qflash.static_scales(recipe, None, amax_k, amax_v, heads=3, head_dim=32, device=DEVICE) if static \
        else None
    out = n(qflash.attention(t(q), t(k), t(v), t(bias), recipe=recipe, static=scales))
    gold = recipe.attention_int(q, k, v, attn_bias=bias, amax=(None, amax_k.reshape(3, 1, 1),
                                                               amax_v.reshape(3, 1, 1)) if static else None)
    assert_float_output(out, gold)
    assert rows == [True]
    q[1, 2, 7, 3] = np.nan
    out = n(qflash.attention(t(q), t(k), t(v), recipe=recipe, static=scales))
    nan_rows = np.isnan(out).all(-1)
    assert np.flatnonzero(nan_rows).tolist() == [(1 * 3 + 2) * 100 + 7] and np.isfinite(out[~nan_rows]).all()


def test_int8_static_table_equals_per_call_table():
    rng = np.random.default_rng(4)
    q, k, v = (rng.uniform(-2, 2, (2, 3, 40, 32)).astype(np.float32) for _ in range(3))
    recipe = ism.Recipe.per_tensor()
    (q8, s_q), (k8, s_k), (v8, s_v) = recipe.quantize_inputs(q, k, v)
    args = [t(a) for a in (q8, k8, v8)]
    per_call = qflash.attention_int8(*args, *(t(x.reshape(1)) for x in (s_q, s_k, s_v)), recipe=recipe,
                                     out_scale=0.01)
    static = qflash.static_scales(recipe, scales=(s_q, s_k, s_v), heads=3, head_dim=32, out_scale=0.01,
                                  device=DEVICE)
    once = qflash.attention_int8(*args, recipe=recipe, out_scale=0.01, static=static)
    np.testing.assert_array_equal(n(once), n(per_call))
    np.testing.assert_array_equal(n(once), recipe.attention_int(q, k, v, out_scale=0.01).values)
    with pytest.raises(ValueError, match="static scales bake out_scale=0.01"):
        qflash.attention_int8(*args, recipe=recipe, static=static)
    with pytest.raises(ValueError, match=r"s_k has 6 values; per_head\(\) needs 3"):
        qflash.static_scales(recipe.replace(k_granularity=ism.PerHead()), scales=(s_q, np.ones(6), s_v), heads=3,
                             head_dim=32, device=DEVICE)


@pytest.mark.parametrize("out_scale", [None, 0.02])
@pytest.mark.parametrize("recipe", [ism.Recipe.per_tensor(), ism.Recipe.qflash(),
                                    ism.Recipe.qflash().replace(accumulation=ism.LazyRescale(headroom_octaves=2))],
                         ids=["default", "qflash", "qflash_lazy"])
def test_device_table_equals_the_golden_table_per_row(recipe, out_scale):
    """The table launch (one row per query: Q per token, K and V per head; 77 rows, so a partial
    last program) writes the golden plan's constants, column by column. Q's scales span 1e-6 to
    30 (QFlash's R from 2**25 down to 1, its req_M down to its floor of 1), so the lazy rule's
    headroom meets both of its limits (``intsoftmax.plan.headroom_limits`` and ``floor(log2(R))``
    octaves)."""
    from qflash import quantize
    from qflash.table import host_table
    recipe = recipe.replace(q_granularity=ism.PerToken(), k_granularity=ism.PerHead(), v_granularity=ism.PerHead())
    rng = np.random.default_rng(77)
    B, H, N = 2, 3, 77
    s_q = (10.0 ** rng.uniform(-6, np.log10(30), (B, H, N, 1))).astype(np.float32)
    s_k, s_v = (rng.uniform(0.001, 0.1, (B, H, 1, 1)).astype(np.float32) for _ in range(2))
    plan = recipe.plan(s_q, s_k, 0.125, s_v, out_scale)
    want = host_table(recipe, plan, B, H, N, s_v=s_v)
    got = quantize.table(recipe, t(s_q.reshape(B * H, N)), t(s_k.reshape(-1)), t(s_v.reshape(-1)), 0.125, B, H, N,
                         out_scale)
    assert got.shape == want.shape
    np.testing.assert_array_equal(n(got), want)


@pytest.mark.parametrize("n_tokens", [5, 49, 197])
@pytest.mark.parametrize("recipe", [ism.Recipe.per_tensor(), ism.Recipe.fast(), ism.Recipe.fast().replace(p_bits=8)],
                         ids=["default", "fast", "fast_p8"])
def test_v_padding_carries_no_weight(n_tokens, recipe):
    """V stored (B, H, D, N padded to 16) with junk in the padding, as a (B, H, N, D) view: the
    kernel reads the padding 16 keys at a time (readable_keys) and must give it no weight."""
    rng = np.random.default_rng(n_tokens)
    q, k, v = (rng.uniform(-4, 4, (1, 2, n_tokens, 32)).astype(np.float32) for _ in range(3))
    (q8, s_q), (k8, s_k), (v8, s_v) = recipe.quantize_inputs(q, k, v)
    n16 = -(-n_tokens // 16) * 16
    store = rng.integers(-128, 128, (1, 2, 32, n16)).astype(np.int8)
    store[..., :n_tokens] = np.swapaxes(v8, -1, -2)
    v_view = t(store)[..., :n_tokens].transpose(-1, -2)
    assert qflash.kernel.readable_keys(v_view) == n16
    scales = [t(np.asarray(s, np.float32).reshape(1)) for s in (s_q, s_k, s_v)]
    out = qflash.attention_int8(t(q8), t(k8), v_view, *scales, recipe=recipe, out_scale=0.01)
    np.testing.assert_array_equal(n(out), recipe.attention_int(q, k, v, out_scale=0.01).values)


def test_readable_keys_only_from_padded_storage():
    from qflash.kernel import readable_keys
    padded = torch.zeros((2, 3, 32, 64), dtype=torch.int8)
    assert readable_keys(padded[..., :49].transpose(-1, -2)) == 64  # rounded up to 16: 64
    assert readable_keys(padded[..., :33].transpose(-1, -2)) == 48
    assert readable_keys(padded[..., :48].transpose(-1, -2)) == 48
    tight = torch.zeros((2, 3, 32, 49), dtype=torch.int8)  # rows of 49 keys: no 16-byte rows
    assert readable_keys(tight.transpose(-1, -2)) == 49
    assert readable_keys(torch.zeros((2, 3, 49, 32), dtype=torch.int8)) == 49  # keys not contiguous
    short = torch.zeros((2 * 3 * 32 - 1) * 64 + 49, dtype=torch.int8)  # storage ends at the last key: 64 would overrun
    assert readable_keys(short.as_strided((2, 3, 49, 32), (3 * 32 * 64, 32 * 64, 1, 64))) == 49


CAUSAL_RECIPES = [ism.Recipe.per_tensor(), ism.Recipe.fast().replace(p_bits=8), ism.Recipe.qflash(),
                  ism.Recipe(exp=ism.PolyExp2(), accumulation=ism.ScaleRelease(), block_n=32)]


@pytest.mark.parametrize("nq, nk", [(150, 150), (49, 49), (70, 200), (200, 70), (1, 5)])
@pytest.mark.parametrize("recipe", CAUSAL_RECIPES, ids=["default", "fast_p8", "qflash", "poly_release_bn32"])
def test_causal_equals_golden(nq, nk, recipe):
    """is_causal: tiles below a row block's diagonal unmasked, the diagonal ones masked by index,
    the ones past it skipped; SDPA's top-left alignment when Nq != Nk."""
    rng = np.random.default_rng(nq * 1000 + nk)
    q = rng.normal(0, 2, (1, 2, nq, 32)).astype(np.float32)
    k, v = (rng.normal(0, 2, (1, 2, nk, 32)).astype(np.float32) for _ in range(2))
    values, _ = qflash.attention_int(t(q), t(k), t(v), is_causal=True, recipe=recipe)
    golden = recipe.attention_int(q, k, v, is_causal=True)
    np.testing.assert_array_equal(n(values), golden.values)
    masked = recipe.attention_int(q, k, v, attn_mask=np.tril(np.ones((nq, nk), bool)))
    np.testing.assert_array_equal(golden.values, masked.values)


@pytest.mark.parametrize("recipe", [ism.Recipe.per_tensor(), ism.Recipe.per_tensor().replace(k_granularity=ism.PerHead(),
                                                                                    v_granularity=ism.PerHead()),
                                    ism.Recipe.qflash()], ids=["default", "per_head_kv", "qflash"])
def test_grouped_query_attention_equals_golden(recipe):
    """enable_gqa: 6 query heads over 2 K/V heads, read by strides (K/V quantized once per
    group), with a bias and with is_causal; the int8 path with per-K/V-head scales."""
    rng = np.random.default_rng(8)
    q = rng.normal(0, 2, (2, 6, 70, 32)).astype(np.float32)
    k, v = (rng.normal(0, 2, (2, 2, 90, 32)).astype(np.float32) for _ in range(2))
    bias = rng.normal(0, 1, (6, 70, 90)).astype(np.float32)
    values, _ = qflash.attention_int(t(q), t(k), t(v), enable_gqa=True, recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, enable_gqa=True).values)
    values, _ = qflash.attention_int(t(q), t(k), t(v), t(bias), enable_gqa=True, recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, bias, enable_gqa=True).values)
    values, _ = qflash.attention_int(t(q), t(k), t(v), is_causal=True, enable_gqa=True, recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, is_causal=True, enable_gqa=True).values)
    k_rep, v_rep = (np.repeat(x, 3, axis=1) for x in (k, v))
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k_rep, v_rep, is_causal=True).values)
    if isinstance(recipe.k_granularity, ism.PerHead):
        (q8, s_q), (k8, s_k), (v8, s_v) = recipe.quantize_inputs(q, k, v)
        out = qflash.attention_int8(t(q8), t(k8), t(v8), t(s_q.reshape(1).astype(np.float32)),
                                    t(s_k.reshape(-1).astype(np.float32)), t(s_v.reshape(-1).astype(np.float32)),
                                    enable_gqa=True, recipe=recipe, out_scale=0.01)
        np.testing.assert_array_equal(n(out), recipe.attention_int(q, k, v, enable_gqa=True, out_scale=0.01).values)


@pytest.mark.parametrize("recipe", [ism.Recipe.per_tensor(), ism.Recipe.per_tensor().replace(q_granularity=ism.PerToken()),
                                    ism.Recipe.qflash(), ism.Recipe.int_flashattention()],
                         ids=["default", "per_token_q", "qflash", "int_flashattention"])
def test_grouped_queries_packed_into_rows(monkeypatch, recipe):
    """Without a mask, a grouped call packs its G query heads into the rows of their K/V head (one
    program reads each K/V tile for all G heads): decode (one query) and prefill shapes, the
    same integers as the golden model's repeated K/V; per-head Q scales and masks keep the unpacked
    form."""
    from qflash import kernel
    shapes = []
    launch = kernel.launch
    monkeypatch.setattr(kernel, "launch", lambda spec, q8, *a, **k: shapes.append(tuple(q8.shape)) or
                        launch(spec, q8, *a, **k))
    rng = np.random.default_rng(9)
    for nq in (1, 30):
        q = rng.normal(0, 2, (2, 8, nq, 32)).astype(np.float32)
        k, v = (rng.normal(0, 2, (2, 2, 150, 32)).astype(np.float32) for _ in range(2))
        shapes.clear()
        if recipe.accumulation.float_softmax:
            out = n(qflash.attention(t(q), t(k), t(v), enable_gqa=True, recipe=recipe))
            np.testing.assert_allclose(out, recipe.attention(q, k, v, enable_gqa=True), atol=0.02 * np.abs(v).max())
        else:
            values, scale = qflash.attention_int(t(q), t(k), t(v), enable_gqa=True, recipe=recipe)
            gold = recipe.attention_int(q, k, v, enable_gqa=True)
            np.testing.assert_array_equal(n(values), gold.values)
            assert n(scale).shape[0] in (1, 16)
        assert shapes[-1] == (2, 2, 4 * nq, 32)
        (q8, s_q), (k8, s_k), (v8, s_v) = recipe.quantize_inputs(q, k, v)  # int8 inputs, scales per K/V head
        if recipe.k_granularity == ism.PerTensor() and not recipe.accumulation.float_softmax:
            s_q = s_q.reshape(16, nq) if s_q.size > 1 else s_q.reshape(1)
            out = qflash.attention_int8(t(q8), t(k8), t(v8), t(s_q.astype(np.float32)), t(s_k.reshape(1)),
                                        t(s_v.reshape(1)), enable_gqa=True, recipe=recipe, out_scale=0.02)
            np.testing.assert_array_equal(n(out), recipe.attention_int(q, k, v, enable_gqa=True, out_scale=0.02).values)
            assert shapes[-1] == (2, 2, 4 * nq, 32)
    per_head_q = ism.Recipe.per_tensor().replace(q_granularity=ism.PerHead())
    shapes.clear()
    values, _ = qflash.attention_int(t(q), t(k), t(v), enable_gqa=True, recipe=per_head_q)
    np.testing.assert_array_equal(n(values), per_head_q.attention_int(q, k, v, enable_gqa=True).values)
    assert shapes[-1] == (2 * 2, 4, 30, 32)  # unpacked: batch (B, H_kv) flattened, G heads of 30 rows


def test_grouped_query_attention_errors():
    q = t(np.ones((1, 6, 8, 16), np.float32))
    k4 = t(np.ones((1, 4, 8, 16), np.float32))
    with pytest.raises(ValueError, match="K and V need the same number of heads, dividing q's"):
        qflash.attention(q, k4, k4, enable_gqa=True)
    with pytest.raises(ValueError, match="shapes do not match"):
        qflash.attention(q, k4[:, :2], k4[:, :2])  # grouped heads without enable_gqa
    with pytest.raises(ValueError, match=r"enable_gqa needs \(B, H, N, D\) inputs"):
        qflash.attention(q[None], k4[None, :, :2], k4[None, :, :2], enable_gqa=True)
    with pytest.raises(ValueError, match="K and V need the same number of heads"):
        ism.Recipe.per_tensor().attention(np.ones((1, 6, 8, 16)), np.ones((1, 4, 8, 16)), np.ones((1, 4, 8, 16)),
                                       enable_gqa=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_give_nan_outputs(bad):
    """No host sync on the device path, so no exception: the (b, h) slices whose inputs hold NaN
    or Inf come out NaN (all of them with per-tensor scales; with the default's per-head
    statistics and ranges, that slice only); the golden model raises."""
    rng = np.random.default_rng(9)
    q, k, v = (rng.normal(0, 1, (2, 3, 20, 16)).astype(np.float32) for _ in range(3))
    k[1, 2, 5, 3] = bad
    per_head = ism.Recipe.per_tensor().replace(q_granularity=ism.PerHead(), k_granularity=ism.PerHead(),
                                            v_granularity=ism.PerHead())
    out = n(qflash.attention(t(q), t(k), t(v), recipe=per_head))
    assert np.isnan(out[1, 2]).all()
    assert np.isfinite(np.delete(out.reshape(6, 20, 16), 5, axis=0)).all()
    assert np.isnan(n(qflash.attention(t(q), t(k), t(v), recipe=ism.Recipe.per_tensor()))).all()
    out = n(qflash.attention(t(q), t(k), t(v)))  # the default: statistics and ranges per head
    assert np.isnan(out[1, 2]).all() and np.isfinite(np.delete(out.reshape(6, 20, 16), 5, axis=0)).all()
    for recipe in (ism.Recipe.per_tensor(), ism.Recipe.default()):
        with pytest.raises(ValueError, match="NaN or inf"):
            recipe.attention(q, k, v)


@pytest.mark.parametrize("granularity, rows", [(ism.PerToken(), [5]), (ism.PerBlock(size=8), list(range(8)))],
                         ids=["per_token", "per_block"])
def test_non_finite_values_in_per_row_ranges_give_nan_rows(granularity, rows):
    """Per-token and per-block ranges are reduced in the quantization launch, where a max skips a
    NaN: the range adds x - x, so a row (block) holding NaN or Inf gets a NaN scale and NaN outputs,
    and only it."""
    rng = np.random.default_rng(19)
    q, k, v = (rng.normal(0, 1, (1, 2, 20, 16)).astype(np.float32) for _ in range(3))
    q[0, 1, 5, 3] = np.nan
    out = n(qflash.attention(t(q), t(k), t(v), recipe=ism.Recipe.per_tensor().replace(q_granularity=granularity)))
    nan_rows = np.isnan(out).all(-1)
    assert np.flatnonzero(nan_rows[0, 1]).tolist() == rows and not nan_rows[0, 0].any()
    assert np.isfinite(out[~nan_rows]).all()


def test_per_channel_v_equals_golden():
    """V per channel (dynamic ranges): the integers are the golden model's, the scales are V's
    column ranges / 127 per (b, h), each output channel is dequantized by its own, and a NaN in one
    column of V makes exactly that channel of that slice NaN (the other channels never read it)."""
    rng = np.random.default_rng(21)
    q, k, v = (rng.normal(0, 1, (2, 3, 70, 32)).astype(np.float32) for _ in range(3))
    v[..., 5] *= 10  # an outlier channel
    recipe = ism.Recipe.per_tensor().replace(v_granularity=ism.PerChannel())
    gold = recipe.attention_int(q, k, v)
    values, scale = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
    np.testing.assert_array_equal(n(values), gold.values)
    np.testing.assert_array_equal(n(scale), gold.scale[:, :, 0, :].reshape(6, 32).astype(np.float32))
    out = n(qflash.attention(t(q), t(k), t(v), recipe=recipe))
    np.testing.assert_allclose(out, gold.dequantize(), rtol=1e-6, atol=1e-7)
    v[1, 2, 9, 7] = np.nan
    out = n(qflash.attention(t(q), t(k), t(v), recipe=recipe))
    assert np.isnan(out[1, 2, :, 7]).all()
    assert np.isfinite(np.delete(out[1, 2], 7, axis=-1)).all() and np.isfinite(out[0]).all()
    with pytest.raises(ValueError, match=r"amax_v has 1 values; per_channel\(\) needs 32 \(one per channel\) or 96"):
        qflash.static_scales(recipe, 1.0, 1.0, 1.0, heads=3, head_dim=32, device=DEVICE)
    with pytest.raises(ValueError, match="no scales=, no out_scale"):
        qflash.static_scales(recipe, 1.0, 1.0, np.ones(32), heads=3, head_dim=32, out_scale=0.1, device=DEVICE)


@pytest.mark.parametrize("per_head", [False, True], ids=["channels", "heads_and_channels"])
def test_static_per_channel_v_equals_golden(per_head):
    """Calibrated V ranges per channel ((D,) or (H, D)): the separate quantization reads them by
    strides (repeated over the batch), each output channel keeps its scale; bit for bit."""
    rng = np.random.default_rng(23)
    q, k, v = (rng.normal(0, 1, (2, 3, 70, 16)).astype(np.float32) for _ in range(3))
    v *= rng.uniform(0.2, 3, (1, 1, 1, 16)).astype(np.float32)
    recipe = ism.Recipe.per_tensor().replace(v_granularity=ism.PerChannel())
    amax_v = (np.abs(v).max(axis=(0, 2)) * 1.1).astype(np.float32)
    amax_v = amax_v if per_head else amax_v.max(0)
    static = qflash.static_scales(recipe, 4.0, 4.0, amax_v, heads=3, head_dim=16, device=DEVICE)
    values, scale = qflash.attention_int(t(q), t(k), t(v), recipe=recipe, static=static)
    gold = recipe.attention_int(q, k, v, amax=(np.float32(4), np.float32(4), amax_v.reshape(-1, 1, 16)))
    np.testing.assert_array_equal(n(values), gold.values)
    assert tuple(scale.shape) == (6, 16)
    out = n(qflash.attention(t(q), t(k), t(v), recipe=recipe, static=static))
    np.testing.assert_allclose(out, gold.dequantize(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("gran", [ism.PerTensor(), ism.PerHead()], ids=["per_tensor", "per_head"])
def test_range_reduction_walks_every_slice(monkeypatch, gran):
    """With fewer range programs than (b, h) slices, each program walks several: the ranges, and so
    the integers, are still the golden model's, and a NaN in the last slice still reaches them."""
    from qflash import quantize as qz
    monkeypatch.setattr(qz, "AMAX_PROGRAMS", 2)
    rng = np.random.default_rng(12)
    q, k, v = (rng.normal(0, 1, (3, 2, 20, 16)).astype(np.float32) for _ in range(3))
    k[2, 1] *= 5  # the widest range sits in the last slice
    recipe = ism.Recipe.per_tensor().replace(q_granularity=gran, k_granularity=gran, v_granularity=gran)
    values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v).values)
    k[2, 1, 3, 0] = np.nan
    out = n(qflash.attention(t(q), t(k), t(v), recipe=recipe))
    assert np.isnan(out[2, 1]).all()
    assert np.isnan(out).all() if gran == ism.PerTensor() else np.isfinite(out[:2]).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_with_static_ranges_give_nan_slices(bad):
    """Static ranges never see the data, so the quantization flags each (b, h) slice holding NaN
    or Inf and the kernel makes exactly those slices NaN (int32 values: -2**31)."""
    rng = np.random.default_rng(11)
    q, k, v = (rng.uniform(-1, 1, (2, 3, 20, 16)).astype(np.float32) for _ in range(3))
    static = qflash.static_scales(ism.Recipe.per_tensor(), 1.0, 1.0, 1.0, heads=3, head_dim=16, device=DEVICE)
    for x in (q, k, v):
        x2 = x.copy()
        x2[1, 0, 7, 2] = bad
        args = [t(a) for a in (q, k, v)]
        args[[q is x, k is x, v is x].index(True)] = t(x2)
        out = n(qflash.attention(*args, static=static)).reshape(6, 20, 16)
        assert np.isnan(out[3]).all()
        assert np.isfinite(np.delete(out, 3, axis=0)).all()
        values, _ = qflash.attention_int(*args, static=static)
        assert (n(values).reshape(6, 20, 16)[3] == -2**31).all()
    assert np.isfinite(n(qflash.attention(t(q), t(k), t(v), static=static))).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_positive_infinite_bias_gives_nan_rows(bad):
    """A float bias of NaN or +inf (SDPA: a NaN row) makes its query row NaN - and only that row;
    -inf masks the key. The golden model rejects the bias."""
    rng = np.random.default_rng(14)
    q, k, v = (rng.normal(0, 1, (1, 2, 70, 32)).astype(np.float32) for _ in range(3))
    bias = rng.normal(0, 1, (70, 70)).astype(np.float32)
    bias[5, 9] = bad
    bias[66, 69] = bad  # a row in the second block, a key in the last tile
    for recipe in (ism.Recipe.per_tensor(), ism.Recipe.qflash()):
        out = n(qflash.attention(t(q), t(k), t(v), t(bias), recipe=recipe))
        assert np.isnan(out[:, :, [5, 66]]).all()
        assert np.isfinite(np.delete(out, [5, 66], axis=2)).all()
        values, _ = qflash.attention_int(t(q), t(k), t(v), t(bias), recipe=recipe)
        assert (n(values)[:, :, [5, 66]] == -2**31).all()
        with pytest.raises(ValueError, match=r"NaN or \+inf"):
            recipe.attention(q, k, v, attn_bias=bias)
    ok = np.where(np.isfinite(bias), bias, -np.inf)  # -inf instead: masked, finite output
    assert np.isfinite(n(qflash.attention(t(q), t(k), t(v), t(ok)))).all()


def test_int8_scales_that_are_not_positive_and_finite_give_nan():
    rng = np.random.default_rng(10)
    x8 = t(rng.integers(-127, 128, (1, 2, 20, 16)).astype(np.int8))
    ok = t(np.array([0.01], np.float32))
    for bad in (0.0, -0.01, np.inf, np.nan):
        out = qflash.attention_int8(x8, x8, x8, ok, t(np.array([bad], np.float32)), ok)
        assert np.isnan(n(out)).all(), bad
    assert np.isfinite(n(qflash.attention_int8(x8, x8, x8, ok, ok, ok))).all()


def test_swin_mask_at_small_amplitude_stays_masked():
    """Swin's -100 shifted-window mask at |q|, |k| <= 0.01: a QK unit is worth ~1e-6 nats, so
    -100 nats lies beyond -2**28 units and must mask, not clip to a -0.29-nat bias."""
    rng = np.random.default_rng(12)
    q, k = (rng.uniform(-0.01, 0.01, (2, 3, 49, 32)).astype(np.float32) for _ in range(2))
    v = rng.normal(0, 1, (2, 3, 49, 32)).astype(np.float32)
    bias = np.where(rng.random((2, 1, 49, 49)) < 0.5, -100.0, 0.0).astype(np.float32)
    bias[..., np.arange(49), np.arange(49)] = 0.0  # every row keeps a key
    recipe = ism.Recipe.per_tensor()
    golden = recipe.attention(q, k, v, attn_bias=bias)
    assert ism.sqnr_db(ism.float_attention(q, k, v, attn_bias=bias), golden) >= 40
    values, _ = qflash.attention_int(t(q), t(k), t(v), t(bias), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v, attn_bias=bias).values)


def test_int32_bias_saturates_and_never_wraps():
    """attention_int8's int32 bias (QK units): the golden model's float bias quantized, plus
    extremes near +-2**31 that would wrap if added unchecked."""
    rng = np.random.default_rng(13)
    q, k, v = (rng.normal(0, 1, (1, 2, 40, 32)).astype(np.float32) for _ in range(3))
    recipe = ism.Recipe.per_tensor()
    (q8, s_q), (k8, s_k), (v8, s_v) = recipe.quantize_inputs(q, k, v)
    plan = recipe.plan(s_q, s_k, 32 ** -0.5, s_v, 0.01)
    bias = rng.normal(0, 2, (40, 40)).astype(np.float32)
    bias_int = ism.recipe.quantize_bias(bias, plan, 40, 40).reshape(40, 40)
    bias_int[0, :5] = 2**31 - 1      # saturates at +2**28
    bias_int[1, 3:] = -(2**31)       # masked
    scales = [t(np.asarray(x, np.float32).reshape(1)) for x in (s_q, s_k, s_v)]
    out = qflash.attention_int8(t(q8), t(k8), t(v8), *scales, t(bias_int.astype(np.int32)), recipe=recipe,
                                out_scale=0.01)
    gold = ism.golden.attention_core(recipe, q8, k8, v8, plan, bias_int=bias_int, int8_out=True)
    np.testing.assert_array_equal(n(out), gold)


def test_float32_range_limits():
    """Ranges so small that 127 / amax overflows float32: the golden model rejects them, the device
    path gives NaN. Float64 values beyond float32's range: rejected."""
    q = np.full((1, 1, 8, 16), 1e-38, np.float32)
    with pytest.raises(ValueError, match="127 / amax overflows float32"):
        ism.Recipe.per_tensor().attention(q, q, q)
    assert np.isnan(n(qflash.attention(t(q), t(q), t(q)))).all()
    with pytest.raises(ValueError, match="beyond float32's range"):
        ism.Recipe.per_tensor().attention(np.full((1, 1, 8, 16), 1e39), q, q)
    with pytest.raises(ValueError, match="finite and non-negative"):
        ism.Recipe.per_tensor().attention(q, q, q, amax=(-1.0, 1.0, 1.0))


def test_small_dynamic_calls_derive_their_constants_in_the_kernel(monkeypatch):
    """A small eager float call with measured per-tensor or per-head ranges runs two launches: the
    range reduction, then the attention kernel quantizing on load and deriving its constant row from
    the ranges (no table launch). Its integers (recovered from the float output: below 2**24, times
    a power-of-two multiple of V's scale) equal the golden model's for fused, prescaled (QFlash's)
    and lazy-rescale rows, with a float bias (the row's bias_inv); a NaN input still gives NaN."""
    from qflash import api, kernel
    monkeypatch.setattr(api, "_sm_count", lambda device: 10**6)
    tables = []
    monkeypatch.setattr(api._backend()[0], "table", lambda *a, **k: tables.append(a) or pytest.fail("table launch"))
    derived = []
    launch = kernel.launch
    monkeypatch.setattr(kernel, "launch", lambda *a, **k: derived.append(k["derive_scale"]) or launch(*a, **k))
    rng = np.random.default_rng(100)
    q = rng.normal(0, 2, (2, 3, 100, 32)).astype(np.float32)
    k, v = (rng.normal(0, 2, (2, 3, 90, 32)).astype(np.float32) for _ in range(2))
    bias = rng.normal(0, 1, (100, 90)).astype(np.float32)
    per_head = ism.Recipe.per_tensor().replace(q_granularity=ism.PerHead(), k_granularity=ism.PerHead(),
                                            v_granularity=ism.PerHead())
    lazy = ism.Recipe.per_tensor().replace(accumulation=ism.LazyRescale(headroom_octaves=2))
    for recipe in (ism.Recipe.per_tensor(), per_head, ism.Recipe.qflash(), lazy):
        out = n(qflash.attention(t(q), t(k), t(v), t(bias), recipe=recipe))
        assert_float_output(out, recipe.attention_int(q, k, v, attn_bias=bias), err_msg=recipe.name)
    assert derived == [pytest.approx(32 ** -0.5)] * 4 and not tables
    k[1, 2, 5, 3] = np.nan
    out = n(qflash.attention(t(q), t(k), t(v), recipe=per_head))
    assert np.isnan(out[1, 2]).all() and np.isfinite(out[0]).all()


@pytest.mark.parametrize("n_q,n_k,dtype,d,small_gpu", [
    (49, 49, torch.float16, 32, False), (20, 300, torch.bfloat16, 64, False), (64, 64, torch.float32, 128, False),
    (1, 70, torch.float64, 16, False), (100, 100, torch.float16, 32, False), (150, 200, torch.float16, 64, True)])
def test_static_ranges_quantized_on_load_equal_golden(monkeypatch, n_q, n_k, dtype, d, small_gpu):
    """Static ranges with one row block per slice (<= 64 queries), or few enough programs for the
    GPU (``small_gpu``: every call counts as small), make the kernel quantize q, k and v as it
    loads them (one launch; with several row blocks each quantizes K twice and V again); else the
    quantization launch runs first. Both equal the golden model's integers, for every input
    dtype, per-tensor and per-head ranges, a bias, GQA and an online rule."""
    from qflash import api
    if small_gpu:
        monkeypatch.setattr(api, "_sm_count", lambda device: 10**6)
        assert api._on_load(api.Call((2,), 2, 1, 4, n_q, n_k, d, 1.0, None, torch.device(DEVICE)))
    rng = np.random.default_rng(n_q + n_k)
    q = rng.uniform(-3, 3, (2, 4, n_q, d))
    k, v = (rng.uniform(-3, 3, (2, 4, n_k, d)) for _ in range(2))
    q, k, v = (n(t(x.astype(np.float32)).to(dtype).to(torch.float64)) for x in (q, k, v))  # values dtype holds
    bias = rng.normal(0, 1, (n_q, n_k)).astype(np.float32)
    per_head = ism.Recipe.per_tensor().replace(q_granularity=ism.PerHead(), k_granularity=ism.PerHead(),
                                            v_granularity=ism.PerHead())
    for recipe in (ism.Recipe.per_tensor(), per_head, ism.Recipe.qflash()):
        per = recipe.q_granularity.block()[0] is not None
        amax = [np.abs(x).max(axis=(0, 2, 3)) if per else np.abs(x).max() * 1.1 for x in (q, k, v)]
        static = qflash.static_scales(recipe, *amax, heads=4, head_dim=d, device=DEVICE)
        values, _ = qflash.attention_int(t(q).to(dtype), t(k).to(dtype), t(v).to(dtype), t(bias), recipe=recipe,
                                         static=static)
        shaped = [a.reshape(1, 4, 1, 1) if per else a for a in amax]
        gold = recipe.attention_int(q, k, v, attn_bias=bias, amax=tuple(shaped))
        np.testing.assert_array_equal(n(values), gold.values, err_msg=f"{recipe.name} {dtype}")
    static = qflash.static_scales(None, 3.0, 3.0, 3.0, heads=4, head_dim=d, device=DEVICE)
    grouped = qflash.attention_int(t(q).to(dtype), t(k[:, :2]).to(dtype), t(v[:, :2]).to(dtype), enable_gqa=True,
                                   static=static)[0]
    gold = ism.Recipe.per_tensor().attention_int(q, k[:, :2], v[:, :2], enable_gqa=True, amax=(3.0, 3.0, 3.0))
    np.testing.assert_array_equal(n(grouped), gold.values)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("keys", ["one_tile", "key_tiles"])
def test_last_rows_in_their_own_launch(monkeypatch, causal, keys):
    """A last row block of at most 16 rows runs as a second launch of 16-row programs starting at
    row ``full`` (ViT's 197 queries: 3 x 64 + 5), its 197 keys in one 256-key tile or in 64-key
    tiles (``kernel.tail_config``): the same integers and float output as one
    launch and as the golden model, with Q per token, a float bias or the causal mask; 11-bit ``P``
    (its two MMAs per sum) in the causal case."""
    from qflash import api, kernel
    rng = np.random.default_rng(31)
    q = rng.normal(0, 1, (1, 2, 197, 32)).astype(np.float32)
    k, v = (rng.normal(0, 1, (1, 2, 197, 32)).astype(np.float32) for _ in range(2))
    bias = None if causal else rng.normal(0, 2, (197, 197)).astype(np.float32)
    recipe = (ism.Recipe.per_tensor() if causal else ism.Recipe.fast()).replace(q_granularity=ism.PerToken())
    monkeypatch.setattr(kernel, "TAIL_ONE_TILE_KEYS", 256 if keys == "one_tile" else 0)
    launches = []
    launch = kernel.launch
    monkeypatch.setattr(kernel, "launch", lambda *a, **kw: launches.append(kw["tail_block_m"]) or launch(
        *a, **kw, launcher=lambda fn, grid, *args, **opts: launches.append((grid[0], opts["BLOCK_M"], args[-1],
                                                                            opts["BLOCK_N"])) or
        kernel.launch_kernel(fn, grid, *args, **opts)))
    outs = []
    for rows in (0, api.TAIL_ROWS):
        monkeypatch.setattr(api, "_tail_rows", lambda call, block_m, rows=rows: rows)
        values, _ = qflash.attention_int(t(q), t(k), t(v), None if bias is None else t(bias), is_causal=causal,
                                         recipe=recipe)
        outs.append(n(values))
        out = n(qflash.attention(t(q), t(k), t(v), None if bias is None else t(bias), is_causal=causal, recipe=recipe))
        assert_float_output(out, recipe.attention_int(q, k, v, bias, is_causal=causal))
    np.testing.assert_array_equal(outs[1], recipe.attention_int(q, k, v, bias, is_causal=causal).values)
    np.testing.assert_array_equal(outs[0], outs[1])
    # one launch of 4 row blocks of 64 rows from row 0; then 3 of 64 and one of 16 from row 192
    tail_n = 256 if keys == "one_tile" else 64
    assert launches[:2] == [0, (4, 64, 0, 64)] and launches[-3:] == [16, (3, 64, 0, 64), (1, 16, 192, tail_n)]


@pytest.mark.parametrize("batch, heads", [(2, 3), (7, 1)], ids=["even_slabs", "spare_program"])
def test_slices_beyond_one_grid_dimension(monkeypatch, batch, heads):
    """More (batch, head) slices than CUDA's 65535 per grid dimension (Swin-T from batch 342) take
    grid dims 1 and 2: here with the limit lowered to 4, 6 slices run as 2 x 3 and 7 as 2 x 4 (one
    spare program, which stores nothing); attention and the quantization launch stay bit-exact."""
    from qflash import kernel
    monkeypatch.setattr(kernel, "GRID_YZ", 4)
    rng = np.random.default_rng(37)
    q, k, v = (rng.normal(0, 1, (batch, heads, 70, 16)).astype(np.float32) for _ in range(3))
    recipe = ism.Recipe.per_tensor()
    values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
    np.testing.assert_array_equal(n(values), recipe.attention_int(q, k, v).values)
    assert_float_output(n(qflash.attention(t(q), t(k), t(v), recipe=recipe)), recipe.attention_int(q, k, v))


@given(d=st.integers(1, 2**16), n=st.one_of(st.integers(0, 2**31 - 1), st.integers(2**31 - 2**17, 2**31 - 1)))
def test_division_by_the_head_count_is_exact(d, n):
    """The kernel's ``bh // H`` as ``(bh * M) >> s`` (an unsigned 32 x 32 -> 64-bit product) equals
    the integer quotient for every slice index below 2**31; head counts beyond 2**16 are refused."""
    from qflash.kernel import div_magic
    m, s = div_magic(d)
    m &= 0xFFFFFFFF  # the multiplier's uint32 bits, as the kernel's IMAD.WIDE.U32 reads them
    assert (n * m) >> s == n // d
    if n + d < 2**31:  # and the next quotient starts where it should
        assert ((n + d) * m) >> s == n // d + 1
    with pytest.raises(ValueError, match="head count 65537 out of range"):
        div_magic(2**16 + 1)


def test_q_per_token_constants_derived_from_the_scales(monkeypatch):
    """Float output with Q per token on int8 inputs, or quantized apart: no table launch (a per-row
    table is 64 bytes per query); each program derives its rows' constants from s_q, s_k and s_v as
    the table kernel would: bit for bit with the golden model, and a Q row holding NaN gives NaN."""
    from qflash import api
    monkeypatch.setattr(api._backend()[0], "table", lambda *a, **k: pytest.fail("table launch"))
    q, k, v, bias, recipe = _per_token_q_case(43)
    gold = recipe.attention_int(q, k, v, attn_bias=bias)
    assert_float_output(n(qflash.attention(t(q), t(k), t(v), t(bias), recipe=recipe)), gold)
    (q8, s_q), (k8, s_k), (v8, s_v) = recipe.quantize_inputs(q, k, v)
    scales = (t(s_q.reshape(6, 100)), t(np.broadcast_to(s_k, (2, 3, 1, 1)).reshape(6)),
              t(np.broadcast_to(s_v, (2, 3, 1, 1)).reshape(6)))  # the API's (B*H, N) and (B*H,) shapes
    assert_float_output(n(qflash.attention_int8(t(q8), t(k8), t(v8), *scales, t(bias), recipe=recipe)), gold)
    q[1, 2, 7, 3] = np.nan
    out = n(qflash.attention(t(q), t(k), t(v), recipe=recipe))
    assert np.isnan(out[1, 2, 7]).all() and np.isfinite(np.delete(out[1, 2], 7, axis=0)).all()
    assert np.isfinite(out[0]).all()
