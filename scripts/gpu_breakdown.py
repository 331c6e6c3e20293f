"""Where a qflash call's time goes, launch by launch on the GPU and function by function on the
host. Development tool, on the GPU machine:

    PYTHONPATH=. python3 scripts/gpu_breakdown.py [--gpu A2:256:default:int8,...] [--host A2:1:per_tensor:dynamic,...]

``--gpu``: CUDA time per kernel name (torch.profiler over eager calls, µs per call) beside the
call's graph time. ``--host``: host µs per call in five repeats of 100 queued calls (the spread
shows the machine's noise), then the functions with the most own time (cProfile over 300 calls).
The calls are the benchmark's (:func:`qflash.benchmark.recipe_calls`).
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import sys

import torch

import intsoftmax as ism
from qflash import benchmark

RECIPES = {"per_tensor": ism.Recipe.per_tensor(), "fast": ism.Recipe.fast(), "default": ism.Recipe.default(),
           "long_context": ism.Recipe.long_context()}
GPU = "A2:256:default:int8,A2:256:per_tensor:int8,A7:256:default:int8,A7:256:per_tensor:int8,A2:256:default:static," \
      "A2:256:default:dynamic"
HOST = "A2:1:per_tensor:int8,A2:1:per_tensor:static,A2:1:per_tensor:dynamic,A2:1:sdpa:-"


def call(workload: str, batch: int, recipe: str, path: str):
    shape = benchmark.shape_of(workload, batch)
    q, k, v = benchmark.uniform(shape)
    if recipe == "sdpa":
        return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return benchmark.recipe_calls(RECIPES[recipe], q, k, v, False, False)[path]


def kernels(fn, calls: int = 20) -> list:
    """(kernel name, µs per call) by CUDA time, most first."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    per = collections.Counter()
    for e in prof.key_averages():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            per[e.key[:60]] += e.device_time_total / calls
    return per.most_common()


def host(fn) -> tuple:
    """Five repeats of host µs per call, and cProfile's top own-time functions."""
    reps = benchmark.host_runs(fn)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(300):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    stats = pstats.Stats(prof)
    top = [(f"{func[0].split('/')[-1]}:{func[1]}:{func[2]}", tt / 300 * 1e6, nc // 300)
           for func, (cc, nc, tt, ct, callers) in sorted(stats.stats.items(), key=lambda x: -x[1][2])[:18]]
    return reps, top


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", default=GPU)
    p.add_argument("--host", default=HOST)
    a = p.parse_args(argv)
    for item in filter(None, a.gpu.split(",")):
        w, b, r, path = item.split(":")
        fn = call(w, int(b), r, path)
        print(f"\n{item}: graph {benchmark.graph_us(fn):.1f} µs")
        for name, us in kernels(fn):
            print(f"  {us:8.1f} µs  {name}")
    for item in filter(None, a.host.split(",")):
        w, b, r, path = item.split(":")
        reps, top = host(call(w, int(b), r, path))
        print(f"\n{item}: host µs per call " + " ".join(f"{x:.1f}" for x in reps))
        for name, us, n in top:
            print(f"  {us:7.2f} µs  {n:3d}x  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
