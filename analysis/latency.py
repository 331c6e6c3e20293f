"""Study 7: GPU latency of the qflash kernel against PyTorch SDPA (only with a CUDA device).

Reuses :func:`qflash.benchmark.measure` (SDPA fp16, the int8 API, static and dynamic
scales, the memory floor); on a machine without CUDA the study reports why it was skipped.
"""
from __future__ import annotations

import dataclasses

from intsoftmax import Recipe
from intsoftmax.workloads import WORKLOADS

from .progress import quiet


@dataclasses.dataclass(frozen=True)
class LatencyStudy:
    skipped: str | None  # why nothing was measured, or None
    device: str = ""
    bandwidth: float = 0.0  # bytes per second of a device-to-device copy
    rows: list = dataclasses.field(default_factory=list)  # dicts from qflash.benchmark.measure, plus "recipe"


def cuda_unavailable_reason() -> str | None:
    """Why the GPU study cannot run here, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is present (torch.cuda.is_available() is False)"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


def compute(quick: bool = False, progress=quiet) -> LatencyStudy:
    """Every workload at batch 1 (quick: default recipe; full: batches 1 and 256, default and qflash)."""
    reason = cuda_unavailable_reason()
    if reason is not None:
        return LatencyStudy(skipped=reason)
    import torch
    from qflash.benchmark import copy_bandwidth, measure

    recipes = {"default": Recipe.default()} if quick else {"default": Recipe.default(), "qflash": Recipe.qflash()}
    batches = (1,) if quick else (1, 256)
    cases = [(label, w, b) for label in recipes for b in batches for w in WORKLOADS]
    bw = copy_bandwidth()
    rows = []
    with progress("gpu latency", len(cases)) as p:
        for label, w, b in cases:
            rows.append({"recipe": label, **measure(w, b, recipes[label], bw)})
            p.step()
    return LatencyStudy(None, torch.cuda.get_device_name(), bw, rows)


def markdown(study: LatencyStudy) -> str:
    if study.skipped:
        return f"Skipped: {study.skipped}. Run `python -m analysis latency` on a machine with a CUDA GPU."
    lines = ["| recipe | workload | batch | SDPA fp16 (us) | int8 API (us) | static scales (us) | dynamic scales (us) "
             "| memory floor (us) | dynamic / SDPA | SDPA backend |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in study.rows:
        lines.append(f"| {r['recipe']} | {r['workload']} | {r['batch']} | {r['sdpa']:.1f} | {r['int8']:.1f} | "
                     f"{r['static']:.1f} | {r['dynamic']:.1f} | {r['floor']:.1f} | {r['dynamic'] / r['sdpa']:.2f} | "
                     f"{r['sdpa_backend']} |")
    return (f"{study.device}; device-to-device copy {study.bandwidth / 1e12:.2f} TB/s; medians of "
            "`triton.testing.do_bench` (`qflash.benchmark.measure`), microseconds.\n\n" + "\n".join(lines))
