"""``calibrate(model, batches)``: fix the INT8 ranges of every patched attention module.

Observers record ``max |x|`` of q, k and v per head over all the batches (the attention itself
runs in float meanwhile, so every layer sees float activations). The per-head ranges go to each
module's ``amax_q/k/v`` buffers: a per-tensor recipe uses their maximum, a per-head recipe uses
them as they are, so one calibration serves every recipe, and it is saved and loaded with the
state dict. Recipes with input transforms take a first pass whose per-channel statistics are
folded into the projections (:meth:`~qflash.nn.modules.QAttentionBase.fold_transforms`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from .modules import AMAX, QAttentionBase, check_static


class Observer:
    """Running per-head ``max |x|`` of q, k, v (tensors of shape (H,) on the inputs' device; V's
    (H, D), per head and channel, reduced by modules that keep V per head), and
    the first ``keep`` (H, N, D) slices of the first batch's q, k, v (float32 CPU arrays)."""

    def __init__(self, keep: int = 0):
        self.amax = None
        self.keep = keep
        self.samples = None

    @property
    def seen(self) -> bool:
        return self.amax is not None

    def observe(self, q, k, v) -> None:
        # (..., H, N, D) -> (H,): reduce everything but the head axis; V also per channel, (H, D)
        cur = [x.detach().abs().float().movedim(-3, 0).flatten(1).amax(1) for x in (q, k)]
        cur.append(v.detach().abs().float().movedim(-3, 0).flatten(1, -2).amax(1))
        self.amax = cur if self.amax is None else [torch.maximum(a, c) for a, c in zip(self.amax, cur)]
        if self.keep and self.samples is None:
            self.samples = tuple(x.detach().float().reshape(-1, *x.shape[-3:])[:self.keep].cpu().numpy()
                                 for x in (q, k, v))


class ChannelObserver:
    """Running per-head, per-channel maxima and minima of q, k, v (each (H, D)): the statistics of
    static input transforms (:meth:`QAttentionBase.fold_transforms`)."""

    def __init__(self):
        self.hi = self.lo = None

    @property
    def seen(self) -> bool:
        return self.hi is not None

    def observe(self, q, k, v) -> None:
        # (..., H, N, D) -> (H, M, D) -> (H, D)
        flat = [x.detach().float().movedim(-3, 0).flatten(1, -2) for x in (q, k, v)]
        hi, lo = [x.amax(1) for x in flat], [x.amin(1) for x in flat]
        self.hi = hi if self.hi is None else [torch.maximum(a, c) for a, c in zip(self.hi, hi)]
        self.lo = lo if self.lo is None else [torch.minimum(a, c) for a, c in zip(self.lo, lo)]


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured: the batch count and, per module path, the per-head
    ``(amax_q, amax_k, amax_v)`` ranges (CPU float32 tensors of shape (H,); (H, D) for a module
    whose recipe keeps V per channel)."""

    batches: int
    ranges: dict

    def __str__(self) -> str:
        lines = [f"qflash.calibrate: {len(self.ranges)} module(s), {self.batches} batch(es)"]
        lines += [f"  {p}: amax q {q.max().item():.4g}, k {k.max().item():.4g}, v {v.max().item():.4g}"
                  for p, (q, k, v) in self.ranges.items()]
        return "\n".join(lines)


def _default_forward(model, batch):
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def calibrate(model: nn.Module, batches, *, forward=None, samples: int = 0) -> Calibration:
    """Run ``model`` over ``batches`` and fix static per-head ranges in every patched module.

    batches: an iterable of model inputs (a tensor, a tuple of positional arguments or a dict of
    keyword arguments per batch; for ``(x, y)`` loaders pass ``(x for x, _ in loader)``; a
    re-iterable such as a list when a recipe has input transforms, which take a first pass).
    forward: optional ``forward(model, batch)`` to call instead. samples: keep the q, k, v of this
    many (batch x window) slices of the first batch in each module as ``module.samples``, for
    ``intsoftmax.select(..., model=model)`` (q carries the module's softmax scale relative to
    ``1/sqrt(D)``, so a recipe's default scale sees the module's logits). The model runs in eval mode
    under ``torch.no_grad()`` and its modes are restored afterwards. Afterwards every call uses
    the static scales: no range reductions, no host synchronisation.

    Modules whose recipe has input transforms first measure their statistics (per-channel maxima
    and minima of q, k, v) and fold them into their projections' weights and biases
    (:meth:`QAttentionBase.fold_transforms`: zero runtime cost; the model's weights change, its
    function does not, to float rounding); the ranges are then measured on the folded model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"calibrate expects a torch.nn.Module, got {type(model).__name__}")
    mods = {name: m for name, m in model.named_modules() if isinstance(m, QAttentionBase)}
    if not mods:
        raise ValueError("calibrate found no qflash attention module in the model: call qflash.patch(model) first")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ValueError(f"samples={samples!r}: the number of slices to keep per module, an int >= 0")
    folding = {name: m for name, m in mods.items() if m.recipe.transforms}
    for name, m in mods.items():  # fail before running anything if a recipe cannot use static ranges
        where = f"calibrate ({name or '<model>'})"
        check_static(m.recipe.replace(transforms=()), where)
        why = m.foldable() if m.recipe.transforms else None
        if why is not None:
            raise ValueError(f"{where}: the recipe's input transforms cannot be folded into this module: {why}; "
                             "use recipe.replace(transforms=()) or leave the model uncalibrated")
    if isinstance(batches, torch.Tensor):
        raise TypeError("batches must be an iterable of batches (e.g. a list of tensors), not one tensor; "
                        "pass [x] to calibrate on a single batch")
    if folding and iter(batches) is batches:
        raise TypeError("recipes with input transforms calibrate in two passes over the batches; pass a list "
                        "(or another re-iterable), not an iterator")
    forward = forward or _default_forward
    if folding:
        stats = _observe(model, folding, ChannelObserver, batches, forward)[0]
        for name, m in folding.items():
            m.fold_transforms([x.cpu().numpy() for x in stats[name].hi], [x.cpu().numpy() for x in stats[name].lo])
    observers, count = _observe(model, mods, lambda: Observer(samples), batches, forward)
    for name, m in mods.items():
        kept = observers[name].samples
        if kept is not None:
            ratio = np.float32(m.scale * m.head_dim ** 0.5)
            kept = (kept[0] * ratio if ratio != 1 else kept[0], kept[1], kept[2])
        m.samples = kept
    ranges = {}
    for name, m in mods.items():
        m.set_ranges(*observers[name].amax)
        ranges[name] = tuple(getattr(m, n).detach().cpu().clone() for n in AMAX)
    return Calibration(count, ranges)


def _observe(model, mods: dict, kind, batches, forward) -> tuple[dict, int]:
    """Run the batches in float with a ``kind`` observer in each module: ``(observers, batches run)``."""
    observers = {name: kind() for name in mods}
    modes = [(m, m.training) for m in model.modules()]
    count = 0
    try:
        for name, m in mods.items():
            m.observer = observers[name]
        model.eval()
        with torch.no_grad():
            for batch in batches:
                forward(model, batch)
                count += 1
    finally:
        for m in mods.values():
            m.observer = None
        for m, training in modes:
            m.training = training
    if count == 0:
        raise ValueError("calibrate got no batches; pass a few representative input batches")
    missing = [name for name, o in observers.items() if not o.seen]
    if missing:
        raise ValueError(f"calibration never reached {missing}: the batches did not run through these attention "
                         "modules; calibrate with inputs that use every patched module")
    return observers, count
