"""Attention modules that compute q, k, v and the output projection exactly as timm's ViT
``Attention`` and Swin ``WindowAttention`` do, with the attention itself integer-only:

* CUDA tensors: :func:`qflash.attention` (the fused kernel);
* CPU tensors: the golden model :meth:`intsoftmax.Recipe.attention`, which the kernel matches
  bit for bit (``backend="kernel"`` runs the kernel instead: on a CPU only under
  ``TRITON_INTERPRET=1``).

They share the original module's submodules and parameters (no copies), so the state dict
keeps its keys. Each adds three buffers, ``amax_q``, ``amax_k``, ``amax_v``: per-head input
ranges set by :func:`qflash.calibrate` (NaN until then). Uncalibrated modules measure the
ranges on every call (dynamic); calibrated ones build their static scales once, on the first
call after calibration, a state-dict load or a move, and then do no reductions and no host
synchronisation. Inference only: no gradient flows through the attention.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from intsoftmax import Recipe
from intsoftmax.transforms import fold_all

from .. import api
from ..spec import HEAD_DIMS

BACKENDS = ("auto", "golden", "kernel")
AMAX = ("amax_q", "amax_k", "amax_v")


def check_recipe(recipe, backend: str) -> Recipe:
    """The recipe to use (default :meth:`Recipe.default`), validated for ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: use 'auto' (kernel on CUDA, golden model on CPU), 'golden' or 'kernel'")
    if recipe is None:
        return Recipe.default()
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be an intsoftmax.Recipe, got {type(recipe).__name__}; "
                        "e.g. intsoftmax.Recipe.default() or Recipe.qflash()")
    if backend != "golden" and not recipe.in_kernel:
        raise ValueError(f"the qflash kernel does not compile {recipe.exp.name} with {recipe.accumulation.name}; "
                         "use an integer exp and a rescaling accumulation rule, or backend='golden' (CPU reference)")
    return recipe


def check_static(recipe: Recipe, where: str) -> None:
    """Raise ``ValueError`` unless ``recipe`` can use calibrated ranges: K and V (which a Recipe keeps
    per tensor or per head) from calibration, a Q per token or block measured per call."""
    if recipe.transforms:
        raise ValueError(f"{where}: static ranges for a recipe with input transforms need the transforms folded "
                         "into the projections first: run qflash.calibrate (it folds them), leave the model "
                         "uncalibrated, or use recipe.replace(transforms=())")


def static_ranges(recipe: Recipe, per_head: list[np.ndarray], where: str) -> list:
    """Per-head ranges reduced to each input's granularity: (1,) per tensor, (H,) per head; None for
    a Q per token or block (measured per call beside the static K and V)."""
    check_static(recipe, where)
    grans = (recipe.q_granularity, recipe.k_granularity, recipe.v_granularity)
    return [None if g.block()[1] is not None else a.max(keepdims=True) if g.block()[0] is None else a
            for g, a in zip(grans, per_head)]


