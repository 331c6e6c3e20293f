"""qflash's torch API: SDPA semantics, user errors, torch.compile and the registered ops."""
import numpy as np
import pytest
import torch

import intsoftmax as ism
import qflash

from kernel_utils import DEVICE, n, needs_kernel, t

pytestmark = needs_kernel


def qkv(shape=(2, 3, 49, 32), seed=0, dtype=torch.float32):
    rng = np.random.default_rng(seed)
    return tuple(t(rng.uniform(-3, 3, shape).astype(np.float32), dtype) for _ in range(3))


def test_tracks_sdpa():
    q, k, v = qkv((2, 6, 197, 64))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert ism.sqnr_db(n(ref), n(qflash.attention(q, k, v))) > 36


def test_fully_masked_rows_are_zero_and_masks_broadcast_by_strides():
    q, k, v = qkv()
    mask = torch.rand(1, 1, 49, 49, generator=torch.Generator().manual_seed(0)).to(DEVICE) < 0.5
    mask[..., 7, :] = False
    out = qflash.attention(q, k, v, attn_mask=mask)
    assert (out[:, :, 7] == 0).all() and not torch.isnan(out).any()
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    live = torch.ones(49, dtype=torch.bool)
    live[7] = False
    assert ism.sqnr_db(n(ref[:, :, live]), n(out[:, :, live])) > 30
    bias = torch.where(mask, 0.0, float("-inf"))
    assert torch.equal(qflash.attention(q, k, v, attn_mask=bias), out)


def test_swin_windows_with_relative_bias_and_shift_mask():
    """(batch, windows, H, N, D) inputs; relative-position bias (H, N, N) plus the shifted-window
    mask (windows, 1, N, N), added once into a (windows, H, N, N) bias that broadcasts over batch."""
    batch, windows, heads, n_tok, d = 2, 4, 3, 49, 32
    q, k, v = qkv((batch, windows, heads, n_tok, d), seed=3)
    rng = np.random.default_rng(3)
    rel = rng.normal(0, 1, (heads, n_tok, n_tok)).astype(np.float32)
    shift = np.where(rng.random((windows, 1, n_tok, n_tok)) < 0.2, -100.0, 0.0).astype(np.float32)
    bias = rel[None] + shift
    recipe = ism.Recipe.per_tensor()
    values, _ = qflash.attention_int(q, k, v, attn_mask=t(bias), recipe=recipe)
    golden = recipe.attention_int(n(q), n(k), n(v), attn_bias=bias)
    np.testing.assert_array_equal(n(values), golden.values)
    assert values.shape == (batch, windows, heads, n_tok, d)


def test_non_contiguous_layouts_use_strides():
    q, k, v = qkv((2, 49, 3, 32))  # (B, N, H, D) storage
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    out = qflash.attention(qt, kt, vt)
    assert torch.equal(out, qflash.attention(qt.contiguous(), kt.contiguous(), vt.contiguous()))


def test_torch_compile_fullgraph():
    q, k, v = qkv()
    eager = qflash.attention(q, k, v)
    compiled = torch.compile(lambda q, k, v: qflash.attention(q, k, v) + 1.0, fullgraph=True)
    assert torch.equal(compiled(q, k, v), eager + 1.0)


def test_registered_ops_pass_opcheck():
    q, k, v = qkv((1, 2, 17, 16))
    json = ism.Recipe.per_tensor().to_json()
    torch.library.opcheck(torch.ops.qflash.attention.default, (q, k, v, None, 0.25, False, json))
    q8 = (q * 10).to(torch.int8)
    s = torch.ones(1, device=DEVICE)
    torch.library.opcheck(torch.ops.qflash.attention_int8.default, (q8, q8, q8, s, s, s, None, 0.25, False, json))


