"""Exact input transforms (intsoftmax.transforms): exact in real arithmetic, data in a Recipe,
and worth their keep where the inputs have offsets or unbalanced channels."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import intsoftmax as ism
from intsoftmax.transforms import apply_all

ALL = (ism.KeyOffset(), ism.ChannelBalance(), ism.ValueOffset())


def inputs(seed=0, shape=(2, 3, 40, 16)):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.normal(0, 1, shape) for _ in range(3))
    # per-channel key and value offsets, and channels whose q and k ranges differ by 20x
    k += rng.uniform(-5, 5, shape[:-2] + (1, shape[-1]))
    v += rng.uniform(-5, 5, shape[:-2] + (1, shape[-1]))
    q[..., ::4] *= 4.0
    k[..., ::4] /= 5.0
    return q, k, v


@pytest.mark.parametrize("transforms", [(t,) for t in ALL] + [ALL])
def test_transforms_leave_float_attention_unchanged(transforms):
    q, k, v = inputs()
    rng = np.random.default_rng(1)
    bias = rng.normal(0, 2, (40, 40))
    mask = rng.random((3, 40, 40)) < 0.8
    mask[:, 5] = False  # a fully masked row: 0 with and without a value offset
    q2, k2, v2, offset = apply_all(transforms, q, k, v)
    q, k, v = (x.astype(np.float32) for x in (q, k, v))  # the transforms compute in float32
    for kwargs in (dict(attn_bias=bias), dict(attn_mask=mask)):
        ref = ism.float_attention(q, k, v, **kwargs)
        out = ism.float_attention(q2, k2, v2, **kwargs)
        if offset is not None:
            live = mask.any(-1, keepdims=True) if "attn_mask" in kwargs else True
            out = out + np.where(live, offset, 0.0)
        np.testing.assert_allclose(out, ref, rtol=0, atol=5e-6)  # float32 roundings of the rewrite


def test_golden_attention_with_transforms_beats_the_plain_recipe_where_inputs_have_offsets():
    q, k, v = inputs(shape=(1, 6, 197, 64))
    plain = ism.Recipe.per_tensor()
    transformed = plain.replace(transforms=ALL)
    ref = ism.float_attention(q, k, v)
    gain = ism.sqnr_db(ref, transformed.attention(q, k, v)) - ism.sqnr_db(ref, plain.attention(q, k, v))
    assert gain > 3.0, gain
    q, k, v = (np.random.default_rng(2).uniform(-4, 4, (1, 6, 197, 64)) for _ in range(3))
    ref = ism.float_attention(q, k, v)  # uniform inputs: about unchanged, never much worse
    assert ism.sqnr_db(ref, transformed.attention(q, k, v)) > ism.sqnr_db(ref, plain.attention(q, k, v)) - 0.15


def test_value_offset_keeps_fully_masked_rows_at_zero():
    q, k, v = inputs()
    mask = np.ones((40, 40), dtype=bool)
    mask[7] = False
    out = ism.Recipe.per_tensor().replace(transforms=(ism.ValueOffset(),)).attention(q, k, v, attn_mask=mask)
    assert (out[..., 7, :] == 0).all() and (out[..., 8, :] != 0).any()
    causal = ism.Recipe.per_tensor().replace(transforms=ALL).attention(q, k, v, is_causal=True)
    ref = ism.float_attention(q, k, v, attn_mask=np.tril(np.ones((40, 40), dtype=bool)))
    assert ism.sqnr_db(ref, causal) > 30


def test_channel_balance_meets_in_the_middle():
    q = np.zeros((1, 3, 4), np.float32)
    k = np.zeros((1, 5, 4), np.float32)
    q[0, 0] = [64.0, 1.0, 0.0, 3.0]
    k[0, 0] = [1.0, 64.0, 5.0, 0.0]
    q2, k2, _, _ = ism.ChannelBalance().apply(q, k, k)
    np.testing.assert_array_equal(q2[0, 0], [8.0, 8.0, 0.0, 3.0])  # sqrt(64 * 1); zero channels untouched
    np.testing.assert_array_equal(k2[0, 0], [8.0, 8.0, 5.0, 0.0])


def test_transforms_are_recipe_data():
    r = ism.Recipe.per_tensor().replace(transforms=ALL)
    assert ism.Recipe.from_json(r.to_json()) == r and hash(ism.Recipe.from_json(r.to_json())) == hash(r)
    assert r.name.endswith("|transforms=key_offset(),channel_balance(),value_offset()")
    assert "transforms" not in ism.Recipe.per_tensor().to_dict()  # recipes without transforms keep their form
    assert ism.Recipe.per_tensor().replace(transforms=[ism.KeyOffset()]).transforms == (ism.KeyOffset(),)
    assert r.in_kernel  # the kernel runs the integer pipeline; qflash.attention applies the transforms
    with pytest.raises(TypeError, match="tuple of Transform strategies"):
        ism.Recipe(transforms=(ism.PerTensor(),))
    with pytest.raises(ValueError, match="pass neither amax nor out_scale"):
        r.attention_int(*inputs(), amax=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="NaN or inf"):
        r.attention(np.full((1, 4, 16), np.nan), np.ones((1, 4, 16)), np.ones((1, 4, 16)))


def _device():
    """The GPU where there is one (the GPU suite), else the CPU."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _random_case(rng, shape):
    """Inputs whose channels' ranges and offsets vary over decades (many distinct constants)."""
    scale = np.exp(rng.uniform(-4, 4, shape[:-2] + (1, shape[-1])))
    return tuple((rng.normal(rng.normal(0, 3, shape[:-2] + (1, shape[-1])), 1, shape) * scale).astype(np.float32)
                 for _ in range(3))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), order=st.permutations(range(3)), count=st.integers(1, 3),
       rows=st.integers(1, 50))
