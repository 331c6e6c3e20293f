"""Kernel-only GPU time (CUDA-graph replay) of the one-tile path (Swin windows) and its neighbours,
beside SDPA fp16 in the same run. Development tool, on the GPU machine:

    PYTHONPATH=. python3 scripts/gpu_one_tile.py [--workloads A7,A4,A3,A2] [--sources] [--configs]

Default: `fast` and `per_tensor` on int8 inputs with their constant table (as the benchmark's int8
call, kernel only). ``--sources``: where the constants come from, on the Swin and ViT shapes:
`per_tensor` deriving them in each program from the scales (``derive_scale``), and the calibrated
`Recipe.default()` (Q per token) deriving one row per query, or reading a per-row table (built
outside the timed call). ``--configs``: `fast` over pipeline depths and register caps.
``--static``: the benchmark's static calls (float16 inputs quantized on load with calibrated
ranges; `default` folded, Q's ranges per call) of `per_tensor` and `default`, with the one-tile
programs' K and V prefetch (``kernel.PREFETCH_ONE_TILE``) on and off, and `default` ÷ `per_tensor`.
"""
from __future__ import annotations

import argparse

import torch

import intsoftmax as ism
from intsoftmax.workloads import workload_shape
from qflash import api, kernel as qkernel, quantize as qz
from qflash.benchmark import best_sdpa, graph_us, recipe_calls, uniform
from qflash.kernel import launch
from qflash.spec import KernelSpec, MaskKind, OutKind

FOLDED = ism.Recipe.default().replace(transforms=())  # a calibrated model's: transforms folded
RECIPES = {"fast": ism.Recipe.fast(), "per_tensor": ism.Recipe.per_tensor(), "default": ism.Recipe.default()}
CONFIGS = {"A3": ((2, None), (4, None), (3, 0), (3, 112), (3, 120)),  # (stages, maxnreg; None: the API's, 0: none)
           "A7": ((2, None), (4, None), (3, 56), (3, 48))}


def inputs(workload, batch=256):
    return uniform(workload_shape(workload, batch))


def kernel_us(workload, recipe, source="table", **config):
    """The kernel alone on int8 inputs; ``source``: its constants from a table, or derived by each
    program from the scales (``derive``: one row per query where Q is per token)."""
    q, k, v = inputs(workload)
    B, H, N, D = q.shape
    (q8, s_q), (k8, s_k), (v8, s_v) = qz.quantize_qkv(q, k, v, recipe)
    spec = KernelSpec.build(recipe, D, MaskKind.NONE, OutKind.FLOAT)
    out = torch.empty(q.shape, device="cuda", dtype=torch.float16)
    cfg = {**api._launch_config(spec), **config}
    if cfg.get("maxnreg") == 0:
        cfg.pop("maxnreg")
    lut = api._lut(recipe.exp, "cuda")
    if source == "table":
        table = qz.table(recipe, s_q, s_k, s_v, D ** -0.5, B, H, N)
        return graph_us(lambda: launch(spec, q8, k8, v8, table, out, lut=lut, tail_block_m=api.TAIL_ROWS, **cfg))
    rows = recipe.q_granularity.block()[1] == 1
    return graph_us(lambda: launch(spec, q8, k8, v8, None, out, lut=lut, derive_scale=D ** -0.5, q_rows=rows,
                                   scales=(s_q, s_k, s_v), tail_block_m=api.TAIL_ROWS, **cfg))


def static_us(workload, recipe, prefetch: bool):
    """The benchmark's static call (:func:`qflash.benchmark.recipe_calls`), graph replay."""
    qkernel.PREFETCH_ONE_TILE = prefetch
    try:
        return graph_us(recipe_calls(recipe, *inputs(workload), False, False)["static"])
    finally:
        qkernel.PREFETCH_ONE_TILE = True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="A7,A4,A3,A2")
    p.add_argument("--sources", action="store_true")
    p.add_argument("--configs", action="store_true")
    p.add_argument("--static", action="store_true")
    a = p.parse_args(argv)
    rows = []

    def add(w, name, label, us):
        rows.append((w, name, label, us))
        print(f"{w} {name:9s} {label:16s} {us:8.1f} us", flush=True)
    for w in a.workloads.split(","):
        add(w, "sdpa", "-", best_sdpa(*inputs(w), False)[0])
        if a.static:
            for prefetch in (True, False):
                t = [static_us(w, RECIPES[n], prefetch) for n in ("per_tensor", "default")]
                label = "static" + (", prefetch" if prefetch else "")
                add(w, "per_tensor", label, t[0])
                add(w, "default", label, t[1])
                add(w, "def/per", label, t[1] / t[0])
            continue
        for name in ("fast", "per_tensor"):
            add(w, name, "table", kernel_us(w, RECIPES[name]))
        if a.sources:
            add(w, "per_tensor", "derive", kernel_us(w, RECIPES["per_tensor"], "derive"))
            add(w, "default", "derive (rows)", kernel_us(w, FOLDED, "derive"))
            add(w, "default", "row table", kernel_us(w, FOLDED))
        for stages, cap in CONFIGS.get(w, ()) if a.configs else ():
            extra = {"num_stages": stages} if cap is None else {"num_stages": stages, "maxnreg": cap}
            try:
                add(w, "fast", f"stages {stages}, cap {cap}", kernel_us(w, RECIPES["fast"], **extra))
            except Exception as err:  # a cap too low for the kernel: report, go on
                print(f"{w} fast stages {stages} cap {cap}: {type(err).__name__}", flush=True)
    print("\nworkload recipe constants/config us")
    for w, name, label, us in rows:
        print(f"{w} {name:9s} {label:16s} {us:8.1f}")


if __name__ == "__main__":
    main()
