"""Launching Triton kernels without ``JITFunction.run``'s per-call bookkeeping.

Triton's ``kernel[grid](...)`` re-derives options, re-checks every global the kernel reads and
rebuilds its cache key on every call. For the qflash kernel that cost 531 us of host time per
launch on the H100 host (triton 3.6), against 11.5 us for calling the compiled binary directly
(``docs/performance.md``) - at batch 1 the host, not the GPU, set the latency.

:func:`launch` keeps the compiled binary per argument specialization. Triton's own binder
computes the specialization (alignment, ``== 1`` and divisibility of integers, constexpr
values), so a change in any of them still selects or compiles the right binary; only the
bookkeeping is skipped. Under the interpreter (``TRITON_INTERPRET=1``) kernels are called the
ordinary way. Compiled launches are noted for :mod:`qflash.plan`, which replays a call's
launches without binding at all.
"""
from __future__ import annotations

from triton.runtime import driver

from .plan import note_launch

_COMPILED: dict = {}


def interpreted(kernel) -> bool:
    """Whether ``kernel`` runs in the Triton interpreter (``TRITON_INTERPRET=1``), where inline PTX
    cannot run and the kernels take their plain-Triton twin of each PTX helper."""
    return getattr(kernel, "device_caches", None) is None


def launch(kernel, grid, *args, **options):
    """``kernel[grid](*args, **options)``, through a cached compiled binary when compiled."""
    if interpreted(kernel):
        return kernel[grid](*args, **options)
    caches = kernel.device_caches
    device = driver.active.get_current_device()
    bound, specialization, _ = caches[device][4](*args, **options)
    key = (kernel, device, tuple(specialization), tuple(sorted(options.items())))
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = kernel.run(*args, grid=grid, warmup=True, **options)
        _COMPILED[key] = compiled
    grid = tuple(grid) + (1,) * (3 - len(grid))
    values = list(bound.values())
    replay(compiled, grid, values, device)
    note_launch(compiled, grid, values, device)
    return compiled


def replay(compiled, grid, values, device) -> None:
    """Launch a compiled binary on a 3-D grid with its bound argument values (tensors or pointers)."""
    run = compiled.run  # initialises the module and function handles on first use
    run(grid[0], grid[1], grid[2], driver.active.get_current_stream(device), compiled.function,
        compiled.packed_metadata, None, None, None, *values)
