"""The torch API: SDPA-like integer-only attention on the fused kernel.

* :func:`attention` - float in, float out; INT8 scales measured on the device per call
  (dynamic) or fixed by calibration (:class:`StaticScales`: no reductions at all).
* :func:`attention_int8` - pre-quantized int8 Q/K/V plus their scales, float32 or int8 out.

Both validate their inputs (``ValueError`` / ``TypeError`` naming the value and the fix),
never synchronise with the host, and run the same kernel template
(:mod:`qflash.kernel`) that matches :meth:`intsoftmax.Recipe.attention` bit for bit. In eager
mode they call the implementation directly; under ``torch.compile`` they go through the
``torch.library`` ops of :mod:`qflash.ops`, so graphs have no breaks.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import numpy as np
import torch

from intsoftmax import Recipe
from intsoftmax.granularity import scales_from_amax

from . import cpu, plan
from .spec import HEAD_DIMS, KernelSpec, MaskKind, OutKind, check_compiles
from .table import Col, host_table

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@functools.lru_cache(maxsize=256)
def recipe_from_json(text: str) -> Recipe:
    return Recipe.from_json(text)


@functools.lru_cache(maxsize=256)
def _spec(recipe: Recipe, head_dim: int, mask_kind: MaskKind, out_kind: OutKind) -> KernelSpec:
    return KernelSpec.build(recipe, head_dim, mask_kind, out_kind)


@functools.lru_cache(maxsize=64)
def _lut(strategy, device: str):
    table = getattr(strategy, "table", None)
    return None if table is None else torch.tensor(np.asarray(table), dtype=torch.int32, device=device)


#: Register caps of two-pass kernels by head dim, measured on the H200 (docs/performance.md):
#: 128 registers keep four programs of 4 warps on an SM, 96 five.
MAXNREG = {16: 96, 32: 96, 64: 128}


#: What to do when the kernel's imports fail.
TRITON_HINT = ("qflash's kernel needs triton (and a CUDA device, or TRITON_INTERPRET=1): pip install "
               "'intsoftmax[kernel]'. Without it, qflash.attention and attention_int run the golden model on "
               "CPU tensors")


@functools.cache
def _backend():
    """``(quantize, kernel)``: the Triton side, imported on first use so that ``import qflash`` and
    the CPU path work without triton."""
    try:
        from . import kernel, quantize
    except ImportError as err:
        raise ImportError(TRITON_HINT) from err
    return quantize, kernel


@functools.cache
def _interpreter() -> bool:
    """Whether the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1`` when it was imported)."""
    try:
        from .kernel import _qflash_fwd
        from .launcher import interpreted
    except ImportError:
        return False
    return interpreted(_qflash_fwd)


def _launch_config(spec: KernelSpec) -> dict:
    """Tile sizes, warps, pipeline depth and register cap per head dim (never per sequence
    length: no recompiles per N)."""
    if spec.twin.gathers:  # table gathers: Triton's pipeliner rejects them
        return dict(block_m=64, num_warps=4, num_stages=1)
    if not spec.two_pass and spec.acc_bits == 32:  # (the online wide rule runs the two-pass loops)
        return dict(block_m=64, num_warps=4, num_stages=2)
    cap = MAXNREG.get(spec.head_dim) if spec.acc_bits == 32 else None  # the wide sum's registers: no cap
    return dict(block_m=64, block_n=64, num_warps=4, num_stages=3, **({"maxnreg": cap} if cap else {}))


# -- validation ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Call:
    """A validated call: batch dims flattened to ``B = B1 * B2``."""

    batch: tuple
    B: int
    B2: int
    H: int
    NQ: int
    NK: int
    D: int
    scale: float
    mask_kind: MaskKind
    device: torch.device


def _recipe(recipe) -> Recipe:
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be an intsoftmax.Recipe, got {type(recipe).__name__}; "
                        "e.g. intsoftmax.Recipe.default() or Recipe.qflash()")
    return recipe


def _check_sdpa_flags(q, k, v, dropout_p, is_causal, enable_gqa, attn_mask) -> None:
    """SDPA's arguments that qflash takes but does not change: no dropout (an inference op), no
    autograd, a causal flag without a mask, GQA only when asked for."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or dropout_p != 0:
        raise ValueError(f"dropout_p={dropout_p!r}: qflash is an inference op; pass dropout_p=0.0 "
                         "(e.g. run the model in eval mode)")
    for name, flag in (("is_causal", is_causal), ("enable_gqa", enable_gqa)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if is_causal and attn_mask is not None:
        raise ValueError("is_causal=True takes no attn_mask (as in SDPA); pass the causal mask combined with "
                         "yours as attn_mask instead")
    if torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in (q, k, v, attn_mask)):
        raise ValueError("qflash attention is inference-only (integer ops have no gradient); call it under "
                         "torch.no_grad() or torch.inference_mode(), or pass detached tensors")


class Grouped(NamedTuple):
    """A call after :func:`_grouped`: its tensors, the query heads ``heads`` of the user's call,
    ``groups`` query heads per K/V head, and whether they were ``packed`` into the rows."""

    q: object
    k: object
    v: object
    attn_mask: object
    heads: int
    groups: int = 1
    packed: bool = False