class QAttentionBase(nn.Module):
    """Shared machinery: recipe, ranges, static scales, and the attention call itself."""

    kind = ""

    def __init__(self, num_heads: int, head_dim: int, scale: float | None, recipe: Recipe | None, backend: str,
                 device=None):
        super().__init__()
        if head_dim not in HEAD_DIMS:
            raise ValueError(f"head dim {head_dim} is not supported by the qflash kernel; use one of {HEAD_DIMS}")
        self.recipe = check_recipe(recipe, backend)
        self.backend = backend
        self.num_heads, self.head_dim = num_heads, head_dim
        self.scale = head_dim ** -0.5 if scale is None else float(scale)
        for name in AMAX:  # per-head ranges (V per channel: per head and channel); NaN = not calibrated
            shape = (num_heads, head_dim) if name == "amax_v" and self.recipe.v_granularity.per_channel else (num_heads,)
            self.register_buffer(name, torch.full(shape, math.nan, device=device))
        self.observer = None  # set by qflash.calibrate while it runs
        self.folded = ()  # the input transforms folded into the projections (fold_transforms)
        self.samples = None  # (q, k, v) kept by qflash.calibrate(..., samples=n), for intsoftmax.select
        self._static = {}  # (device, kernel?) -> StaticScales, golden ranges or None (uncalibrated)
        self.register_load_state_dict_post_hook(_loaded)

    # -- ranges and static scales ----------------------------------------------------------------
    def invalidate(self) -> None:
        """Forget the derived static scales (the ranges changed or moved); rebuilt on the next call."""
        self._static = {}

    @property
    def calibrated(self) -> bool:
        """Whether the module has static ranges (reads the buffers: a host sync on CUDA)."""
        return not any(torch.isnan(getattr(self, n)).any().item() for n in AMAX)

    def set_ranges(self, amax_q, amax_k, amax_v) -> None:
        """Fix the per-head ranges (``num_heads`` values each); ``amax_v`` may also be per head and
        channel, (num_heads, head_dim): reduced over the channels unless the recipe keeps V per
        channel, which needs them. :func:`qflash.calibrate` calls this."""
        ranges = [torch.as_tensor(a, dtype=torch.float32).detach() for a in (amax_q, amax_k, amax_v)]
        if ranges[2].dim() == 2 and self.amax_v.dim() == 1:
            ranges[2] = ranges[2].amax(1)
        for i, name in enumerate(AMAX):
            want = getattr(self, name).shape
            a = ranges[i].reshape(-1)
            if a.numel() != want.numel() or not (torch.isfinite(a) & (a >= 0)).all():
                what = "per head and channel" if len(want) == 2 else "one per head"
                raise ValueError(f"{name} must hold {want.numel()} finite non-negative values ({what}), got "
                                 f"{a.tolist()}; calibrate on finite inputs")
            ranges[i] = a.reshape(want)
        for name, a in zip(AMAX, ranges):
            getattr(self, name).copy_(a)
        self.invalidate()

    def _apply(self, fn, recurse=True):
        # .half() / .to(dtype) would round the calibrated ranges: keep them float32, move them only
        ranges = {n: self._buffers[n] for n in AMAX}
        super()._apply(fn, recurse)
        for n, old in ranges.items():
            if self._buffers[n].dtype != torch.float32:
                self._buffers[n] = old.to(self._buffers[n].device)
        self.invalidate()
        return self

    def _resolve(self, device: torch.device, kernel: bool):
        """Static scales for this device and backend (built once), or None when uncalibrated."""
        key = (device, kernel)
        if key not in self._static:  # the only host sync: once after calibration, a load or a move
            self._static[key] = self._build_static(device, kernel)
        return self._static[key]

    def _build_static(self, device, kernel: bool):
        per_head = [getattr(self, n).detach().float().cpu().numpy() for n in AMAX]
        nan = [bool(np.isnan(a).any()) for a in per_head]
        if all(nan):
            return None
        if any(nan):
            raise ValueError(f"{type(self).__name__} has ranges for only some of q, k, v "
                             f"({', '.join(n for n, bad in zip(AMAX, nan) if not bad)}); run qflash.calibrate again")
        ranges = static_ranges(self.recipe, per_head, type(self).__name__)
        if kernel:
            return api.static_scales(self.recipe, *ranges, heads=self.num_heads, head_dim=self.head_dim,
                                     scale=self.scale, device=device)
        # broadcast over (..., H, N, D): (H,) per head, (H, D) per head and channel
        return tuple(None if a is None else a.reshape(a.shape[0], 1, -1) if a.ndim == 2 else a.reshape(-1, 1, 1)
                     for a in ranges)

    # -- attention -------------------------------------------------------------------------------
    def attend(self, q, k, v, mask=None):
        """Attention on (..., H, N, D) inputs with SDPA semantics; ``mask``: bool or additive float."""
        if self.observer is not None:  # calibration: record ranges, continue in float
            self.observer.observe(q, k, v)
            return float_attention(q, k, v, mask, self.scale)
        if self.training:
            raise ValueError(f"{type(self).__name__} is inference-only (integer attention has no gradient and no "
                             "dropout): call model.eval() before running a patched model")
        kernel = self.backend == "kernel" or (self.backend == "auto" and q.is_cuda)
        static = self._resolve(q.device, kernel)
        if kernel:
            return api.attention(q, k, v, attn_mask=mask, scale=self.scale, recipe=self.recipe, static=static)
        return self._golden(q, k, v, mask, static)

    def _golden(self, q, k, v, mask, amax):
        arrays = [x.detach().to("cpu", torch.float64).numpy() for x in (q, k, v)]
        kw = {}
        if mask is not None:
            m = mask.detach().cpu()
            kw = {"attn_mask": m.numpy()} if m.dtype == torch.bool else {"attn_bias": m.float().numpy()}
        out = torch.from_numpy(self.recipe.attention(*arrays, scale=self.scale, amax=amax, **kw))
        if q.dtype != torch.float64:  # the kernel's one float32 product, then the output dtype (as it rounds)
            out = out.float()
        return out.to(device=q.device, dtype=q.dtype)

    # -- static transforms ------------------------------------------------------------------------
    def foldable(self) -> str | None:
        """Why the recipe's transforms cannot be folded into this module's projections, or None."""
        if not isinstance(self.qkv, nn.Linear) or not isinstance(self.proj, nn.Linear):
            return "qkv and proj must be nn.Linear"
        return None

    def fold_transforms(self, hi, lo) -> None:
        """Fold the recipe's transforms, with static statistics, into the projections: ``hi``,
        ``lo`` are per-head, per-channel maxima and minima of q, k, v over the calibration data
        (three float32 (H, D) arrays). :func:`intsoftmax.transforms.fold_all` turns them into a
        per-channel scale and shift of each of q, k, v, which scale the rows of ``qkv``'s weight and
        bias and shift the bias; V's offset comes back through ``proj``: its bias gains
        ``proj.weight @ c_v``. Attention is unchanged in real arithmetic (float: to rounding; a row
        whose every key is masked now gets ``proj(c_v)`` where it had ``proj(0)``). The recipe
        then runs without transforms (:attr:`folded` keeps them), so the static path applies."""
        why = self.foldable()
        if why is not None:
            raise ValueError(f"{type(self).__name__}: cannot fold the input transforms: {why}")
        scales, shifts, offset = fold_all(self.recipe.transforms, hi, lo)
        with torch.no_grad():
            _affine_rows(self.qkv, _flat(scales), _flat(shifts))
            if offset is not None:
                w = self.proj.weight.double()
                _affine_rows(self.proj, torch.ones(w.shape[0], dtype=torch.float64), w @ _flat([offset]).to(w.device))
        self.folded = self.recipe.transforms
        self.recipe = self.recipe.replace(transforms=())
        self.invalidate()

    def get_extra_state(self) -> dict:
        """The names of the transforms folded into the projections: a calibrated model's state dict
        then loads into a freshly patched one, whose recipe still has them."""
        return {"folded": [t.name for t in self.folded]}

    def set_extra_state(self, state) -> None:
        """Match the module to the loaded weights: folded ones run the recipe without its
        transforms (:meth:`fold_transforms`), unfolded ones with them."""
        names = list(state.get("folded", [])) if isinstance(state, dict) else []
        mine = self.folded or self.recipe.transforms
        if names and names != [t.name for t in mine]:
            raise ValueError(f"{type(self).__name__}: the state dict's projections have the transforms {names} folded "
                             f"in, this module's recipe {[t.name for t in mine]}; patch with the recipe the model "
                             "was calibrated with")
        if bool(names) != bool(self.folded):
            self.folded, self.recipe = (mine, self.recipe.replace(transforms=())) if names else \
                ((), self.recipe.replace(transforms=mine))
            self.invalidate()

    def extra_repr(self) -> str:
        folded = f", folded={'+'.join(t.name for t in self.folded)}" if self.folded else ""
        return (f"heads={self.num_heads}, head_dim={self.head_dim}, backend={self.backend}, recipe={self.recipe.name}"
                + folded)


