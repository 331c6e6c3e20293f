"""GPU-only checks (scripts/gpu_suite.sh): full-size workloads bit for bit, CUDA-graph replay
with new inputs, torch.compile on the device. The other kernel tests also run there."""
import numpy as np
import pytest
import torch

import intsoftmax as ism
import qflash
from intsoftmax.workloads import WORKLOADS, qkv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
RECIPES = {"default": ism.Recipe.per_tensor(), "fast": ism.Recipe.fast(), "qflash": ism.Recipe.qflash()}


def cuda(*arrays, dtype=torch.float32):
    return tuple(torch.from_numpy(np.ascontiguousarray(a)).to("cuda", dtype) for a in arrays)


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("name", list(RECIPES))
def test_workloads_bit_exact(workload, name):
    recipe = RECIPES[name]
    q, k, v = (x.astype(np.float16) for x in qkv(workload, "uniform", seed=7))
    values, _ = qflash.attention_int(*cuda(q, k, v, dtype=torch.float16), recipe=recipe)
    np.testing.assert_array_equal(values.cpu().numpy(), recipe.attention_int(q, k, v).values)


def test_large_bias_distances_bit_exact():
    """Biases of -100 nats at small |q|, |k|: distances far past every clamp, where the fused exp's
    shifts exceed 31 (PTX shifts give 0 there, the golden model clamps)."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.uniform(-0.5, 0.5, (2, 3, 197, 64)).astype(np.float32) for _ in range(3))
    bias = np.where(rng.random((197, 197)) < 0.3, -100.0, rng.normal(0, 3, (197, 197))).astype(np.float32)
    for recipe in RECIPES.values():
        values, _ = qflash.attention_int(*cuda(q, k, v), attn_mask=cuda(bias)[0], recipe=recipe)
        np.testing.assert_array_equal(values.cpu().numpy(), recipe.attention_int(q, k, v, attn_bias=bias).values)


def test_batched_swin_bias_bit_exact():
    q, k, v = (x.astype(np.float32) for x in qkv("A4", "gaussian", seed=1, batch=8))
    rng = np.random.default_rng(1)
    bias = (rng.normal(0, 1, (3, 49, 49)) + np.where(rng.random((64, 1, 49, 49)) < 0.2, -100.0, 0.0))
    bias = bias.astype(np.float32)  # (windows, H, N, N), broadcast over the 8 images
    q5, k5, v5 = (x.reshape(8, 64, 3, 49, 32) for x in (q, k, v))
    values, _ = qflash.attention_int(*cuda(q5, k5, v5), attn_mask=cuda(bias)[0])
    golden = ism.Recipe.per_tensor().attention_int(q5, k5, v5, attn_bias=bias)
    np.testing.assert_array_equal(values.cpu().numpy(), golden.values)


def test_cuda_graph_replay_with_new_inputs():
    shape = (8, 6, 197, 64)
    bufs = [torch.randn(shape, device="cuda", dtype=torch.float16) for _ in range(3)]
    static = qflash.static_scales(None, 4.0, 4.0, 4.0, heads=6, head_dim=64, device="cuda")
    for kind in ("dynamic", "static"):
        def step():
            return qflash.attention(*bufs, static=static if kind == "static" else None)
        step()  # compile and warm up outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step()
        for seed in range(3):
            gen = torch.Generator(device="cuda").manual_seed(seed)
            for b in bufs:
                b.copy_(torch.randn(shape, device="cuda", dtype=torch.float16, generator=gen))
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(out, step()), f"{kind} replay {seed}"


def test_torch_compile_fullgraph_on_the_device():
    q, k, v = (torch.randn(8, 6, 197, 64, device="cuda", dtype=torch.float16) for _ in range(3))

    def block(q, k, v):  # elementwise around the op, so eager and compiled agree bit for bit
        return qflash.attention(q * 1.5, k, v) * 2.0

    compiled = torch.compile(block, fullgraph=True)
    assert torch.equal(compiled(q, k, v), block(q, k, v))


def test_timm_vit_runs_with_qflash_as_sdpa(monkeypatch):
    """SDPA's signature: timm's ViT calls F.scaled_dot_product_attention(q, k, v, dropout_p=...);
    swapped for qflash.attention it runs unchanged and its logits track the fp32 model's."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False).cuda().eval()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ref = model(x)
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", qflash.attention)
        out = model(x)
    assert ism.sqnr_db(ref.double().cpu().numpy(), out.double().cpu().numpy()) > 25


