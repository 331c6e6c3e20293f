"""Shared helpers for the kernel tests: where they run, and numpy <-> torch."""
import os

import numpy as np
import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

#: Kernel tests run on a GPU, or on the CPU in the Triton interpreter (how CI runs them).
needs_kernel = pytest.mark.skipif(not CUDA and os.environ.get("TRITON_INTERPRET") != "1",
                                  reason="needs a CUDA device or TRITON_INTERPRET=1 (scripts/test.sh sets it)")


def t(x, dtype=None):
    """A numpy array as a tensor on the test device."""
    out = torch.from_numpy(np.array(x)).to(DEVICE)  # a writable copy
    return out if dtype is None else out.to(dtype)


def n(x):
    return x.detach().cpu().numpy()


def combined_mask(attn_bias, attn_mask):
    """SDPA takes one mask: a float bias with -inf where the boolean mask is False, or either alone.
    The golden model gives the same integers for the combination as for the pair."""
    if attn_bias is None:
        return attn_mask
    if attn_mask is None:
        return attn_bias
    return np.where(attn_mask, attn_bias, -np.inf).astype(np.float32)


def assert_float_output(out, gold, err_msg=""):
    """A kernel's float output against the golden model's :class:`~intsoftmax.recipe.IntAttention`:
    the dequantized pair bit for bit (``float_out="pair"``: the golden model computes it in the
    kernel's float32 steps), or, for ``"rounded"``, the integers recovered from it (below 2**24,
    times a power-of-two multiple of V's scale)."""
    out = np.asarray(out)
    if gold.pair is not None:
        np.testing.assert_array_equal(out, gold.dequantize().astype(out.dtype), err_msg=err_msg)
    else:
        deq = np.broadcast_to(gold.scale, out.shape).astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal(np.rint(out.astype(np.float64) / deq), gold.values, err_msg=err_msg)
