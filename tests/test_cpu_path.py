"""On CPU tensors without Triton's interpreter, qflash's float entry points answer with the golden
model (run in a subprocess: the test session itself may have TRITON_INTERPRET=1 set)."""
import os
import subprocess
import sys

SCRIPT = r"""
import numpy as np, torch, intsoftmax as ism, qflash
rng = np.random.default_rng(0)
q, k, v = (rng.normal(0, 1, (2, 4, 30, 24)).astype(np.float32) for _ in range(3))
r, p = ism.Recipe.default(), ism.Recipe.per_tensor()  # the defaults of attention and of the integer interfaces
t = torch.from_numpy
out = qflash.attention(t(q), t(k), t(v), is_causal=True)
assert out.dtype == torch.float32
assert torch.equal(out, t(r.attention(q, k, v, is_causal=True)).float())
bias = rng.normal(0, 1, (30, 30)).astype(np.float32)
assert torch.equal(qflash.attention(t(q), t(k), t(v), t(bias)), t(r.attention(q, k, v, attn_bias=bias)).float())
vals, scale = qflash.attention_int(t(q), t(k[:, :2]), t(v[:, :2]), enable_gqa=True)
gold = p.attention_int(q, k[:, :2], v[:, :2], enable_gqa=True)
assert np.array_equal(vals.numpy(), gold.values) and vals.dtype == torch.int32 and scale.shape == (1,)
assert qflash.attention(*(t(x).to(torch.bfloat16) for x in (q, k, v))).dtype == torch.bfloat16
static = qflash.static_scales(None, 4.0, 4.0, 4.0, heads=4, head_dim=24, device="cpu")  # its recipe: per_tensor
assert static.recipe == p and ism.Recipe.accurate() == r
assert torch.equal(qflash.attention(t(q), t(k), t(v), static=static), t(p.attention(q, k, v, amax=(4.0,) * 3)).float())
try:
    qflash.attention_int8(t(q).to(torch.int8), t(k).to(torch.int8), t(v).to(torch.int8))
except ValueError as e:
    assert "TRITON_INTERPRET=1" in str(e)
else:
    raise AssertionError("attention_int8 on CPU should name the interpreter")
print("ok")
"""


def test_cpu_tensors_run_the_golden_model():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("ok")


NO_TRITON = r"""
import sys
sys.modules["triton"] = None  # import triton now raises ImportError, as in an install without it
import numpy as np, torch, intsoftmax as ism, qflash
q = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (1, 2, 16, 32)).astype(np.float32))
assert torch.equal(qflash.attention(q, q, q), torch.from_numpy(ism.Recipe.default().attention(*(q.numpy(),) * 3)).float())
try:
    qflash.attention_int8(q.to(torch.int8), q.to(torch.int8), q.to(torch.int8))
except (ValueError, ImportError) as e:
    assert "TRITON_INTERPRET=1" in str(e) or "intsoftmax[kernel]" in str(e), e
print("ok", qflash.__version__)
"""


def test_import_and_cpu_path_without_triton():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", NO_TRITON], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().startswith("ok")
