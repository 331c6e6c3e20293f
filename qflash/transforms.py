"""The input transforms of :mod:`intsoftmax.transforms` on torch tensors, value for value.

Each golden transform has a twin here, registered by its kind, that computes the same float32
values with the same correctly rounded operations (amax, amin, +, -, *, /, and the square root
corrected to its correct rounding), so the int8
inputs the kernel sees equal the golden model's bit for bit. They run as torch ops before the
quantization (extra passes over q, k, v; no host sync); the value offset goes to the kernel's
epilogue, which adds it to the rows that attend to a key.
"""
from __future__ import annotations

import torch

from intsoftmax.transforms import compose

#: kind -> function (q, k, v) -> (q, k, v, v_offset or None), float32 tensors (..., N, D).
TWINS: dict = {}


def twin(kind: str):
    def wrap(fn):
        TWINS[kind] = fn
        return fn
    return wrap


def _midrange(x: torch.Tensor) -> torch.Tensor:
    lo, hi = torch.aminmax(x, dim=-2, keepdim=True)  # (one pass over x for both)
    return (hi + lo) / 2


def _abs_max(x: torch.Tensor) -> torch.Tensor:
    """``max |x|`` per channel over the keys, from one min/max pass (no ``abs`` copy): ``-min`` is exact."""
    lo, hi = torch.aminmax(x, dim=-2, keepdim=True)
    return torch.maximum(hi, -lo)


@twin("key_offset")
def key_offset(q, k, v):
    return q, k - _midrange(k), v, None


@twin("value_offset")
def value_offset(q, k, v):
    c = _midrange(v)
    return q, k, v - c, c


@twin("channel_balance")
def channel_balance(q, k, v):
    a_q, a_k = _abs_max(q), _abs_max(k)
    live = (a_q > 0) & (a_k > 0)
    one = torch.ones_like(a_q)
    s = torch.where(live, sqrt_f32(torch.where(live, a_k, one) / torch.where(live, a_q, one)), one)
    return q * s, k / s, v, None


def sqrt_f32(r: torch.Tensor) -> torch.Tensor:
    """:func:`intsoftmax.transforms.sqrt_f32`: the correctly rounded float32 square root."""
    r64 = r.double()
    s = torch.sqrt(r64).float()
    up = torch.nextafter(s, torch.full_like(s, float("inf")))
    down = torch.nextafter(s, torch.zeros_like(s))
    s = torch.where(((s.double() + up.double()) / 2) ** 2 < r64, up, s)
    return torch.where(((s.double() + down.double()) / 2) ** 2 > r64, down, s)


def _twin(t, q, k, v):
    if t.kind not in TWINS:
        raise ValueError(f"transform {t.name} has no torch twin in qflash.transforms; register one with "
                         "@qflash.transforms.twin(kind)")
    return TWINS[t.kind](q, k, v)


def apply_all(transforms, q, k, v):
    """:func:`intsoftmax.transforms.apply_all` on tensors: float32 ``(q, k, v, v_offset)``."""
    return compose(transforms, *(x.float() for x in (q, k, v)), _twin)
