"""``patch(model)``: replace every timm-layout attention module with its qflash counterpart, in place.

A module is a candidate when it has a ``qkv`` ``nn.Linear``, a ``proj`` module and an integer
``num_heads`` (timm's ``Attention``, ``WindowAttention``, or any module built the same way). It is
replaced only when everything it owns is part of a known layout, because anything else (BEiT's
separate q/v biases, rotary embeddings, ...) would change what its forward computes; otherwise it
is listed in the report's ``skipped`` with the reason. timm itself is never imported.
"""
from __future__ import annotations

import dataclasses
import inspect

import torch
from torch import nn

from ..spec import HEAD_DIMS
from .modules import QAttention, QAttentionBase, QWindowAttention, check_recipe

#: submodules each layout may own (everything else makes a candidate unsupported)
VIT_CHILDREN = {"qkv", "q_norm", "k_norm", "attn_drop", "norm", "proj", "proj_drop"}
SWIN_CHILDREN = {"qkv", "attn_drop", "proj", "proj_drop", "softmax"}
SWIN_PARAMS, SWIN_BUFFERS = {"relative_position_bias_table"}, {"relative_position_index"}


@dataclasses.dataclass(frozen=True)
class Replaced:
    """One replaced module: its path in the model, layout kind ('vit' or 'swin') and shape."""

    path: str
    kind: str
    source: str
    num_heads: int
    head_dim: int


@dataclasses.dataclass(frozen=True)
class PatchReport:
    """What :func:`patch` did: ``replaced`` modules, and ``skipped`` candidates with the reason."""

    recipe_name: str
    replaced: tuple[Replaced, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.replaced)

    def __str__(self) -> str:
        lines = [f"qflash.patch: replaced {len(self.replaced)} attention module(s), recipe {self.recipe_name}"]
        lines += [f"  {r.path}: {r.source} -> {r.kind} ({r.num_heads} heads x {r.head_dim})" for r in self.replaced]
        lines += [f"  skipped {path}: {why}" for path, why in self.skipped]
        return "\n".join(lines)


class Unsupported(ValueError):
    """A candidate whose layout qflash cannot reproduce."""


def is_candidate(m: nn.Module) -> bool:
    heads = getattr(m, "num_heads", None)
    return (isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "proj", None), nn.Module)
            and isinstance(heads, int) and not isinstance(heads, bool))


def _check_owned(m: nn.Module, children: set, params: set, buffers: set) -> None:
    extra = [f"submodule {n!r}" for n, _ in m.named_children() if n not in children]
    extra += [f"parameter {n!r}" for n, _ in m.named_parameters(recurse=False) if n not in params]
    extra += [f"buffer {n!r}" for n, _ in m.named_buffers(recurse=False) if n not in buffers]
    if extra:
        raise Unsupported(f"{', '.join(extra)} outside the timm {'Swin' if params else 'ViT'} attention layout")


