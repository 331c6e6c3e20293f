"""Study 7: GPU latency of the qflash kernel against PyTorch SDPA (only with a CUDA device).

Reuses :func:`qflash.benchmark.measure_row` (SDPA fp16 and the default and fast recipes' int8,
static and dynamic paths, GPU time by CUDA-graph replay); on a machine without CUDA the study
reports why it was skipped.
"""
from __future__ import annotations

import dataclasses

from intsoftmax.workloads import WORKLOADS

from .progress import quiet


@dataclasses.dataclass(frozen=True)
class LatencyStudy:
    skipped: str | None  # why nothing was measured, or None
    device: str = ""
    rows: list = dataclasses.field(default_factory=list)  # dicts from qflash.benchmark.measure_row


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
    """Every workload at batch 1 (quick) or at batches 1 and 256 (full)."""
    reason = cuda_unavailable_reason()
    if reason is not None:
        return LatencyStudy(skipped=reason)
    import torch
    from qflash.benchmark import measure_row

    cases = [(w, b) for b in ((1,) if quick else (1, 256)) for w in WORKLOADS]
    rows = []
    with progress("gpu latency", len(cases)) as p:
        for w, b in cases:
            rows.append(measure_row(w, b, log=lambda _: None))
            p.step()
    return LatencyStudy(None, torch.cuda.get_device_name(), rows)


def markdown(study: LatencyStudy) -> str:
    if study.skipped:
        return f"Skipped: {study.skipped}. Run `python -m analysis latency` on a machine with a CUDA GPU."
    lines = ["| recipe | workload | batch | SDPA fp16 (us) | int8 (us) | static (us) | dynamic (us) | int8 / SDPA "
             "| SDPA backend |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in study.rows:
        for name, x in r["recipes"].items():
            lines.append(f"| {name} | {r['workload']} | {r['batch']} | {r['sdpa_graph_us']:.1f} | "
                         f"{x['int8_graph_us']:.1f} | {x['static_graph_us']:.1f} | {x['dynamic_graph_us']:.1f} | "
                         f"{x['int8_graph_us'] / r['sdpa_graph_us']:.2f} | {r['sdpa_backend']} |")
    return (f"{study.device}; GPU time by CUDA-graph replay (`qflash.benchmark.measure_row`), median "
            "microseconds.\n\n" + "\n".join(lines))
