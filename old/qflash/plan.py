"""Call plans: the kernel launches of one call signature, recorded once and replayed.

The first call with a given signature (shapes, strides, dtypes, alignment and aliasing of its
tensors, and every other argument) takes the ordinary path - validation, the KernelSpec, the
constant table, Triton's binder - while :func:`recording` notes each launch (the compiled
binary, its grid and its argument values) and each buffer the call allocates (:func:`empty`).
A later call with the same signature allocates those buffers again and launches the same
binaries with the new pointers: no validation, no spec lookups, no Triton bookkeeping. The
strides, grids and integer arguments are part of the signature, so they are the recorded ones.

A launch argument that is neither an input (or a view of one), a buffer of the call, nor a
constant the caller names (a static table, a LUT) makes the call unplannable: it keeps the
ordinary path. Only compiled kernels record (not the Triton interpreter).
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch


class Slot(NamedTuple):
    """Where a launch argument's pointer comes from on replay: ``offset`` bytes into base
    ``index`` (the inputs' pointers, then the scratch arena, the zeroed arena and the output)."""

    index: int
    offset: int


class Unplannable(Exception):
    """A launch argument of unknown origin: the call cannot be replayed."""


class Recording:
    """What one ordinary call did: its buffers (``(tensor, zeroed)``) and launches."""

    def __init__(self, inputs, constants):
        self.inputs = inputs
        self.constants = constants
        self.buffers: list = []
        self.launches: list = []


_active: Recording | None = None


@contextlib.contextmanager
def recording(inputs, constants=()):
    """Record the launches and buffers of the ordinary path run inside (see the module docstring)."""
    global _active
    outer, _active = _active, Recording(inputs, constants)
    try:
        yield _active
    finally:
        _active = outer


def empty(shape, dtype, device, zero: bool = False) -> torch.Tensor:
    """A buffer of the call (zeroed if ``zero``): recorded, so a replay allocates it again."""
    t = (torch.zeros if zero else torch.empty)(shape, dtype=dtype, device=device)
    if _active is not None:
        _active.buffers.append((t, zero))
    return t


def note_launch(compiled, grid, values, device) -> None:
    """Called by :func:`qflash.launcher.launch` for every compiled launch."""
    if _active is not None:
        _active.launches.append((compiled, grid, list(values), device))


#: Alignment of each buffer inside an arena (bytes; the kernels specialize on 16).
ALIGN = 256


class Plan:
    """A recorded call, replayable on new inputs of the same signature. The call's buffers are
    laid out in two arenas, one left uninitialized and one zeroed, so a replay allocates three
    tensors (the arenas and the output) whatever the call allocated."""

    def __init__(self, rec: Recording, result: torch.Tensor):
        self.input_index = [i for i, x in enumerate(rec.inputs) if isinstance(x, torch.Tensor)]
        n_in = len(self.input_index)
        ARENA, ZEROS, OUT = n_in, n_in + 1, n_in + 2
        out_ptr = result.data_ptr() if isinstance(result, torch.Tensor) else None
        # each buffer's base and offset on replay: the output alone, the others packed in arenas
        place, sizes, out = [], [0, 0], None
        for b, zero in rec.buffers:
            if b.data_ptr() == out_ptr:
                if not (result.is_contiguous() and result.numel() == b.numel()):
                    raise Unplannable("the result is not a whole buffer of the call")
                place.append((OUT, 0))
                out = b
                continue
            arena = int(zero)
            place.append((ZEROS if zero else ARENA, sizes[arena]))
            sizes[arena] += -(-b.untyped_storage().nbytes() // ALIGN) * ALIGN
        if out is None:
            raise Unplannable("the result is not a buffer of the call")
        self.arena, self.zeros = sizes
        self.out = (tuple(result.shape), out.dtype, out.device)
        # views of inputs keep the input's pointer (reshapes, expands, transposes); views of
        # buffers may start inside them (slices)
        starts = {rec.inputs[i].data_ptr(): Slot(j, 0) for j, i in enumerate(self.input_index)}
        spans = [(b.data_ptr(), b.data_ptr() + b.untyped_storage().nbytes(), base, off)
                 for (b, _), (base, off) in zip(rec.buffers, place)]
        constants = {id(c) for c in rec.constants}

        def template(v):
            if isinstance(v, tuple):
                return tuple(template(e) for e in v)
            if not isinstance(v, torch.Tensor) or id(v) in constants:
                return v
            p = v.data_ptr()
            for lo, hi, base, off in spans:
                if lo <= p < hi:
                    return Slot(base, off + p - lo)
            if p in starts:
                return starts[p]
            raise Unplannable(f"a launch argument of shape {tuple(v.shape)} comes from neither an input, a buffer "
                              "nor a constant")

        self.launches = []
        for compiled, grid, values, device in rec.launches:
            values = [template(v) for v in values]
            patches = []  # (position, None, slot) or (position, tuple, [(index in tuple, slot)])
            for pos, v in enumerate(values):
                if isinstance(v, Slot):
                    patches.append((pos, None, v))
                elif isinstance(v, tuple) and _has_slot(v):
                    if any(isinstance(e, tuple) and not isinstance(e, Slot) and _has_slot(e) for e in v):
                        raise Unplannable("pointers nested two tuples deep")
                    patches.append((pos, v, [(j, e) for j, e in enumerate(v) if isinstance(e, Slot)]))
            self.launches.append((compiled, grid, values, patches, device))

    def __call__(self, *inputs) -> torch.Tensor:
        from .launcher import replay
        shape, dtype, device = self.out
        out = torch.empty(shape, dtype=dtype, device=device)
        arena = torch.empty(self.arena, dtype=torch.uint8, device=device) if self.arena else None
        zeros = torch.zeros(self.zeros, dtype=torch.uint8, device=device) if self.zeros else None
        bases = [inputs[i].data_ptr() for i in self.input_index]
        bases += [0 if arena is None else arena.data_ptr(), 0 if zeros is None else zeros.data_ptr(), out.data_ptr()]
        for compiled, grid, values, patches, dev in self.launches:
            args = list(values)
            for pos, tup, slot in patches:
                if tup is None:
                    args[pos] = bases[slot.index] + slot.offset
                else:
                    entries = list(tup)
                    for j, e in slot:
                        entries[j] = bases[e.index] + e.offset
                    args[pos] = tuple(entries)
            replay(compiled, grid, args, dev)
        return out


def _has_slot(v) -> bool:
    return isinstance(v, Slot) or (isinstance(v, tuple) and any(_has_slot(e) for e in v))


class Cache:
    """Plans by call signature, at most ``size`` of them (the oldest go first). A signature whose
    call could not be planned maps to None, so it is not recorded again on every call."""

    def __init__(self, size: int = 256):
        self.size = size
        self.plans: dict = {}

    def get(self, key):
        return None if key is None else self.plans.get(key)

    def known(self, key) -> bool:
        return key in self.plans

    def put(self, key, plan: Plan | None) -> None:
        if len(self.plans) >= self.size:
            self.plans.pop(next(iter(self.plans)))
        self.plans[key] = plan
