"""``torch.library`` registration: the qflash entry points as custom ops with fake (meta)
implementations, so ``torch.compile(fullgraph=True)`` traces them without graph breaks and
CUDA graphs capture them. The ops carry the recipe as its JSON form (a value, not an object).
"""
from __future__ import annotations

import torch

from . import api


@torch.library.custom_op("qflash::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, scale: float,
              is_causal: bool, recipe_json: str, amax_q: torch.Tensor | None = None,
              amax_k: torch.Tensor | None = None, amax_v: torch.Tensor | None = None,
              table: torch.Tensor | None = None) -> torch.Tensor:
    return api.attention_op_impl(q, k, v, attn_mask, scale, is_causal, recipe_json, amax_q, amax_k, amax_v, table)


@attention.register_fake
def _(q, k, v, attn_mask, scale, is_causal, recipe_json, amax_q=None, amax_k=None, amax_v=None, table=None):
    api._check(q, k, v, attn_mask, scale, api.recipe_from_json(recipe_json), api.FLOAT_DTYPES, "attention",
               is_causal)
    return q.new_empty(q.shape)


@torch.library.custom_op("qflash::attention_int8", mutates_args=())
def attention_int8(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, s_q: torch.Tensor | None,
                   s_k: torch.Tensor | None, s_v: torch.Tensor | None, attn_mask: torch.Tensor | None, scale: float,
                   is_causal: bool, recipe_json: str, out_scale: float | None = None,
                   out_dtype: torch.dtype = torch.float32, table: torch.Tensor | None = None) -> torch.Tensor:
    return api.attention_int8_op_impl(q8, k8, v8, s_q, s_k, s_v, attn_mask, scale, is_causal, recipe_json, out_scale,
                                      out_dtype, table)


@attention_int8.register_fake
def _(q8, k8, v8, s_q, s_k, s_v, attn_mask, scale, is_causal, recipe_json, out_scale=None, out_dtype=torch.float32,
      table=None):
    recipe = api.recipe_from_json(recipe_json)
    call = api._check(q8, k8, v8, attn_mask, scale, recipe, (torch.int8,), "attention_int8", is_causal)
    if table is None:
        api._check_int8_scales(call, recipe, s_q, s_k, s_v, out_scale, out_dtype)
    return q8.new_empty(q8.shape, dtype=out_dtype if out_scale is None else torch.int8)
