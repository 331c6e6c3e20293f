"""The unfused integer pipeline (the benchmark's baseline) computes the fused kernel's integers."""
import numpy as np
import pytest
import torch

import intsoftmax as ism
import qflash
from qflash import unfused

from kernel_utils import DEVICE, needs_kernel

pytestmark = needs_kernel


@pytest.mark.parametrize("shape", [(1, 2, 49, 32), (2, 1, 197, 64)])
def test_unfused_equals_fused(shape):
    recipe = ism.Recipe(exp=ism.FusedExp2(degree=2), p_bits=7)
    rng = np.random.default_rng(sum(shape))
    s = 3.0 / 127
    q8, k8, v8 = (torch.from_numpy(rng.integers(-127, 128, shape).astype(np.int8)).to(DEVICE) for _ in range(3))
    v8 = v8.transpose(-1, -2).contiguous().transpose(-1, -2)  # keys contiguous, as the benchmark stores V
    static = qflash.static_scales(recipe, scales=(s, s, s), heads=shape[1], head_dim=shape[3], device=DEVICE)
    apart = unfused.attention_int8(q8, k8, v8, static.table, recipe, out_dtype=torch.float32)
    fused = qflash.attention_int8(q8, k8, v8, recipe=recipe, static=static)
    assert torch.equal(apart, fused)


def test_unfused_rejects_recipes_it_cannot_run():
    with pytest.raises(ValueError, match="two-pass recipes with a fused exp and p_bits <= 7"):
        unfused.check_recipe(ism.Recipe.per_tensor())