def test_the_chain_from_one_measurement_equals_the_transforms_bit_for_bit(seed, order, count, rows):
    """derive(): the constants of every transform and the rewritten tensors' maxima and minima from
    the raw inputs' alone (every operation monotone), in any order: the values apply_all gives."""
    from intsoftmax.transforms import apply_steps, derive, measure
    rng = np.random.default_rng(seed)
    q, k, v = _random_case(rng, (2, 2, rows, 8))
    chain = [ALL[i] for i in order][:count]
    direct = apply_all(chain, q, k, v)
    steps, hi, lo = derive(chain, *measure(q, k, v))
    for got, want in zip(apply_steps(steps, q, k, v), direct):
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_array_equal(got, want)
    for got, want in zip(hi + lo, sum(measure(*direct[:3]), ())):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rows", [70, 10], ids=["slice_per_program", "slices_per_program"])
def test_statistics_launch_gives_the_golden_chain(rows):
    """qflash.transforms.prepare (one launch; long slices one per program, short ones several):
    each transform's constants, V's offset and the rewritten ranges per tensor, head or channel
    equal the golden chain's, for float32 and float16 inputs."""
    torch = pytest.importorskip("torch")
    qt = pytest.importorskip("qflash.transforms")
    from intsoftmax.transforms import derive, measure
    rng = np.random.default_rng(11)
    for dtype, recipe in [(torch.float32, ism.Recipe.default()),
                          (torch.float16, ism.Recipe.per_tensor().replace(
                              transforms=(ism.ChannelBalance(), ism.ValueOffset(), ism.KeyOffset()),
                              v_granularity=ism.PerChannel()))]:
        x = [torch.from_numpy(a).to(dtype) for a in _random_case(rng, (2, 3, rows, 24))]
        rw = qt.prepare(recipe, *(a.to(_device()) for a in x))
        steps, hi, lo = derive(recipe.transforms, *measure(*(a.float().numpy() for a in x)))
        seen = [0, 0, 0]
        for ops, c in steps:
            for i, op in enumerate(ops):
                if op is not None:
                    got = rw.constants[i][seen[i]].cpu().numpy().reshape(c[i].shape)
                    np.testing.assert_array_equal(got, c[i])
                    seen[i] += 1
        assert [len(o) for o in rw.ops] == seen
        offset = sum(c[2] for ops, c in steps if ops[2] is not None)
        np.testing.assert_array_equal(rw.v_offset.cpu().numpy().reshape(offset.shape), offset)
        a = [np.maximum(np.abs(h), np.abs(m))[..., 0, :] for h, m in zip(hi, lo)]  # (B, H, D)
        k_range = a[1].max(-1).reshape(-1) if recipe.k_granularity == ism.PerHead() else a[1].max().reshape(1)
        v_range = a[2].reshape(6, 24) if recipe.v_granularity.per_channel else a[2].max(-1).reshape(-1)
        np.testing.assert_array_equal(rw.ranges[1].cpu().numpy(), k_range)
        np.testing.assert_array_equal(rw.ranges[2].cpu().numpy(), v_range)
    assert set(qt.TWINS) == set(ism.available_strategies("transform"))