def _grouped(q, k, v, attn_mask, enable_gqa: bool, static=None, pack: bool = False) -> Grouped:
    """GQA as strides: with ``enable_gqa`` and ``H_kv < H`` K/V heads, query head ``h`` reads K/V
    head ``h // G`` (``G = H / H_kv``, SDPA's grouping). The call becomes one over the batch
    ``(B, H_kv)`` and ``G`` heads: q (and a mask) split their head dim into ``(H_kv, G)``, k and v
    repeat along ``G`` with stride 0 (views, no copies). With ``pack`` (no mask, not causal, and
    every query row's constants independent of its head: :func:`_packable`) and q's heads and
    rows one run of memory, the ``G`` heads are packed into the rows instead: q becomes
    (B, H_kv, G * Nq, D), so each program reads its K and V tiles once for all ``G`` heads (a
    decode step's G-fold K/V traffic, gone). Per-head ``static`` tables do not regroup: an error."""
    heads = q.shape[-3] if isinstance(q, torch.Tensor) and q.dim() >= 3 else 1
    if not enable_gqa or not all(isinstance(x, torch.Tensor) for x in (q, k, v)) or q.dim() < 3 or \
            k.dim() != q.dim() or k.shape[-3] == q.shape[-3]:
        return Grouped(q, k, v, attn_mask, heads)
    H, H_kv = q.shape[-3], k.shape[-3]
    if q.dim() != 4:
        raise ValueError(f"enable_gqa needs (B, H, N, D) inputs, got q {tuple(q.shape)}; flatten the batch dims")
    if H_kv == 0 or H % H_kv or v.shape[-3] != H_kv:
        raise ValueError(f"enable_gqa: q has {H} heads, k {H_kv} and v {v.shape[-3]}; K and V need the same "
                         "number of heads, dividing q's")
    if static is not None and static.per_head:
        raise ValueError("enable_gqa with per-head static scales is not supported; calibrate per tensor "
                         "(static_scales with one amax per tensor) or pass enable_gqa=False with repeated K/V")
    G = H // H_kv
    B = q.shape[0]
    if pack and attn_mask is None:
        try:  # one run of memory per K/V head: heads, then rows
            return Grouped(q.view(B, H_kv, G * q.shape[2], q.shape[3]), k, v, None, H, G, True)
        except RuntimeError:
            pass
    if attn_mask is not None and isinstance(attn_mask, torch.Tensor):
        try:
            attn_mask = attn_mask.expand(B, H, q.shape[-2], k.shape[-2]).unflatten(1, (H_kv, G))
        except RuntimeError:
            raise ValueError(f"attn_mask shape {tuple(attn_mask.shape)} does not broadcast to "
                             f"{(B, H, q.shape[-2], k.shape[-2])}") from None

    def repeat(x):
        return x.unsqueeze(2).expand(x.shape[0], H_kv, G, *x.shape[2:])
    return Grouped(q.unflatten(1, (H_kv, G)), repeat(k), repeat(v), attn_mask, H, G)


def _packable(recipe, is_causal: bool, attn_mask) -> bool:
    """Whether a grouped call may pack its query heads into the rows (:func:`_grouped`): no mask
    and not causal (both index the rows), no input transforms (their statistics are per query
    head), and Q's scales per tensor or per row (not per head or per block of rows)."""
    if is_causal or attn_mask is not None or not isinstance(recipe, Recipe) or recipe.transforms:
        return False
    heads, rows = recipe.q_granularity.block()
    return rows == 1 or (heads is None and rows is None)


def _lifted(q, k, v, attn_mask):
    """(N, D) and (H, N, D) inputs as (1, 1, N, D) and (1, H, N, D) views (SDPA takes them); the
    caller reshapes the output back. A mask may not have more dims than the inputs."""
    xs = (q, k, v)
    if not all(isinstance(x, torch.Tensor) for x in xs) or len({x.dim() for x in xs}) != 1 or not 2 <= q.dim() < 4:
        return q, k, v, attn_mask
    if isinstance(attn_mask, torch.Tensor) and attn_mask.dim() > q.dim():
        raise ValueError(f"attn_mask has shape {tuple(attn_mask.shape)}, more dims than q {tuple(q.shape)}; "
                         "give q, k, v the batch dims the mask has")
    return tuple(x.reshape((1,) * (4 - x.dim()) + tuple(x.shape)) for x in xs) + (attn_mask,)


def _check(q, k, v, attn_mask, scale, recipe: Recipe, dtypes, what: str, is_causal: bool = False) -> Call:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in dtypes:
            raise TypeError(f"{what}: {name} has dtype {x.dtype}; expected one of {list(dtypes)}")
        if x.dim() not in (4, 5):
            raise ValueError(f"{name} must have shape (N, D), (H, N, D), (B, H, N, D) or (B1, B2, H, N, D), got "
                             f"{tuple(x.shape)}; flatten further batch dims into B1, B2")
        if x.device != q.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q.device}; move all inputs to one device")
    if len({q.dtype, k.dtype, v.dtype}) != 1:
        raise TypeError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}; cast them to one dtype")
    if not (q.dim() == k.dim() == v.dim()) or q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; "
                         "q and k need the same batch, heads and head dim, k and v the same keys "
                         "(K/V with fewer heads: enable_gqa=True)")
    D = q.shape[-1]
    if k.shape[-1] != D or v.shape[-1] != D:
        raise ValueError(f"head dims differ: q {D}, k {k.shape[-1]}, v {v.shape[-1]}; qflash needs one head dim")
    if D not in HEAD_DIMS:
        raise ValueError(f"head dim {D} is not supported; use one of {HEAD_DIMS} (pad the head dim with zeros)")
    NQ, NK = q.shape[-2], k.shape[-2]
    if NQ == 0 or NK == 0:
        raise ValueError(f"empty sequence: Nq={NQ}, Nk={NK}")
    if q.numel() == 0:
        raise ValueError(f"empty input: q has shape {tuple(q.shape)}; attention needs at least one batch and head")
    check_compiles(recipe)
    recipe.check_seq_len(NK)
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise ValueError(f"scale={scale!r}: must be a finite positive float (default 1/sqrt(D))")
    batch = tuple(q.shape[:-3])
    B2 = batch[1] if len(batch) == 2 else 1
    mask_kind = MaskKind.CAUSAL if is_causal else MaskKind.NONE
    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor):
            raise TypeError(f"attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}")
        if attn_mask.device != q.device:
            raise ValueError(f"attn_mask is on {attn_mask.device} but q is on {q.device}")
        if attn_mask.dtype == torch.bool:
            mask_kind = MaskKind.BOOL
        elif attn_mask.dtype in FLOAT_DTYPES:
            mask_kind = MaskKind.FLOAT
        elif attn_mask.dtype == torch.int32 and what == "attention_int8":
            mask_kind = MaskKind.INT
        else:
            raise TypeError(f"attn_mask dtype {attn_mask.dtype}: use bool (True = attend) or a float additive bias"
                            + (" or int32 in QK units" if what == "attention_int8" else ""))
        full = batch + (q.shape[-3], NQ, NK)
        try:
            broadcasts = len(attn_mask.shape) <= len(full) and torch.broadcast_shapes(attn_mask.shape, full) == full
        except RuntimeError:
            broadcasts = False
        if not broadcasts:
            raise ValueError(f"attn_mask shape {tuple(attn_mask.shape)} does not broadcast to {full}")
    return Call(batch, math.prod(batch), B2, q.shape[-3], NQ, NK, D, float(scale), mask_kind, q.device)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape((-1,) + tuple(x.shape[-3:])) if x.dim() == 5 else x