def _check_forward(m: nn.Module, allowed: set) -> None:
    """The original forward must take nothing the replacement does not (e.g. timm's ``rope``)."""
    try:
        params = list(inspect.signature(type(m).forward).parameters.values())[2:]  # after self and the input
    except (TypeError, ValueError):
        raise Unsupported(f"cannot read the signature of {type(m).__name__}.forward") from None
    extra = [p.name for p in params if p.name not in allowed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if extra:
        raise Unsupported(f"forward takes {extra}, which the replacement does not (it takes {sorted(allowed)})")


def _shape(m: nn.Module) -> tuple[int, int, float | None]:
    heads, out = m.num_heads, m.qkv.out_features
    if heads <= 0 or out % (3 * heads):
        raise Unsupported(f"qkv has {out} outputs, not 3 * num_heads ({heads}) * head_dim")
    head_dim = out // (3 * heads)
    if getattr(m, "head_dim", head_dim) != head_dim:
        raise Unsupported(f"head_dim={m.head_dim} but qkv gives {head_dim} per head")
    if head_dim not in HEAD_DIMS:
        raise Unsupported(f"head dim {head_dim} is not supported by the qflash kernel (use one of {HEAD_DIMS})")
    scale = getattr(m, "scale", None)
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise Unsupported(f"scale is a {type(scale).__name__}, not a number")
    return heads, head_dim, scale


def replacement(module: nn.Module, recipe=None, backend: str = "auto") -> QAttentionBase:
    """The qflash module for one timm-layout attention module, sharing its submodules and parameters.

    Raises ``ValueError`` naming what does not fit the layout (see the module docstring).
    """
    recipe = check_recipe(recipe, backend)
    if isinstance(module, QAttentionBase):
        raise ValueError(f"{type(module).__name__} is already a qflash module; patch the float model once")
    if not is_candidate(module):
        raise Unsupported(f"{type(module).__name__} has no qkv nn.Linear, proj and integer num_heads "
                          "(the timm Attention / WindowAttention layout)")
    heads, head_dim, scale = _shape(module)
    common = dict(scale=scale, attn_drop=getattr(module, "attn_drop", None),
                  proj_drop=getattr(module, "proj_drop", None), recipe=recipe, backend=backend)
    if getattr(module, "relative_position_bias_table", None) is not None:
        _check_owned(module, SWIN_CHILDREN, SWIN_PARAMS, SWIN_BUFFERS)
        _check_forward(module, {"mask"})
        table, index = module.relative_position_bias_table, getattr(module, "relative_position_index", None)
        ws = getattr(module, "window_size", None)
        ws = tuple(ws) if isinstance(ws, (tuple, list)) else (ws, ws)
        if not all(isinstance(w, int) and w > 0 for w in ws) or len(ws) != 2:
            raise Unsupported(f"window_size={getattr(module, 'window_size', None)!r} is not an int or a pair of ints")
        n, n_rel = ws[0] * ws[1], (2 * ws[0] - 1) * (2 * ws[1] - 1)
        if not isinstance(index, torch.Tensor) or tuple(index.shape) != (n, n):
            raise Unsupported(f"relative_position_index must be a ({n}, {n}) tensor for window_size={ws}")
        if not isinstance(table, torch.Tensor) or tuple(table.shape) != (n_rel, heads):
            raise Unsupported(f"relative_position_bias_table has shape {tuple(getattr(table, 'shape', ()))}; "
                              f"window_size={ws} and {heads} heads need ({n_rel}, {heads})")
        persistent = "relative_position_index" not in module._non_persistent_buffers_set
        new = QWindowAttention(module.qkv, module.proj, heads, head_dim, ws, table, index,
                               index_persistent=persistent, **common)
    else:
        _check_owned(module, VIT_CHILDREN, set(), set())
        _check_forward(module, {"attn_mask", "is_causal"})
        new = QAttention(module.qkv, module.proj, heads, head_dim, q_norm=getattr(module, "q_norm", None),
                         k_norm=getattr(module, "k_norm", None), norm=getattr(module, "norm", None), **common)
    return new.train(module.training)  # a new Module starts in training mode: keep the model's mode


def patch(model: nn.Module, recipe=None, *, backend: str = "auto") -> PatchReport:
    """Replace, in place, every ViT / Swin attention module of ``model`` with qflash's.

    recipe: an :class:`intsoftmax.Recipe` (default ``Recipe.default()``). backend: 'auto' (the
    fused kernel for CUDA tensors, the golden model for CPU tensors), 'golden' or 'kernel'.
    The replacements share the original weights; the model's state-dict keys are kept, plus
    ``amax_q/k/v`` per replaced module (see :func:`qflash.calibrate`). A module used at several
    places gets one replacement. Raises ``ValueError`` when nothing could be replaced.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"patch expects a torch.nn.Module, got {type(model).__name__}")
    recipe = check_recipe(recipe, backend)
    done = [name or "<model>" for name, m in model.named_modules() if isinstance(m, QAttentionBase)]
    if done:
        raise ValueError(f"model is already patched ({done[0]} is a qflash module); patch the float model once "
                         "(reload it to change the recipe)")
    if is_candidate(model):
        raise ValueError(f"the model itself is an attention module ({type(model).__name__}); patch its parent "
                         "module, or build the replacement with qflash.nn.replacement(module)")
    new, replaced, skipped = {}, [], []
    for path, m in list(model.named_modules(remove_duplicate=False)):  # listed first: the loop edits the model
        if not path or not is_candidate(m) or any(path.startswith(r.path + ".") for r in replaced):
            continue
        if id(m) not in new:
            try:
                new[id(m)] = replacement(m, recipe, backend)
            except Unsupported as e:
                skipped.append((path, str(e)))
                continue
        q = new[id(m)]
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent), leaf, q)
        replaced.append(Replaced(path, q.kind, type(m).__name__, q.num_heads, q.head_dim))
    if not replaced:
        why = "; ".join(f"{p}: {w}" for p, w in skipped) or "no module has a qkv nn.Linear, proj and num_heads"
        raise ValueError(f"patch found no attention module to replace ({why}); qflash patches timm's ViT "
                         "Attention and Swin WindowAttention layouts")
    return PatchReport(recipe.name, tuple(replaced), tuple(skipped))