def test_causal_llm_shape_bit_exact():
    """is_causal at an LLM-like shape (D = 128, many key tiles skipped per row block)."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(0, 1, (1, 2, 1000, 128)).astype(np.float32) for _ in range(3))
    recipe = ism.Recipe.per_tensor()
    values, _ = qflash.attention_int(*cuda(q, k, v), is_causal=True, recipe=recipe)
    np.testing.assert_array_equal(values.cpu().numpy(), recipe.attention_int(q, k, v, is_causal=True).values)


@pytest.mark.parametrize("recipe, nk", [(ism.Recipe.per_tensor(), 8000), (ism.Recipe.long_context(), 40000)],
                         ids=["default", "long_context"])
def test_decode_splits_bit_exact(recipe, nk):
    """Decoding (one and three queries per head against many keys): the API splits the keys
    (qflash.api._splits: 4 and 32 splits on the H200), bit-exact with the unsplit golden model."""
    from qflash import api
    rng = np.random.default_rng(nk)
    for nq in (1, 3):
        q = rng.normal(0, 1, (1, 8, nq, 128)).astype(np.float32)
        k, v = (rng.normal(0, 1, (1, 8, nk, 128)).astype(np.float32) for _ in range(2))
        call = api.Call((1,), 1, 1, 8, nq, nk, 128, 0.1, api.MaskKind.NONE, torch.device("cuda"))
        assert api._splits(api._spec(recipe, 128, api.MaskKind.NONE, api.OutKind.INT32), call, 64) > 1
        values, _ = qflash.attention_int(*cuda(q, k, v), recipe=recipe)
        np.testing.assert_array_equal(values.cpu().numpy(), recipe.attention_int(q, k, v).values)
    # GQA: 4 query heads per K/V head packed into its rows, then split
    q = rng.normal(0, 1, (1, 8, 1, 128)).astype(np.float32)
    k, v = (rng.normal(0, 1, (1, 2, nk, 128)).astype(np.float32) for _ in range(2))
    values, _ = qflash.attention_int(*cuda(q, k, v), enable_gqa=True, recipe=recipe)
    np.testing.assert_array_equal(values.cpu().numpy(), recipe.attention_int(q, k, v, enable_gqa=True).values)


def _calls():
    """(name, function, make_args): calls whose second run replays the first's recorded plan."""
    g = torch.Generator(device="cuda")

    def rand(*shape, dtype=torch.float16):
        return torch.randn(shape, device="cuda", dtype=dtype, generator=g)

    def int8(*shape):
        return torch.randint(-127, 128, shape, device="cuda", dtype=torch.int8, generator=g)

    static = qflash.static_scales(None, 4.0, 4.0, 4.0, heads=6, head_dim=64, device="cuda")
    static8 = qflash.static_scales(None, scales=(0.03, 0.03, 0.03), heads=6, head_dim=64, device="cuda")
    static_swin = qflash.static_scales(None, 4.0, 4.0, 4.0, heads=3, head_dim=32, device="cuda")
    per_token = ism.Recipe.per_tensor().replace(q_granularity=ism.PerToken(), k_granularity=ism.PerHead())
    s = torch.tensor([0.03], device="cuda")
    bias = rand(3, 49, 49, dtype=torch.float32)
    return [
        ("dynamic", qflash.attention, lambda: (rand(2, 6, 197, 64), rand(2, 6, 197, 64), rand(2, 6, 197, 64)), {}),
        ("static", qflash.attention, lambda: (rand(2, 6, 197, 64), rand(2, 6, 197, 64), rand(2, 6, 197, 64)),
         dict(static=static)),
        ("per-token", qflash.attention, lambda: (rand(2, 6, 197, 64), rand(2, 6, 197, 64), rand(2, 6, 197, 64)),
         dict(recipe=per_token)),
        ("causal", qflash.attention, lambda: (rand(1, 4, 300, 128), rand(1, 4, 300, 128), rand(1, 4, 300, 128)),
         dict(is_causal=True)),
        ("swin bias", qflash.attention, lambda: (rand(2, 4, 3, 49, 32), rand(2, 4, 3, 49, 32), rand(2, 4, 3, 49, 32),
                                                 bias), {}),
        ("gqa", qflash.attention, lambda: (rand(2, 8, 100, 64), rand(2, 2, 100, 64), rand(2, 2, 100, 64)),
         dict(enable_gqa=True)),
        ("static on load", qflash.attention, lambda: (rand(8, 3, 49, 32), rand(8, 3, 49, 32), rand(8, 3, 49, 32),
                                                      bias), dict(static=static_swin)),
        ("int8 static", qflash.attention_int8, lambda: (int8(2, 6, 197, 64), int8(2, 6, 197, 64), int8(2, 6, 197, 64)),
         dict(static=static8, out_dtype=torch.float16)),
        ("int8 scales", qflash.attention_int8, lambda: (int8(2, 6, 197, 64), int8(2, 6, 197, 64), int8(2, 6, 197, 64),
                                                        s, s, s), dict(out_scale=0.01)),
        ("split decode", qflash.attention, lambda: (rand(1, 8, 1, 128), rand(1, 8, 6000, 128), rand(1, 8, 6000, 128)),
         {}),
        ("transforms", qflash.attention, lambda: (rand(2, 6, 197, 64), rand(2, 6, 197, 64), rand(2, 6, 197, 64)),
         dict(recipe=ism.Recipe.default())),
    ]


