"""Where a dynamic ``qflash.attention`` call spends its GPU time, launch by launch (graph replay,
µs): the range launch (with its bandwidth beside a plain copy of q, k, v in the same run), the
table from the ranges, the separate quantization launch, and the attention kernel on int8
inputs and quantizing on load; then the whole dynamic and int8 calls. Development tool:
``python3 scripts/gpu_dynamic.py [--rows A2:256,A4:256]`` on the GPU machine."""
from __future__ import annotations

import argparse
import sys

import torch

import intsoftmax as ism
import qflash
from qflash import benchmark
from qflash import quantize as qz

ROWS = [("A2", 256), ("A4", 256), ("A7", 256), ("A2", 8), ("L1", 2)]


def pieces(workload: str, batch: int, recipe: ism.Recipe) -> dict:
    shape = benchmark.shape_of(workload, batch)
    q, k, v = benchmark.uniform(shape)
    B, H, N, D = shape
    nbytes = 3 * q.numel() * q.element_size()
    amax = qz.ranges(q, k, v, recipe)
    per_head = recipe.replace(q_granularity=ism.PerHead(), k_granularity=ism.PerHead(), v_granularity=ism.PerHead())
    q8, k8, v8, static8 = benchmark.int8_inputs(q, k, v, recipe)
    t = {
        "copy": benchmark.graph_us(lambda: (q.clone(), k.clone(), v.clone())),
        "ranges": benchmark.graph_us(lambda: qz.ranges(q, k, v, recipe)),
        "ranges_head": benchmark.graph_us(lambda: qz.ranges(q, k, v, per_head)),
        "table": benchmark.graph_us(lambda: qz.table(recipe, *amax, 1 / D ** 0.5, B, H, N, from_amax=True)),
        "quantize": benchmark.graph_us(lambda: qz.quantize_qkv(q, k, v, recipe)),
        "int8": benchmark.graph_us(lambda: qflash.attention_int8(q8, k8, v8, recipe=recipe, out_dtype=torch.float16,
                                                              static=static8)),
        "dynamic": benchmark.graph_us(lambda: qflash.attention(q, k, v, recipe=recipe)),
    }
    t["range_gbs"] = nbytes / t["ranges"] / 1e3
    t["copy_gbs"] = 2 * nbytes / t["copy"] / 1e3
    return t


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", default=",".join(f"{w}:{b}" for w, b in ROWS))
    a = p.parse_args(argv)
    recipe = ism.Recipe.default()
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
