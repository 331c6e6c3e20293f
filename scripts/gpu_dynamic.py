"""Where a dynamic ``qflash.attention`` call spends its GPU time, launch by launch (graph replay,
µs): the range launch (with its bandwidth beside a plain copy of q, k, v in the same run), the
table from the ranges, the separate quantization launch, and the attention kernel on int8
inputs and quantizing on load; then the whole dynamic and int8 calls. With ``--recipe default``
(input transforms): the statistics launch and the quantization rewriting on load instead of the
range launch and the plain quantization. Development tool:
``python3 scripts/gpu_dynamic.py [--rows A2:256,A4:256] [--recipe default]`` on the GPU machine."""
from __future__ import annotations

import argparse
import sys

import torch

import intsoftmax as ism
import qflash
from qflash import benchmark
from qflash import quantize as qz
from qflash import transforms as qt

ROWS = [("A2", 256), ("A4", 256), ("A7", 256), ("A2", 8), ("L1", 2)]


def pieces(workload: str, batch: int, recipe: ism.Recipe) -> dict:
    shape = benchmark.shape_of(workload, batch)
    q, k, v = benchmark.uniform(shape)
    B, H, N, D = shape
    nbytes = 3 * q.numel() * q.element_size()
    plain = recipe.replace(transforms=())  # (int8 inputs take no transforms)
    per_head = recipe.replace(q_granularity=ism.PerHead(), k_granularity=ism.PerHead(), v_granularity=ism.PerHead())
    t = {
        "copy": benchmark.graph_us(lambda: (q.clone(), k.clone(), v.clone())),
        "ranges": benchmark.graph_us(lambda: qz.ranges(q, k, v, plain)),
        "ranges_head": benchmark.graph_us(lambda: qz.ranges(q, k, v, per_head)),
        "quantize": benchmark.graph_us(lambda: qz.quantize_qkv(q, k, v, plain)),
        "dynamic": benchmark.graph_us(lambda: qflash.attention(q, k, v, recipe=recipe)),
    }
    if plain.q_granularity.row_uniform:  # (static int8 scales: not per token)
        q8, k8, v8, static8 = benchmark.int8_inputs(q, k, v, plain)
        t["int8"] = benchmark.graph_us(lambda: qflash.attention_int8(q8, k8, v8, recipe=plain, out_dtype=torch.float16,
                                                                    static=static8))
        amax = qz.ranges(q, k, v, plain)
        t["table"] = benchmark.graph_us(lambda: qz.table(plain, *amax, 1 / D ** 0.5, B, H, N, from_amax=True))
    if recipe.transforms:
        rewrite = qt.prepare(recipe, q, k, v)
        t["statistics"] = benchmark.graph_us(lambda: qt.prepare(recipe, q, k, v))
        t["quantize_rewriting"] = benchmark.graph_us(lambda: qz.quantize_qkv(q, k, v, recipe, rewrite=rewrite))
        t["stat_gbs"] = nbytes / t["statistics"] / 1e3
    t["range_gbs"] = nbytes / t["ranges"] / 1e3
    t["copy_gbs"] = 2 * nbytes / t["copy"] / 1e3
    return t


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", default=",".join(f"{w}:{b}" for w, b in ROWS))
    p.add_argument("--recipe", default="per_tensor", choices=["per_tensor", "default"])
    a = p.parse_args(argv)
    recipe = getattr(ism.Recipe, a.recipe)()
    lines = []
    for w, b in (x.split(":") for x in a.rows.split(",")):
        t = pieces(w, int(b), recipe)
        lines.append(f"{w:4s} {int(b):4d} " + " ".join(f"{key} {val:7.1f}" for key, val in t.items()))
        print(lines[-1], flush=True)
    print("\nrow batch: graph µs per launch (copy = q, k, v cloned), GB/s (range: bytes read; copy: read + written)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