@pytest.mark.parametrize("call, exc, match", [
    (lambda q, k, v: qflash.attention(q.int(), k.int(), v.int()), TypeError, "dtype torch.int32"),
    (lambda q, k, v: qflash.attention(q, k.half(), v), TypeError, "dtypes differ"),
    (lambda q, k, v: qflash.attention(q[None, None], k[None, None], v[None, None]), ValueError,
     r"\(B1, B2, H, N, D\), got \(1, 1, 2, 3, 49, 32\)"),
    (lambda q, k, v: qflash.attention(q[..., :24], k[..., :24], v[..., :24]), ValueError, "head dim 24"),
    (lambda q, k, v: qflash.attention(q, k[..., :16], v), ValueError, "shapes do not match|head dims differ"),
    (lambda q, k, v: qflash.attention(q, k, v[:, :, :10]), ValueError, "shapes do not match"),
    (lambda q, k, v: qflash.attention(q, k, v, scale=0.0), ValueError, "scale=0.0"),
    (lambda q, k, v: qflash.attention(q[:0], k[:0], v[:0]), ValueError, "empty input"),
    (lambda q, k, v: qflash.attention(q, k, v, attn_mask=torch.ones(5, 49, device=DEVICE)), ValueError,
     "does not broadcast"),
    (lambda q, k, v: qflash.attention(q, k, v, attn_mask=torch.ones(49, 49, dtype=torch.int64, device=DEVICE)),
     TypeError, "attn_mask dtype"),
    (lambda q, k, v: qflash.attention(q, k, v, recipe="default"), TypeError, "recipe must be"),
    (lambda q, k, v: qflash.attention(q, k, v, recipe=ism.Recipe(exp=ism.ExactExp())), ValueError,
     "does not compile exact_exp"),
    (lambda q, k, v: qflash.attention(q, k, v, recipe=ism.Recipe(accumulation=ism.NaiveScaleAccumulation())),
     ValueError, "limit of 64 keys|does not compile"),
    (lambda q, k, v: qflash.attention(q, k, v, static="calibrated"), TypeError, "StaticScales"),
    (lambda q, k, v: qflash.attention_int8(q, k, v, None, None, None), TypeError, "dtype torch.float32"),
])
def test_user_errors_name_the_problem(call, exc, match):
    q, k, v = qkv()
    with pytest.raises(exc, match=match) as info:
        call(q, k, v)
    assert not isinstance(info.value, AssertionError)


def test_sequence_longer_than_the_recipe_allows_is_rejected():
    recipe = ism.Recipe.per_tensor().replace(p_bits=14)  # 1024 keys
    q = torch.zeros(1, 1, 1, 16, device=DEVICE)
    k = torch.zeros(1, 1, 1025, 16, device=DEVICE)
    with pytest.raises(ValueError, match="sequence length 1025 exceeds this recipe's limit of 1024"):
        qflash.attention(q, k, k, recipe=recipe)


def test_int8_scale_shapes_are_checked():
    q8 = torch.zeros(2, 3, 10, 16, dtype=torch.int8, device=DEVICE)
    s1 = torch.ones(1, device=DEVICE)
    with pytest.raises(ValueError, match=r"s_q has shape \(6,\); per_tensor\(\) needs \(1,\)"):
        qflash.attention_int8(q8, q8, q8, torch.ones(6, device=DEVICE), s1, s1)
    with pytest.raises(ValueError, match="out_scale"):
        qflash.attention_int8(q8, q8, q8, s1, s1, s1, out_scale=-1.0)


def test_static_scales_validate():
    with pytest.raises(ValueError, match="Q's ranges are measured per call; give amax_k and amax_v, and amax_q=None"):
        qflash.static_scales(ism.Recipe.per_tensor().replace(q_granularity=ism.PerToken()), 1.0, 1.0, 1.0,
                             heads=2, head_dim=32)
    with pytest.raises(ValueError, match="amax_q has 3 values; per_head"):
        qflash.static_scales(ism.Recipe.per_tensor().replace(q_granularity=ism.PerHead()), [1, 2, 3], 1.0, 1.0,
                             heads=2, head_dim=32)
    static = qflash.static_scales(None, 3.0, 3.0, 3.0, heads=3, head_dim=32, device=DEVICE)
    q, k, v = qkv()
    with pytest.raises(ValueError, match="static scales were built for"):
        qflash.attention(q, k, v, scale=0.5, static=static)
    assert qflash.attention(q, k, v, static=static).shape == q.shape


def test_sdpa_signature_positions_and_flags():
    """SDPA's positional order (attn_mask, dropout_p, is_causal, scale, enable_gqa); what qflash
    cannot do raises, naming the fix."""
    q, k, v = (t(np.random.default_rng(i).normal(0, 1, (1, 2, 40, 32)).astype(np.float32)) for i in range(3))
    by_name = qflash.attention(q, k, v, scale=0.3)
    assert torch.equal(qflash.attention(q, k, v, None, 0.0, False, 0.3), by_name)
    with pytest.raises(ValueError, match=r"dropout_p=0.1: qflash is an inference op"):
        qflash.attention(q, k, v, None, 0.1)
    with pytest.raises(ValueError, match="is_causal=True takes no attn_mask"):
        qflash.attention(q, k, v, torch.ones((40, 40), dtype=torch.bool, device=DEVICE), is_causal=True)
    with pytest.raises(TypeError, match="is_causal must be a bool"):
        qflash.attention(q, k, v, is_causal=1)
    assert torch.equal(qflash.attention(q, k, v, enable_gqa=True, scale=0.3), by_name)  # equal heads: no grouping
    causal = qflash.attention(q, k, v, is_causal=True)
    mask = torch.ones((40, 40), dtype=torch.bool, device=DEVICE).tril()
    assert torch.equal(causal, qflash.attention(q, k, v, attn_mask=mask))