def _mask5(attn_mask, call: Call):
    """The mask as a strided (stride-0 broadcast, no copy) view of shape (B1, B2, H, Nq, Nk)."""
    if attn_mask is None:
        return None
    full = call.batch + (call.H, call.NQ, call.NK)
    m = attn_mask.expand(full)
    return m.unsqueeze(1) if len(call.batch) == 1 else m


# -- static scales -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class StaticScales:
    """Calibrated INT8 scales of a layer and the constant table derived from them once.

    amax_q/k/v: float32 device tensors of shape (1,) (per tensor) or (H,) (per head), (1, D) or
    (H, D) for V per channel: the
    ranges the float path quantizes with (None when built from int8 scales; ``amax_q`` None for
    a Q per token or block, measured per call). table: the int32 constant table
    (:mod:`qflash.table`), valid for ``scale`` and ``out_scale``; None where Q is measured per call
    (its rows' constants are derived per call from Q's scales and the static K and V ones).
    """

    recipe: Recipe
    amax_q: torch.Tensor | None
    amax_k: torch.Tensor | None
    amax_v: torch.Tensor | None
    table: torch.Tensor
    scale: float
    heads: int
    out_scale: float | None

    @property
    def per_head(self) -> bool:
        """Whether any range or constant differs between heads."""
        if self.table is not None:
            return self.table.shape[0] > 1
        return any(a is not None and a.shape[0] > 1 for a in (self.amax_k, self.amax_v))


