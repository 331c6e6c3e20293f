"""Exact input transforms (intsoftmax.transforms): exact in real arithmetic, data in a Recipe,
and worth their keep where the inputs have offsets or unbalanced channels."""
import numpy as np
import pytest

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
    plain = ism.Recipe.default()
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
    out = ism.Recipe.default().replace(transforms=(ism.ValueOffset(),)).attention(q, k, v, attn_mask=mask)
    assert (out[..., 7, :] == 0).all() and (out[..., 8, :] != 0).any()
    causal = ism.Recipe.default().replace(transforms=ALL).attention(q, k, v, is_causal=True)
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
    r = ism.Recipe.default().replace(transforms=ALL)
    assert ism.Recipe.from_json(r.to_json()) == r and hash(ism.Recipe.from_json(r.to_json())) == hash(r)
    assert r.name.endswith("|transforms=key_offset(),channel_balance(),value_offset()")
    assert "transforms" not in ism.Recipe.default().to_dict()  # recipes without transforms keep their form
    assert ism.Recipe.default().replace(transforms=[ism.KeyOffset()]).transforms == (ism.KeyOffset(),)
    assert not r.in_kernel
    with pytest.raises(TypeError, match="tuple of Transform strategies"):
        ism.Recipe(transforms=(ism.PerTensor(),))
    with pytest.raises(ValueError, match="pass neither amax nor out_scale"):
        r.attention_int(*inputs(), amax=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="NaN or inf"):
        r.attention(np.full((1, 4, 16), np.nan), np.ones((1, 4, 16)), np.ones((1, 4, 16)))


def test_the_kernel_names_what_it_does_not_run_yet():
    qflash_spec = pytest.importorskip("qflash.spec")
    with pytest.raises(ValueError, match="does not run input transforms yet"):
        qflash_spec.check_compiles(ism.Recipe.default().replace(transforms=(ism.KeyOffset(),)))


def test_patched_modules_name_the_transforms_the_kernel_does_not_run():
    qflash = pytest.importorskip("qflash")
    from qflash.nn.tiny import TinyViT
    recipe = ism.Recipe.default().replace(transforms=(ism.ValueOffset(),))
    with pytest.raises(ValueError, match="does not run input transforms yet"):
        qflash.patch(TinyViT(), recipe)
    assert len(qflash.patch(TinyViT(), recipe, backend="golden")) > 0
    model = TinyViT()
    qflash.patch(model, recipe, backend="golden")
    with pytest.raises(ValueError, match="take no calibrated ranges yet"):
        qflash.calibrate(model, [torch_batch()])


def torch_batch():
    import torch
    return torch.randn(2, 1, 8, 8)