def test_statistics_launch_makes_non_finite_inputs_visible():
    """A NaN or an infinity in a channel: that channel's statistics, and the ranges built on them,
    are NaN."""
    torch = pytest.importorskip("torch")
    qt = pytest.importorskip("qflash.transforms")
    q, k, v = (torch.from_numpy(a).to(_device()) for a in _random_case(np.random.default_rng(2), (1, 2, 20, 8)))
    k[0, 1, 3, 5] = float("inf")
    v[0, 0, 7, 2] = float("nan")
    rw = qt.prepare(ism.Recipe.default(), q, k, v)
    assert torch.isnan(rw.ranges[1]).tolist() == [False, True]
    assert torch.isnan(rw.ranges[2]).tolist() == [True, False]
    v[0, 1, 19, 0] = float("-inf")  # the last row, in the other head
    assert torch.isnan(qt.prepare(ism.Recipe.default(), q, k, v).ranges[2]).tolist() == [True, True]


def _kernel_runs() -> bool:
    if __import__("os").environ.get("TRITON_INTERPRET") == "1":
        return True
    try:
        import torch
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _kernel_runs(), reason="runs the kernel: on a GPU or in the Triton interpreter")
@pytest.mark.parametrize("recipe", [ism.Recipe.per_tensor().replace(transforms=ALL), ism.Recipe.default()],
                         ids=["default_all_three", "accurate"])
def test_qflash_attention_runs_the_transforms_bit_exact(recipe):
    """qflash.attention rewrites the inputs inside the quantization launch, the kernel runs the
    integer pipeline on them (integers equal to the golden model's) and adds the value offset to
    every row with a live key."""
    import torch
    import qflash
    q, k, v = inputs(seed=3)
    rng = np.random.default_rng(4)
    mask = rng.random((40, 40)) < 0.7
    mask[9] = False
    t = [torch.from_numpy(x.astype(np.float32)).to(_device()) for x in (q, k, v)]
    m = torch.from_numpy(mask).to(_device())
    out = qflash.attention(*t, m, recipe=recipe).cpu().numpy()
    gold = recipe.attention_int(q, k, v, attn_mask=mask)
    np.testing.assert_allclose(out, gold.dequantize(), rtol=1e-5, atol=1e-5)
    assert (out[:, :, 9] == 0).all()
    rewritten = [torch.from_numpy(x).to(_device()) for x in apply_all(recipe.transforms, q, k, v)[:3]]
    values, _ = qflash.attention_int(*rewritten, m, recipe=recipe.replace(transforms=()))
    np.testing.assert_array_equal(values.cpu().numpy(), gold.values)
    with pytest.raises(ValueError, match="takes no recipe with input transforms"):
        qflash.attention_int(*t, recipe=recipe)
    with pytest.raises(ValueError, match="static_scales takes no recipe with input transforms"):
        qflash.static_scales(recipe, 1.0, 1.0, 1.0, heads=3, head_dim=16, device=_device())