def _flat(arrays) -> torch.Tensor:
    """(H, D) arrays, concatenated in qkv's row order (head-major within each): float64."""
    return torch.cat([torch.from_numpy(np.asarray(a, np.float64)).reshape(-1) for a in arrays])


def _affine_rows(linear: nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """``linear``'s output row ``i`` becomes ``scale[i] * row + shift[i]`` (weight and bias, in
    float64, then rounded to the parameters' dtype); a missing bias is created."""
    w = linear.weight
    scale, shift = scale.to(w.device), shift.to(w.device)
    if linear.bias is None:
        linear.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
    w.copy_((w.double() * scale[:, None]).to(w.dtype))
    linear.bias.copy_((linear.bias.double() * scale + shift).to(linear.bias.dtype))


def _loaded(module: QAttentionBase, incompatible_keys) -> None:
    """After a state-dict load the ranges may be new: derive the static scales again (a named
    function, not a lambda, so whole modules still pickle)."""
    module.invalidate()


def float_attention(q, k, v, mask, scale: float):
    """Float attention in float32 for any batch dims (calibration passes)."""
    s = (q.float() @ k.float().transpose(-2, -1)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else s + mask.float()
    return (s.softmax(-1).nan_to_num(0.0) @ v.float()).to(q.dtype)


class QAttention(QAttentionBase):
    """timm ViT ``Attention``: ``qkv`` -> heads -> ``q_norm`` / ``k_norm`` -> integer attention ->
    ``norm`` -> ``proj`` -> ``proj_drop``. Shares the given submodules."""

    kind = "vit"

    def __init__(self, qkv: nn.Module, proj: nn.Module, num_heads: int, head_dim: int, *, scale=None,
                 q_norm=None, k_norm=None, norm=None, attn_drop=None, proj_drop=None, recipe=None,
                 backend: str = "auto"):
        super().__init__(num_heads, head_dim, scale, recipe, backend, qkv.weight.device)
        self.qkv = qkv
        self.q_norm = q_norm if q_norm is not None else nn.Identity()
        self.k_norm = k_norm if k_norm is not None else nn.Identity()
        self.attn_drop = attn_drop if attn_drop is not None else nn.Identity()  # kept for the layout; unused
        self.norm = norm if norm is not None else nn.Identity()
        self.proj = proj
        self.proj_drop = proj_drop if proj_drop is not None else nn.Identity()

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if is_causal:  # SDPA's is_causal, as a boolean mask (True = attend)
            if attn_mask is not None:
                raise ValueError("pass either attn_mask or is_causal=True, not both (as for SDPA)")
            attn_mask = torch.ones(N, N, dtype=torch.bool, device=x.device).tril()
        o = self.attend(q, k, v, attn_mask)
        return self.proj_drop(self.proj(self.norm(o.transpose(1, 2).reshape(B, N, -1))))


    def foldable(self) -> str | None:
        if not all(isinstance(m, nn.Identity) for m in (self.q_norm, self.k_norm, self.norm)):
            return "q_norm, k_norm and norm must be identities (a norm after qkv or before proj breaks the affine map)"
        return super().foldable()


class QWindowAttention(QAttentionBase):
    """timm Swin ``WindowAttention``: ``forward(x, mask=None)`` with ``x`` (num_windows * B, N, C),
    batch-major, and ``mask`` (num_windows, N, N) additive (0 / -100 for shifted windows).

    The relative-position bias (H, N, N) and the mask are added once into a (num_windows, H, N, N)
    bias; q, k, v are viewed as (B, num_windows, H, N, D), so the bias broadcasts over the batch
    by strides, never materialised per image.
    """

    kind = "swin"

    def __init__(self, qkv: nn.Module, proj: nn.Module, num_heads: int, head_dim: int, window_size,
                 relative_position_bias_table: nn.Parameter, relative_position_index: torch.Tensor, *,
                 scale=None, attn_drop=None, proj_drop=None, index_persistent: bool = False, recipe=None,
                 backend: str = "auto"):
        super().__init__(num_heads, head_dim, scale, recipe, backend, qkv.weight.device)
        self.window_size = tuple(window_size) if isinstance(window_size, (tuple, list)) else (window_size,) * 2
        self.window_area = self.window_size[0] * self.window_size[1]
        self.qkv = qkv
        self.attn_drop = attn_drop if attn_drop is not None else nn.Identity()  # kept for the layout; unused
        self.proj = proj
        self.proj_drop = proj_drop if proj_drop is not None else nn.Identity()
        self.relative_position_bias_table = relative_position_bias_table
        self.register_buffer("relative_position_index", relative_position_index, persistent=index_persistent)

    def relative_position_bias(self) -> torch.Tensor:
        """(H, N, N) float32 bias gathered from the table."""
        n = self.window_area
        b = self.relative_position_bias_table[self.relative_position_index.reshape(-1)].reshape(n, n, -1)
        return b.permute(2, 0, 1).float()

    def forward(self, x, mask=None):
        B_, N, _ = x.shape
        if N != self.window_area:
            raise ValueError(f"window attention got {N} tokens per window; window_size={self.window_size} "
                             f"needs {self.window_area}")
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias()
        if mask is None:
            o = self.attend(q, k, v, bias)
        else:
            nw = mask.shape[0]
            if tuple(mask.shape) != (nw, N, N) or B_ % nw:
                raise ValueError(f"mask shape {tuple(mask.shape)} with {B_} windows in x: expected "
                                 f"(num_windows, {N}, {N}) with num_windows dividing {B_}")
            bias = bias + mask.float()[:, None]  # (nW, H, N, N)
            split = (B_ // nw, nw)
            o = self.attend(q.unflatten(0, split), k.unflatten(0, split), v.unflatten(0, split), bias).flatten(0, 1)
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(B_, N, -1)))