@pytest.mark.parametrize("case", range(11))
def test_plans_replay_equal_to_the_ordinary_path(case):
    """The first call with a signature records its launches; later calls replay them with new
    pointers and fresh buffers. Replays equal the ordinary path's outputs bit for bit."""
    from qflash import api
    name, fn, make, kwargs = _calls()[case]
    before = set(api._PLANS.plans)
    fn(*make(), **kwargs)
    added = [api._PLANS.plans[key] for key in set(api._PLANS.plans) - before]
    assert len(added) == 1 and added[0] is not None, f"{name}: no plan recorded"
    for _ in range(2):
        args = make()
        replayed = fn(*args, **kwargs)
        api._PLANS.plans.clear()  # the ordinary path again
        ordinary = fn(*args, **kwargs)
        assert torch.equal(replayed, ordinary), name


def test_plan_signatures_see_aliasing_and_grad_mode():
    """Self-attention on one tensor and on three: different plans (one pointer or three)."""
    x = torch.randn(1, 2, 64, 32, device="cuda")
    same = qflash.attention(x, x, x)
    q, k, v = x.clone(), torch.randn_like(x), torch.randn_like(x)
    assert torch.equal(qflash.attention(x, x, x), same)
    assert not torch.equal(qflash.attention(q, k, v), same)
    from qflash import api
    api._PLANS.plans.clear()
    assert torch.equal(qflash.attention(q, k, v), qflash.attention(q.clone(), k.clone(), v.clone()))
    with pytest.raises(ValueError, match="inference-only"):
        qflash.attention(q.requires_grad_(), k, v)


@pytest.mark.parametrize("name", ["default", "fast"])
def test_last_rows_launch_bit_exact_under_graph_replay(name):
    """A GPU-bound ViT call (4 row blocks per slice, at least qflash.api.TAIL_PROGRAMS_PER_SM per
    SM) runs its last 5 rows as a programmatically dependent launch: bit for bit with the golden
    model eagerly, and replayed from a CUDA graph with new inputs."""
    from qflash import api
    recipe = RECIPES[name]
    shape = (32, 6, 197, 64)
    assert shape[0] * shape[1] * 4 >= api.TAIL_PROGRAMS_PER_SM * api._sm_count(torch.device("cuda"))
    rng = np.random.default_rng(41)
    draws = [tuple(rng.uniform(-3, 3, shape).astype(np.float16) for _ in range(3)) for _ in range(2)]
    values, _ = qflash.attention_int(*cuda(*draws[0], dtype=torch.float16), recipe=recipe)
    np.testing.assert_array_equal(values.cpu().numpy(), recipe.attention_int(*draws[0]).values)
    bufs = cuda(*draws[0], dtype=torch.float16)
    qflash.attention(*bufs, recipe=recipe)  # compiled and planned before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = qflash.attention(*bufs, recipe=recipe)
    for b, x in zip(bufs, cuda(*draws[1], dtype=torch.float16)):
        b.copy_(x)
    graph.replay()
    torch.cuda.synchronize()
    gold = recipe.attention(*draws[1]).astype(np.float16)
    np.testing.assert_array_equal(out.cpu().numpy(), gold)