@pytest.mark.skipif(not _kernel_runs(), reason="runs the kernel: on a GPU or in the Triton interpreter")
def test_transforms_with_grouped_keys_rewrite_each_head_apart():
    """enable_gqa: K and V are read once per group, but the balance and offsets are per query head,
    so each head's rewritten K and V are quantized apart: the golden model on repeated K and V."""
    import torch
    import qflash
    q, k, v = inputs(seed=6, shape=(1, 4, 24, 16))
    k, v = k[:, :2], v[:, :2]
    recipe = ism.Recipe.default()
    t = [torch.from_numpy(x.astype(np.float32)).to(_device()) for x in (q, k, v)]
    out = qflash.attention(*t, recipe=recipe, enable_gqa=True).cpu().numpy()
    gold = recipe.attention_int(q, np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1))
    np.testing.assert_array_equal(out, gold.dequantize().astype(np.float32))


def test_calibration_folds_the_transforms_of_patched_models():
    """Uncalibrated, a patched module runs the recipe's transforms per call; calibration folds them
    into the projections (tests/test_nn.py checks the folding itself) and drops them from the recipe."""
    qflash = pytest.importorskip("qflash")
    from qflash.nn.tiny import TinyViT
    recipe = ism.Recipe.per_tensor().replace(transforms=(ism.ValueOffset(),))
    model = TinyViT().eval()
    qflash.patch(model, recipe, backend="golden")
    attn = model.blocks[0].attn
    assert attn.recipe.transforms
    qflash.calibrate(model, [torch_batch()])
    assert attn.folded == (ism.ValueOffset(),) and not attn.recipe.transforms and attn.calibrated


def torch_batch():
    import torch
    return torch.randn(2, 1, 8, 8)


def test_sqrt_is_the_correctly_rounded_one():
    """NumPy's float32 sqrt is IEEE's; sqrt_f32 corrects a platform's candidate to it (the device
    uses ``sqrt_rn``: test_statistics_launch_gives_the_golden_chain)."""
    from intsoftmax.transforms import sqrt_f32
    r = np.exp(np.random.default_rng(5).uniform(-80, 80, 200_000)).astype(np.float32)
    r = r[np.isfinite(r) & (r > 0)]
    expected = np.sqrt(r)  # numpy's float32 sqrt is IEEE's
    np.testing.assert_array_equal(sqrt_f32(r), expected)


def test_default_recipe_meets_the_beyond_int8_targets():
    """Issue 11's targets for Recipe.default() (the transforms, Q per token, K and V per head) on
    A2's shape, pooled over seeds 0-3 (the report's transforms study inputs): >= 32.5 dB on
    N(0, 2^2); >= 4 dB over the per-tensor INT8 ceiling on channel outliers, >= 5.5 dB with
    per-channel key and value offsets; U[-4, 4] at most 0.15 dB below that ceiling; and no input
    (of the four) more than 0.15 dB below Recipe.per_tensor(), the default before it."""
    from analysis.recipes import pooled_sqnr
    from analysis.transforms import make_inputs
    recipe, base = ism.Recipe.default(), ism.Recipe.per_tensor()
    got, ceiling, before = {}, {}, {}
    for dist in ("U[-4, 4]", "N(0, 2^2)", "channel outliers", "key/value offsets"):
        data = [make_inputs(dist, seed) for seed in range(4)]
        refs = [ism.float_attention(*x) for x in data]
        got[dist] = pooled_sqnr([(r, recipe.attention(*x)) for r, x in zip(refs, data)])
        ceiling[dist] = pooled_sqnr([(r, base.quantized_reference(*x)) for r, x in zip(refs, data)])
        before[dist] = pooled_sqnr([(r, base.attention(*x)) for r, x in zip(refs, data)])
        assert got[dist] >= before[dist] - 0.15, (dist, got[dist], before[dist])
    assert got["N(0, 2^2)"] >= 32.5
    assert got["channel outliers"] >= ceiling["channel outliers"] + 4.0
    assert got["key/value offsets"] >= ceiling["key/value offsets"] + 5.5
    assert got["U[-4, 4]"] >= ceiling["U[-4, 4]"] - 0.15