def test_inputs_that_require_grad_are_rejected():
    q = t(np.ones((1, 1, 8, 16), np.float32)).requires_grad_()
    with pytest.raises(ValueError, match="inference-only"):
        qflash.attention(q, q, q)
    with torch.no_grad():
        assert qflash.attention(q, q, q).shape == q.shape


def test_static_scales_validate_their_numbers_and_copy_the_ranges():
    for kwargs, match in ((dict(heads=0, head_dim=32), "heads=0"), (dict(heads=2, head_dim=0), "head_dim=0"),
                          (dict(heads=2, head_dim=32, scale=0.0), "scale=0.0"),
                          (dict(heads=2, head_dim=32, out_scale=float("nan")), "out_scale=nan")):
        with pytest.raises(ValueError, match=match):
            qflash.static_scales(None, 1.0, 1.0, 1.0, device=DEVICE, **kwargs)
    with pytest.raises(ValueError, match="finite and non-negative"):
        qflash.static_scales(None, -1.0, 1.0, 1.0, heads=2, head_dim=32, device=DEVICE)
    amax = torch.ones(1)
    static = qflash.static_scales(None, amax, amax, amax, heads=2, head_dim=32, device="cpu")
    amax.mul_(5)
    assert static.amax_q.item() == 1.0


def test_static_int8_scales_and_device_are_checked():
    for scales, match in (((0.0, 1.0, 1.0), "s_q must be positive"), ((1.0, 1.0), "three int8 scales"),
                          ("abc", "three int8 scales"), ((1.0, float("inf"), 1.0), "s_k must be finite")):
        with pytest.raises(ValueError, match=match):
            qflash.static_scales(None, scales=scales, heads=2, head_dim=32, device=DEVICE)
    with pytest.raises(ValueError, match="device='nope' is not a torch device"):
        qflash.static_scales(None, 1.0, 1.0, 1.0, heads=2, head_dim=32, device="nope")


def test_two_and_three_dim_and_float64_inputs_as_sdpa_takes_them():
    """(N, D) and (H, N, D) inputs run as (1, 1, N, D) / (1, H, N, D) and come back in their own
    shape; float64 is quantized from float32, as the golden model does (the integers equal)."""
    rng = np.random.default_rng(21)
    q, k, v = (rng.normal(0, 1, (3, 40, 32)) for _ in range(3))  # float64
    recipe = ism.Recipe.per_tensor()
    golden = recipe.attention_int(q, k, v).values
    values, _ = qflash.attention_int(t(q), t(k), t(v), recipe=recipe)
    assert values.shape == (3, 40, 32)
    np.testing.assert_array_equal(n(values), golden)
    out = qflash.attention(t(q), t(k), t(v))
    assert out.dtype == torch.float64 and out.shape == (3, 40, 32)
    four = qflash.attention(*(t(x[None].astype(np.float32)) for x in (q, k, v)))
    assert torch.equal(qflash.attention(*(t(x.astype(np.float32)) for x in (q, k, v))), four[0])
    one = qflash.attention(*(t(x[None, :1].astype(np.float32)) for x in (q, k, v)))  # per-tensor ranges of head 0
    assert torch.equal(qflash.attention(*(t(x[0].astype(np.float32)) for x in (q, k, v))), one[0, 0])
    bias = t(rng.normal(0, 1, (40, 40)))  # float64 bias, broadcast over the heads
    assert qflash.attention(t(q), t(k), t(v), bias).shape == (3, 40, 32)
    with pytest.raises(ValueError, match="more dims than q"):
        qflash.attention(t(q), t(k), t(v), bias[None, None])
    with pytest.raises(ValueError, match=r"must have shape \(N, D\), \(H, N, D\)"):
        qflash.attention(t(q[0, 0]), t(k[0, 0]), t(v[0, 0]))