def _per_layer(name: str, values, granularity, heads: int, head_dim: int) -> np.ndarray:
    """Calibrated ranges as float32: (1,) per tensor, (H,) per head; (1, D) or (H, D) per channel."""
    a = np.array(values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values, dtype=np.float32)
    a = a.reshape(-1)  # a copy: StaticScales never aliases the caller's ranges
    if granularity.per_channel:
        if a.size not in (head_dim, heads * head_dim):
            raise ValueError(f"{name} has {a.size} values; {granularity.name} needs {head_dim} (one per channel) or "
                             f"{heads * head_dim} (per head and channel)")
        a = a.reshape(-1, head_dim)
    elif a.size != (want := 1 if granularity.block()[0] is None else heads):
        raise ValueError(f"{name} has {a.size} values; {granularity.name} needs {want}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(f"{name} must be finite and non-negative, got {a}")
    return a


def static_scales(recipe: Recipe | None, amax_q=None, amax_k=None, amax_v=None, *, heads: int, head_dim: int,
                  scale: float | None = None, scales=None, out_scale: float | None = None,
                  device=None) -> StaticScales:
    """Fix the INT8 scales of a layer: the constants are derived once, on the host, by the golden
    model's own derivation, so later calls do no reductions and no host work.

    recipe: None for :meth:`Recipe.per_tensor`; one without input transforms (``qflash.calibrate``
    folds a recipe's transforms into the model and passes the rest here).
    amax_q/k/v: per-tensor (scalar) or per-head (``heads`` values) ranges, e.g. from calibration;
    the float path quantizes with ``s = amax / 127``. V per channel takes ``head_dim`` or
    ``heads * head_dim`` ranges (per channel, or per head and channel; float output). A recipe whose Q is per token (or per block)
    takes ``amax_q=None``: Q's ranges are measured per call, beside the static K and V ranges (the
    golden model's ``attention(..., amax=(None, amax_k, amax_v))``). scales: instead of ranges, the int8 scales
    ``(s_q, s_k, s_v)`` of pre-quantized inputs (:func:`attention_int8`). out_scale: bakes an
    int8 output scale into the table. device: where the table lives (default: the GPU if any).
    """
    recipe = _recipe(INT_DEFAULT_RECIPE if recipe is None else recipe)
    _no_transforms(recipe, "static_scales")
    if recipe.accumulation.float_softmax:
        raise ValueError("static_scales: the float softmax baseline (Recipe.int_flashattention) measures its "
                         "per-token scales per call; call qflash.attention without static")
    grans = (recipe.q_granularity, recipe.k_granularity, recipe.v_granularity)
    for g, name in zip(grans[1:], "kv"):
        if g.block()[1] is not None:
            raise ValueError(f"static scales need per-tensor or per-head ranges; the recipe's {name} granularity "
                             f"is {g.name}, whose ranges change with every input")
    q_rows = grans[0].block()[1] is not None  # Q per token or block: measured per call
    if grans[2].per_channel and (scales is not None or out_scale is not None):
        raise ValueError("V per channel: static scales take amax_v ranges (D or H*D values) for float inputs and "
                         "give float output (no scales=, no out_scale)")
    if q_rows:
        if scales is not None or out_scale is not None:
            raise ValueError(f"the recipe's q granularity is {grans[0].name}: Q's scales change with every input, so "
                             "int8 inputs pass s_q per call to attention_int8 (no static), and the output is float "
                             "(no out_scale)")
        if amax_q is not None or amax_k is None or amax_v is None:
            raise ValueError(f"the recipe's q granularity is {grans[0].name}: Q's ranges are measured per call; give "
                             "amax_k and amax_v, and amax_q=None")
    elif (scales is None) == (amax_q is None or amax_k is None or amax_v is None):
        raise ValueError("give either amax_q, amax_k, amax_v (float inputs) or scales=(s_q, s_k, s_v) (int8 inputs)")
    for name, n in (("heads", heads), ("head_dim", head_dim)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name}={n!r}: must be a positive int")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not 0 < scale < math.inf):
        raise ValueError(f"scale={scale!r}: must be a finite positive float (default 1/sqrt(head_dim))")
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    _check_out_scale(out_scale)
    if q_rows:
        amax = [None] + [_per_layer(n, a, g, heads, head_dim) for n, a, g in zip(("amax_k", "amax_v"),
                                                                                  (amax_k, amax_v), grans[1:])]
    elif scales is None:
        amax = [_per_layer(n, a, g, heads, head_dim) for n, a, g in zip(("amax_q", "amax_k", "amax_v"),
                                                                        (amax_q, amax_k, amax_v), grans)]
        s = [scales_from_amax(a)[0] for a in amax]
    else:
        amax = None
        if isinstance(scales, (str, bytes)) or not hasattr(scales, "__len__") or len(scales) != 3:
            raise ValueError(f"scales={scales!r}: give the three int8 scales (s_q, s_k, s_v)")
        s = [_per_layer(n, x, g, heads, head_dim) for n, x, g in zip(("s_q", "s_k", "s_v"), scales, grans)]
        for n, x in zip(("s_q", "s_k", "s_v"), s):
            if not (x > 0).all():
                raise ValueError(f"{n} must be positive (x ~= x8 * {n}), got {x}")
    tab = None
    if not q_rows:  # every constant is known now: the table once, on the host
        if grans[2].per_channel:  # (the table's DEQ column only carries NaN then: channel 0's scale)
            s[2] = s[2][:, :1]
        s = [x.reshape(1, -1, 1, 1) for x in s]
        plan = recipe.plan(s[0], s[1], scale, s[2], out_scale)
        tab = host_table(recipe, plan, 1, heads, 1, s_v=s[2])
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device; e.g. 'cuda', 'cuda:1' or 'cpu'") from err
    amax_t = (None,) * 3 if amax is None else tuple(None if a is None else torch.from_numpy(a).to(dev) for a in amax)
    return StaticScales(recipe, *amax_t, None if tab is None else torch.from_numpy(tab).to(dev), scale, heads,
                        None if out_scale is None else float(out_scale))


def _check_static(static, recipe: Recipe, call: Call, device, out_scale, needs_amax: bool, heads: int) -> None:
    """``heads``: the query heads of the user's call (a grouped call's ``call.H`` is one group's, or
    the K/V heads when packed: :func:`_grouped`)."""
    if not isinstance(static, StaticScales):
        raise TypeError(f"static must be a StaticScales (see qflash.static_scales), got {type(static).__name__}")
    if static.recipe != recipe or static.heads != heads or not math.isclose(static.scale, call.scale):
        raise ValueError(f"static scales were built for heads={static.heads}, scale={static.scale}, "
                         f"{static.recipe.name}; this call has heads={heads}, scale={call.scale}, {recipe.name}")
    where = (static.table if static.table is not None else static.amax_k).device
    if where != device:
        raise ValueError(f"static scales live on {where} but the inputs are on {device}; "
                         "pass device= to qflash.static_scales")
    if not needs_amax and static.table is None:
        raise ValueError(f"these static scales measure Q per call ({recipe.q_granularity.name}); attention_int8 "
                         "takes int8 Q with its scales: pass s_q, s_k, s_v instead of static")
    if needs_amax and static.amax_k is None:
        raise ValueError("these static scales were built from int8 scales; float inputs need amax_q/k/v ranges")
    if static.out_scale != out_scale:
        raise ValueError(f"static scales bake out_scale={static.out_scale}; this call asks for {out_scale}")


# -- implementations (no validation; the public functions and the torch.library ops validate) ----
def _run(recipe: Recipe, call: Call, q8, k8, v8, table, attn_mask, out_kind: OutKind, out_dtype, flags=None,
         amax=None, voff=None, s_v=None, float_scales=None, scales=None):
    """Launch the kernel. ``s_v``: V's per-channel scales (B*H, D), for float output.
    ``float_scales``: ``(s_q, s_k, s_v, logit scale)`` of the float softmax baseline (no table).
    ``scales``: int8 inputs' ``(s_q, s_k, s_v)`` from which the kernel derives its constants (no
    table; :func:`_derives_from_scales`)."""
    spec = _spec(recipe, call.D, call.mask_kind, out_kind)
    out = plan.empty((call.B, call.H, call.NQ, call.D), out_dtype, q8.device)
    per_channel = out_kind == OutKind.FLOAT and recipe.v_granularity.per_channel
    config = _launch_config(spec)
    _backend()[1].launch(spec, q8, k8, v8, table, out, mask=_mask5(attn_mask, call),
                         lut=_lut(recipe.exp, str(q8.device)), batch2=call.B2, flags=flags, amax=amax, voff=voff,
                         s_v=s_v if per_channel and float_scales is None else None,
                         derive_scale=call.scale if table is None and float_scales is None else None,
                         q_rows=(amax is not None or scales is not None) and recipe.q_granularity.block()[1] == 1,
                         scales=scales,
                         splits=_splits(spec, call, config["block_m"]), float_scales=float_scales,
                         tail_block_m=_tail_rows(call, config["block_m"]), **config)
    return out.reshape(call.batch + out.shape[1:])


#: Rows of the programs that take a call's last row block when it holds at most this many (one
#: warp's ``mma.sync`` tile; :func:`qflash.kernel.launch`'s ``tail_block_m``), in calls with at
#: least ``TAIL_PROGRAMS_PER_SM`` row blocks per SM (a second launch costs host time that only a
#: GPU-bound call wins back). H200, kernel only at batch 256 (docs/performance.md): A1-A3 -3 to -6 %
#: (fast), -5 to -10 % (per_tensor).
TAIL_ROWS = 16
TAIL_PROGRAMS_PER_SM = 4


def _tail_rows(call: Call, block_m: int) -> int:
    """``tail_block_m`` for this call: :data:`TAIL_ROWS` in GPU-bound calls (and off a GPU, where
    the interpreter checks both launches), else 0. Shapes only."""
    programs = call.B * call.H * -(-call.NQ // block_m)
    return TAIL_ROWS if programs >= TAIL_PROGRAMS_PER_SM * _sm_count(call.device) else 0


#: Query rows of one program (every launch configuration's ``block_m``). With at most this many
#: queries the kernel quantizes q, k and v on load (static ranges, or measured ones per tensor or
#: head): each K and V tile is then quantized by one program only, where a separate
#: quantization launch would cost more.
ON_LOAD_ROWS = 64
#: Programs per SM up to which an eager static call with more queries also quantizes on load:
#: every row block then quantizes K and V again, which costs GPU time (A2 at batch 1: 18 µs
#: against 10 µs for two launches), but one launch saves the host more than that (docs/performance.md).
ON_LOAD_PROGRAMS_PER_SM = 1


@functools.cache
def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 0 elsewhere (the interpreter keeps the
    one-row-block rule alone)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 0


#: Split-key calls (two-pass rules): the programs to aim for per SM, and the fewest keys a split
#: takes. Measured on the H200 (scripts/gpu_splits.py, docs/performance.md): the best split count
#: of every decode row is the first power of two giving >= 1.5 programs per SM; more programs only
#: add merges and a ragged last wave (D1 at batch 8: 957 us unsplit, 1089 with 2 splits).
SPLIT_PROGRAMS_PER_SM = 1.5
SPLIT_MIN_KEYS = 1024


def _splits(spec: KernelSpec, call: Call, block_m: int) -> int:
    """Key splits for a two-pass call whose row blocks leave the GPU idle (decoding: a few queries
    per (batch, head) against many keys): the first power of two that gives
    ``SPLIT_PROGRAMS_PER_SM`` programs per SM, at most one split per ``SPLIT_MIN_KEYS`` keys; 1
    otherwise, and off a GPU. Shapes only, no recompile."""
    if not spec.two_pass:
        return 1  # online rules' integers depend on the tile order from the first key
    programs = call.B * call.H * -(-call.NQ // block_m)
    splits = 1
    while programs * splits < SPLIT_PROGRAMS_PER_SM * _sm_count(call.device) and 2 * splits * SPLIT_MIN_KEYS <= call.NK:
        splits *= 2
    return splits


def _capturing(device: torch.device) -> bool:
    """Whether a CUDA graph is being captured on the current stream (host time is then paid once)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _small(call: Call) -> bool:
    """Whether host time matters more than a little GPU time: outside CUDA-graph capture, few
    enough programs for the GPU at once."""
    programs = call.B * call.H * -(-call.NQ // ON_LOAD_ROWS)
    return programs <= ON_LOAD_PROGRAMS_PER_SM * _sm_count(call.device) and not _capturing(call.device)


def _on_load(call: Call) -> bool:
    """Whether static ranges are quantized inside the attention kernel (one launch): one row block
    per slice, or a small call (:func:`_small`)."""
    return call.NQ <= ON_LOAD_ROWS or _small(call)


def _ranges_apart(recipe: Recipe, derive: bool) -> bool:
    """Whether the attention kernel can quantize on load with ranges measured apart: K's and V's
    one per tensor or per head (the range launch), Q's too, or, with ``derive``, per token
    (:func:`_q_on_load`)."""
    return all(g.block()[1] is None and not g.per_channel for g in (recipe.k_granularity, recipe.v_granularity)) \
        and (recipe.q_granularity.block()[1] is None or _q_on_load(recipe, derive))


def _q_on_load(recipe: Recipe, derive: bool) -> bool:
    """Whether Q's ranges are per token and measured by the attention kernel itself, on the rows
    each program loads; the constants per row are then derived there too (``derive``: a float
    output, which needs no table afterwards)."""
    return derive and recipe.q_granularity.block()[1] == 1


def _derives_from_scales(recipe: Recipe) -> bool:
    """Whether a float-output call on int8 inputs without a table lets the kernel derive its
    constants from the scales: Q per token, whose table would hold a 64-byte row per query (at A4
    batch 256, 154 MB written and read again), and V's scale one per slice."""
    return recipe.q_granularity.block()[1] == 1 and not recipe.v_granularity.per_channel


def _quantized(recipe: Recipe, call: Call, q, k, v, amax_q, amax_k, amax_v, table, derive: bool = False,
               rewrite=None):
    """What the kernel reads: ``(q8, k8, v8, s_v, table, flags, amax, scales)``. Ranges measured
    (dynamic; a NaN range poisons the table) or static: quantized by a separate launch (which
    flags slices holding NaN or Inf), or, where :func:`_on_load` says so, on load (``amax`` set,
    q, k, v passed as they are, ``s_v`` None: the table holds it; the kernel finds NaN and Inf
    itself). Measured ranges quantize on load too when each is one per tensor or head: a range
    launch, the table derived from the ranges, then the attention kernel; with ``derive`` (float
    output, which needs no table afterwards), in a small call (:func:`_small`), each attention
    program derives its own row instead (``table`` None): one launch less on the host. Quantized
    apart with ``derive`` and Q per token (:func:`_derives_from_scales`), the kernel derives its rows'
    constants from the scales (``scales``; no table). ``rewrite``: the input transforms
    (:func:`qflash.transforms.prepare`), applied by the quantization launch with their ranges."""
    # static K and V ranges; a Q per token or block is reduced in the quantization launch (amax_q
    # None: K's range stands in for it, never read)
    amax = None if amax_k is None else (amax_k if amax_q is None else amax_q, amax_k, amax_v)
    qz = _backend()[0]
    q_known = amax_q is not None or _q_on_load(recipe, derive)  # Q's ranges: static, or measured on load
    static_on_load = amax is not None and q_known and not recipe.v_granularity.per_channel  # (V: one range)
    if rewrite is None and _on_load(call) and (static_on_load or amax is None and _ranges_apart(recipe, derive)):
        if amax is None:  # measured ranges: one range launch, the table from them, no int8 copies
            amax = qz.ranges(_flat(q), _flat(k), _flat(v), recipe)
            table = None if derive and _small(call) or _q_on_load(recipe, derive) else \
                qz.table(recipe, *amax, call.scale, call.B, call.H, call.NQ, from_amax=True)
        return _flat(q), _flat(k), _flat(v), None, table, None, amax, None  # V's scale: in the table (DEQ)
    flags = None if amax is None else plan.empty(call.B * call.H, torch.int32, q.device, zero=True)
    (q8, s_q), (k8, s_k), (v8, s_v) = qz.quantize_qkv(_flat(q), _flat(k), _flat(v), recipe, amax, flags, rewrite)
    if table is None and derive and _derives_from_scales(recipe):
        return q8, k8, v8, s_v, None, flags, None, (s_q, s_k, s_v)
    if table is None:
        table = qz.table(recipe, s_q, s_k, s_v, call.scale, call.B, call.H, call.NQ)
    return q8, k8, v8, s_v, table, flags, None, None


def _attention(recipe, call, q, k, v, attn_mask, amax_q=None, amax_k=None, amax_v=None, table=None):
    out_dtype, voff, rewrite = q.dtype, None, None
    if recipe.transforms:  # one statistics launch; the quantization launch rewrites as it loads
        rewrite = _backend_transforms().prepare(recipe, _flat(q), _flat(k), _flat(v))
        voff = rewrite.v_offset
    if recipe.accumulation.float_softmax:  # INT-FlashAttention's baseline: its scales, no constant table
        (q8, s_q), (k8, s_k), (v8, s_v) = _backend()[0].quantize_qkv(_flat(q), _flat(k), _flat(v), recipe)
        return _run(recipe, call, q8, k8, v8, None, attn_mask, OutKind.FLOAT, out_dtype,
                    float_scales=(s_q, s_k, s_v, call.scale))
    q8, k8, v8, s_v, table, flags, amax, scales = _quantized(recipe, call, q, k, v, amax_q, amax_k, amax_v, table,
                                                             derive=True, rewrite=rewrite)
    return _run(recipe, call, q8, k8, v8, table, attn_mask, OutKind.FLOAT, out_dtype, flags, amax, voff, s_v,
                scales=scales)


def _attention_int8(recipe, call, q8, k8, v8, s_q, s_k, s_v, attn_mask, out_scale, out_dtype, table=None):
    if recipe.accumulation.float_softmax:
        return _run(recipe, call, _flat(q8), _flat(k8), _flat(v8), None, attn_mask, OutKind.FLOAT, out_dtype,
                    float_scales=(s_q, s_k, s_v, call.scale))
    if table is None and out_scale is None and _derives_from_scales(recipe):
        return _run(recipe, call, _flat(q8), _flat(k8), _flat(v8), None, attn_mask, OutKind.FLOAT, out_dtype,
                    scales=(s_q, s_k, s_v))
    if table is None:
        table = _backend()[0].table(recipe, s_q, s_k, s_v, call.scale, call.B, call.H, call.NQ, out_scale)
    out_kind = OutKind.FLOAT if out_scale is None else OutKind.INT8
    return _run(recipe, call, _flat(q8), _flat(k8), _flat(v8), table, attn_mask, out_kind,
                out_dtype if out_scale is None else torch.int8)


def _check_int8_scales(call: Call, recipe: Recipe, s_q, s_k, s_v, out_scale, out_dtype) -> None:
    if out_dtype not in FLOAT_DTYPES:
        raise TypeError(f"out_dtype={out_dtype}: use one of {list(FLOAT_DTYPES)} (or out_scale for int8 output)")
    for name, s, g in (("s_q", s_q, recipe.q_granularity), ("s_k", s_k, recipe.k_granularity),
                       ("s_v", s_v, recipe.v_granularity)):
        if not isinstance(s, torch.Tensor) or s.dtype != torch.float32:
            raise TypeError(f"{name} must be a float32 tensor, got {getattr(s, 'dtype', type(s).__name__)}; "
                            "or pass static=qflash.static_scales(..., scales=...)")
        heads, rows = g.block()
        n = call.NK if name == "s_k" else call.NQ
        want = (1,) if heads is None else (call.B * call.H,) if rows is None else (call.B * call.H, n)
        if tuple(s.shape) != want:
            raise ValueError(f"{name} has shape {tuple(s.shape)}; {g.name} needs {want}")
        if s.device != call.device:
            raise ValueError(f"{name} is on {s.device} but the inputs are on {call.device}")
    _check_out_scale(out_scale)
    if out_scale is not None and recipe.accumulation.float_softmax:
        raise ValueError("the float softmax baseline (Recipe.int_flashattention) gives float output only; "
                         "pass out_scale=None")


def _check_out_scale(out_scale) -> None:
    if out_scale is not None and (isinstance(out_scale, bool) or not isinstance(out_scale, (int, float))
                                  or not 0 < out_scale < math.inf):
        raise ValueError(f"out_scale={out_scale!r}: must be a finite positive float, or None for float output")


def attention_op_impl(q, k, v, attn_mask, scale, is_causal, recipe_json, amax_q=None, amax_k=None, amax_v=None,
                      table=None):
    """Body of the ``qflash::attention`` op: validate, then run."""
    recipe = recipe_from_json(recipe_json)
    call = _check(q, k, v, attn_mask, scale, recipe, FLOAT_DTYPES, "attention", is_causal)
    return _attention(recipe, call, q, k, v, attn_mask, amax_q, amax_k, amax_v, table)


def attention_int8_op_impl(q8, k8, v8, s_q, s_k, s_v, attn_mask, scale, is_causal, recipe_json, out_scale=None,
                           out_dtype=torch.float32, table=None):
    """Body of the ``qflash::attention_int8`` op: validate, then run."""
    recipe = recipe_from_json(recipe_json)
    call = _check(q8, k8, v8, attn_mask, scale, recipe, (torch.int8,), "attention_int8", is_causal)
    if table is None:
        _check_int8_scales(call, recipe, s_q, s_k, s_v, out_scale, out_dtype)
    return _attention_int8(recipe, call, q8, k8, v8, s_q, s_k, s_v, attn_mask, out_scale, out_dtype, table)


# -- public functions ------------------------------------------------------------------------------
#: The recipes of a call without ``recipe=``, built once (under torch.compile the public functions
#: only read values): :meth:`Recipe.default` for :func:`attention` (its input transforms measured
#: per call, or folded into a model by ``qflash.calibrate``); :meth:`Recipe.per_tensor` for the
#: integer interfaces (:func:`attention_int`, :func:`attention_int8`, :func:`static_scales`), whose
#: integers and int8 data carry no transforms. A call with static scales runs their recipe.
DEFAULT_RECIPE = Recipe.default()
INT_DEFAULT_RECIPE = Recipe.per_tensor()


def _resolved(recipe, static, default: Recipe):
    """The recipe a call runs: the given one, else the static scales', else ``default``."""
    if recipe is None:
        return static.recipe if isinstance(static, StaticScales) else default
    return recipe


def attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, *,
              recipe: Recipe | None = None, static: StaticScales | None = None) -> torch.Tensor:
    """Integer-only attention with SDPA's signature and semantics: ``softmax(q k^T * scale + mask) v``.

    query, key, value: float16 / bfloat16 / float32 / float64 (quantized from float32, as the
    golden model does), shape (N, D), (H, N, D), (B, H, N, D) or (B1, B2, H, N, D) (e.g. batch
    and Swin windows), any strides; D in 16, 32, 64, 128. attn_mask: bool (True = attend) or an
    additive float bias, broadcastable to (..., H, Nq, Nk) (broadcast by strides, never
    expanded); -inf masks a key; a row with every key masked gives 0; a NaN or +inf bias makes
    its row NaN (as in SDPA). Non-finite inputs make their (b, h) slices NaN. dropout_p:
    0 only (an inference op). is_causal: query i attends to keys j <= i (SDPA's top-left
    alignment), without a mask tensor; key tiles past a row block's diagonal are skipped.
    scale: default 1/sqrt(D). enable_gqa: key and value may have ``H_kv`` heads dividing
    query's ``H`` (query head h reads K/V head ``h // (H / H_kv)``, by strides, no copies). recipe:
    default :meth:`Recipe.default` (or the static scales' recipe). static: calibrated scales (:func:`static_scales`); without
    it the INT8 ranges are measured on the device per call. Inputs may not require grad with
    grad enabled. Returns a tensor of query's dtype and shape.
    """
    recipe = _resolved(recipe, static, DEFAULT_RECIPE)
    inputs = (query, key, value, attn_mask)
    sig = _signature("attention", inputs, (), dropout_p, is_causal, scale, enable_gqa, recipe, static)
    found = _PLANS.get(sig)
    if found is not None:
        return found(*inputs)
    return _planned(sig, inputs, recipe, static, lambda: _attention_call(
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, recipe, static))


def _attention_call(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, recipe, static):
    """:func:`attention`'s ordinary path: validate, derive, launch."""
    if static is not None and not isinstance(static, StaticScales):
        raise TypeError(f"static must be a StaticScales (see qflash.static_scales), got {type(static).__name__}")
    statics = (None,) * 4 if static is None else (static.amax_q, static.amax_k, static.amax_v, static.table)
    _check_sdpa_flags(query, key, value, dropout_p, is_causal, enable_gqa, attn_mask)
    if not torch.compiler.is_compiling() and _golden_on_cpu(query):
        return cpu.attention(_recipe(recipe), query, key, value, attn_mask, scale, is_causal, enable_gqa, static)
    g = _grouped(*_lifted(query, key, value, attn_mask), enable_gqa, static,
                 pack=_packable(_recipe(recipe), is_causal, attn_mask))
    q, k, v, attn_mask = g.q, g.k, g.v, g.attn_mask
    if torch.compiler.is_compiling():  # validated by the op's fake implementation while tracing
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        out = torch.ops.qflash.attention(q, k, v, attn_mask, scale, is_causal, recipe.to_json(), *statics)
        return out.reshape(query.shape)
    recipe = _recipe(recipe)
    call = _check(q, k, v, attn_mask, scale, recipe, FLOAT_DTYPES, "attention", is_causal)
    if static is not None:
        _check_static(static, recipe, call, q.device, None, needs_amax=True, heads=g.heads)
    return _attention(recipe, call, q, k, v, attn_mask, *statics).reshape(query.shape)


def attention_int(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
                  *, recipe: Recipe | None = None,
                  static: StaticScales | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`attention`'s integer result before dequantization (same arguments): ``(values,
    scale)`` with int32 ``values`` (``out_frac_bits`` fractional bits of V's scale) and float32
    ``scale`` per ``(b, h)`` (shape (B*H,) or (1,); (B*H, D) for V per channel), so ``output =
    values * scale`` (broadcast over the rows of each slice). ``values``
    equals :meth:`intsoftmax.Recipe.attention_int` bit for bit. recipe: default
    :meth:`Recipe.per_tensor` (or the static scales'); integer outputs take no input transforms."""
    recipe = _recipe(_resolved(recipe, static, INT_DEFAULT_RECIPE))
    _no_transforms(recipe, "attention_int")
    if recipe.accumulation.float_softmax:
        raise ValueError("attention_int: the float softmax baseline (Recipe.int_flashattention) has no integer "
                         "output; call qflash.attention")
    _check_sdpa_flags(query, key, value, dropout_p, is_causal, enable_gqa, attn_mask)
    if _golden_on_cpu(query):
        return cpu.attention_int(recipe, query, key, value, attn_mask, scale, is_causal, enable_gqa, static)
    g = _grouped(*_lifted(query, key, value, attn_mask), enable_gqa, static,
                 pack=_packable(recipe, is_causal, attn_mask))
    q, k, v, attn_mask = g.q, g.k, g.v, g.attn_mask
    call = _check(q, k, v, attn_mask, scale, recipe, FLOAT_DTYPES, "attention", is_causal)
    statics = (None,) * 4
    if static is not None:
        _check_static(static, recipe, call, q.device, None, needs_amax=True, heads=g.heads)
        statics = (static.amax_q, static.amax_k, static.amax_v, static.table)
    q8, k8, v8, s_v, table, flags, amax, _ = _quantized(recipe, call, q, k, v, *statics)
    values = _run(recipe, call, q8, k8, v8, table, attn_mask, OutKind.INT32, torch.int32, flags, amax)
    # the output scale s_v 2**-F: from the quantization, or the static table's DEQ column (the same float32)
    scale = s_v * 2.0**-recipe.out_frac_bits if s_v is not None else table[:, 0, Col.DEQ].view(torch.float32)
    if g.packed and scale.shape[0] > 1:  # per (b, K/V head): one per (b, query head), as unpacked
        scale = scale.repeat_interleave(g.groups, dim=0)
    return values.reshape(query.shape), scale


def attention_int8(q8, k8, v8, s_q=None, s_k=None, s_v=None, attn_mask=None, dropout_p=0.0, is_causal=False,
                   scale=None, enable_gqa=False, *, recipe: Recipe | None = None, out_scale: float | None = None,
                   out_dtype: torch.dtype = torch.float32, static: StaticScales | None = None) -> torch.Tensor:
    """Integer attention on pre-quantized inputs ``x ~= x8 * s_x``.

    q8, k8, v8: int8, shapes as in :func:`attention` (V is read fastest when its keys are
    contiguous, e.g. a transposed (B, H, D, N) tensor). s_q, s_k, s_v: float32 scales matching
    the recipe's granularities: shape (1,) per tensor, (B*H,) per head, (B*H, Nq) per token or
    block (Q only); or ``static=qflash.static_scales(recipe, scales=..., ...)``, whose table is
    derived once (one kernel launch per call). attn_mask: bool, float (nats) or int32 (QK
    units, ``MASKED_LOGIT`` = masked). dropout_p, is_causal, scale, enable_gqa: as in
    :func:`attention`. recipe: default :meth:`Recipe.per_tensor` (or the static scales'). out_scale: None for a float output of ``out_dtype``, or the scale of an
    int8 output.
    """
    recipe = _resolved(recipe, static, INT_DEFAULT_RECIPE)
    inputs = (q8, k8, v8, attn_mask, s_q, s_k, s_v)
    extent = (v8.storage_offset(), v8.untyped_storage().nbytes()) if isinstance(v8, torch.Tensor) else ()
    sig = _signature("attention_int8", inputs, extent, dropout_p, is_causal, scale, enable_gqa, recipe, static,
                     out_scale, out_dtype)
    found = _PLANS.get(sig)
    if found is not None:
        return found(*inputs)
    return _planned(sig, inputs, recipe, static, lambda: _attention_int8_call(
        q8, k8, v8, s_q, s_k, s_v, attn_mask, dropout_p, is_causal, scale, enable_gqa, recipe, out_scale, out_dtype,
        static))


def _attention_int8_call(q8, k8, v8, s_q, s_k, s_v, attn_mask, dropout_p, is_causal, scale, enable_gqa, recipe,
                         out_scale, out_dtype, static):
    """:func:`attention_int8`'s ordinary path: validate, derive, launch."""
    _no_transforms(recipe, "attention_int8")
    _no_per_channel(recipe, "attention_int8")
    table = None if static is None else static.table
    shape = q8.shape
    _check_sdpa_flags(q8, k8, v8, dropout_p, is_causal, enable_gqa, attn_mask)
    if not torch.compiler.is_compiling() and _golden_on_cpu(q8):
        raise ValueError("attention_int8 on CPU tensors needs the Triton interpreter (TRITON_INTERPRET=1) or a "
                         "CUDA device; qflash.attention runs the golden model on CPU tensors")
    g = _grouped(*_lifted(q8, k8, v8, attn_mask), enable_gqa, static, pack=_packable(_recipe(recipe), is_causal,
                                                                                     attn_mask))
    q8, k8, v8, attn_mask = g.q, g.k, g.v, g.attn_mask
    if g.packed:  # Q's per-token scales follow its rows; K's and V's stay per K/V head
        if isinstance(s_q, torch.Tensor) and s_q.dim() == 2:
            s_q = s_q.reshape(q8.shape[0] * q8.shape[1], q8.shape[2])
    else:
        s_k, s_v = (_per_query_head(s, g.groups) for s in (s_k, s_v))
    if torch.compiler.is_compiling():
        scale = 1.0 / math.sqrt(q8.shape[-1]) if scale is None else float(scale)
        return torch.ops.qflash.attention_int8(q8, k8, v8, s_q, s_k, s_v, attn_mask, scale, is_causal,
                                               recipe.to_json(), None if out_scale is None else float(out_scale),
                                               out_dtype, table).reshape(shape)
    recipe = _recipe(recipe)
    call = _check(q8, k8, v8, attn_mask, scale, recipe, (torch.int8,), "attention_int8", is_causal)
    if static is None:
        _check_int8_scales(call, recipe, s_q, s_k, s_v, out_scale, out_dtype)
    else:
        _check_out_scale(out_scale)
        _check_static(static, recipe, call, q8.device, out_scale, needs_amax=False, heads=g.heads)
    return _attention_int8(recipe, call, q8, k8, v8, s_q, s_k, s_v, attn_mask, out_scale, out_dtype,
                           table).reshape(shape)


# -- call plans (qflash.plan): a signature's launches recorded once, replayed after ----------------
_PLANS = plan.Cache()


def _signature(name: str, tensors, extent, *args):
    """A call's replay key: grad mode, CUDA-graph capture, every argument (a recipe by value,
    static scales by identity), and per tensor its shape, strides, dtype, device, 16-byte
    alignment, ``requires_grad`` and which earlier argument it aliases. None where no plan
    applies (tracing, CPU tensors, unhashable arguments)."""
    q = tensors[0]
    if not isinstance(q, torch.Tensor) or not q.is_cuda or torch.compiler.is_compiling():
        return None
    metas, ptrs = [], []
    for x in tensors:
        if isinstance(x, torch.Tensor):
            p = x.data_ptr()
            metas.append((x.shape, x.stride(), x.dtype, x.device, p % 16, x.requires_grad,
                          ptrs.index(p) if p in ptrs else -1))
            ptrs.append(p)
        else:
            metas.append(x)
    sig = (name, torch.is_grad_enabled(), _capturing(q.device), extent, *metas, *args)
    try:
        hash(sig)
    except TypeError:
        return None
    return sig


def _planned(sig, inputs, recipe, static, run):
    """Run the ordinary path; where ``sig`` allows, record its launches into a plan for the next call."""
    if sig is None or _interpreter() or _PLANS.known(sig):  # known here: it could not be planned
        return run()
    constants = () if not isinstance(static, StaticScales) else (static.table, static.amax_q, static.amax_k,
                                                                  static.amax_v)
    if isinstance(recipe, Recipe):
        constants += (_lut(recipe.exp, str(inputs[0].device)),)
    with plan.recording(inputs, constants) as rec:
        out = run()
    try:
        recorded = plan.Plan(rec, out)
    except plan.Unplannable:
        _PLANS.put(sig, None)
        return out
    _PLANS.put(sig, recorded)
    return out


def _backend_transforms():
    from . import transforms
    return transforms


def _no_per_channel(recipe, what: str) -> None:
    if isinstance(recipe, Recipe) and recipe.v_granularity.per_channel:
        raise ValueError(f"{what} takes no recipe with per-channel V scales yet (they are measured per call): "
                         "use qflash.attention or attention_int with dynamic ranges, or "
                         "recipe.replace(v_granularity=PerHead())")


def _no_transforms(recipe, what: str) -> None:
    if isinstance(recipe, Recipe) and recipe.transforms:
        raise ValueError(f"{what} takes no recipe with input transforms (they rewrite float inputs and add an offset "
                         "to the float output): use qflash.attention with dynamic ranges, fold them into a patched "
                         "model with qflash.calibrate, or use recipe.replace(transforms=())")


def _golden_on_cpu(q) -> bool:
    """CPU tensors without the Triton interpreter: no kernel to run, so the golden model answers."""
    return isinstance(q, torch.Tensor) and q.device.type == "cpu" and not _interpreter()


def _per_query_head(s, groups: int):
    """A per-K/V-head scale vector (B*H_kv,) repeated to the query heads (B*H,) of a grouped call."""
    if groups == 1 or not isinstance(s, torch.Tensor) or s.dim() != 1 or s.numel() == 1:
        return s
    return s.repeat_interleave(groups)
