"""Kernel-only GPU time of recipes and tile configurations, by CUDA-graph replay, beside SDPA fp16
(same run). Development tool: ``python3 scripts/gpu_tune.py [--check] [--on-load]`` on the GPU machine.
``--check`` first compares each variant's integers with the golden model on a small A2 batch.
Workloads: A1-A7 at batch 256, or the benchmark's LLM rows (L1, L1c causal, D1: their own batch),
e.g. ``--workloads L1,D1 --recipes per_tensor,long_context --configs 64/64/4/3,64/64/8/3``. SDPA: its
fastest backend, as in the benchmark. ``--hi-sum on|off`` forces the two-pass sums' form
(:attr:`qflash.spec.KernelSpec.hi_sum`; the wide accumulator always has it). ``--tail-rows 0,16``
times both forms of a call whose last row block is small (:data:`qflash.api.TAIL_ROWS`); ``--tail
0/128/3,0/0/2`` the last rows' launch with other key tiles, register caps and stages
(:func:`qflash.kernel.tail_config`); ``--mma-order on,off`` pass 2 with K's rows in the MMA
operand's order or in their own (:data:`qflash.kernel.MMA_ORDER`); ``--row-max-keys 256,128`` the
row-max pass's tiles at D = 128 (:data:`qflash.spec.ROW_MAX_KEYS`); ``--row-sums alu,mma`` two-pass
9-14-bit ``P``'s row sums by ``dp4a`` or by MMAs against ones (:data:`qflash.spec.ALU_ROW_SUMS`)."""
from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np
import torch

import intsoftmax as ism
from qflash import api, kernel, quantize as qz
from qflash import spec as qspec
from qflash.benchmark import CAUSAL, LLM_SHAPES, best_sdpa, graph_us, kv_shape_of, shape_of
from qflash.kernel import launch
from qflash.spec import KernelSpec, MaskKind, OutKind


def inputs(workload, batch):
    gen = torch.Generator(device="cuda").manual_seed(0)
    return tuple(torch.empty(s, device="cuda", dtype=torch.float16).uniform_(-4, 4, generator=gen)
                 for s in (shape_of(workload, batch), kv_shape_of(workload, batch), kv_shape_of(workload, batch)))


def prepared(workload, batch, recipe):
    q, k, v = inputs(workload, batch)
    shape = q.shape
    (q8, s_q), (k8, s_k), (v8, s_v) = qz.quantize_qkv(q, k, v, recipe)
    table = qz.table(recipe, s_q, s_k, s_v, shape[3] ** -0.5, shape[0], shape[1], shape[2])
    return (q, k, v), (q8, k8, v8), table


def kernel_time(workload, batch, recipe, block_m=64, block_n=None, warps=4, stages=2, maxnreg=0, on_load=False,
                tail_rows=0):
    """The kernel alone on int8 inputs, or (``on_load``) on the float16 ones with static ranges;
    ``tail_rows``: :func:`qflash.kernel.launch`'s ``tail_block_m`` (the API's in GPU-bound calls)."""
    (q, k, v), (q8, k8, v8), table = prepared(workload, batch, recipe)
    spec = KernelSpec.build(recipe, q.shape[3], MaskKind.CAUSAL if workload in CAUSAL else MaskKind.NONE,
                            OutKind.FLOAT)
    out = torch.empty(q.shape, device="cuda", dtype=torch.float16)
    lut = api._lut(recipe.exp, "cuda")
    extra = {"maxnreg": maxnreg} if maxnreg else {}
    if on_load:
        q8, k8, v8 = q, k, v
        extra["amax"] = tuple(torch.full((1,), 4.0, device="cuda") for _ in range(3))
    return graph_us(lambda: launch(spec, q8, k8, v8, table, out, lut=lut, block_m=block_m, block_n=block_n,
                                   num_warps=warps, num_stages=stages, tail_block_m=tail_rows, **extra))


def sdpa_time(workload, batch):
    q, k, v = inputs(workload, batch)
    return best_sdpa(q, k, v, workload in CAUSAL)[0]


RECIPES = {
    "per_tensor": ism.Recipe.per_tensor(),
    "fast": ism.Recipe.fast(),
    "d1p8": ism.Recipe(exp=ism.FusedExp2(degree=1), p_bits=8),
    "d2p8": ism.Recipe(exp=ism.FusedExp2(degree=2), p_bits=8),
    "d2p11": ism.Recipe(exp=ism.FusedExp2(degree=2)),
    "old-default": ism.Recipe(exp=ism.PolyExp2(), accumulation=ism.ScaleRelease()),
    "paper": ism.Recipe.qflash(),
    "long_context": ism.Recipe.long_context(),
    "lc-online": ism.Recipe.long_context().replace(accumulation=ism.ScaleRelease(acc_bits=64)),
    "lc-d3": ism.Recipe(accumulation=ism.TwoPass(acc_bits=64)),
    "lc-d2": ism.Recipe(exp=ism.FusedExp2(degree=2), accumulation=ism.TwoPass(acc_bits=64)),
}


def check(names):
    for name in names:
        r = RECIPES[name]
        (q, k, v), _, _ = prepared("A2", 4, r)
        vals, _ = api.attention_int(q, k, v, recipe=r)
        gold = r.attention_int(*(x.float().cpu().numpy() for x in (q, k, v))).values
        ok = np.array_equal(vals.cpu().numpy(), gold)
        print(f"check {name}: {'bit-exact' if ok else 'MISMATCH'}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true")
    p.add_argument("--recipes", default="per_tensor,fast,d1p8,d2p8,d2p11,old-default,paper")
    p.add_argument("--workloads", default="A2,A7,A4")
    p.add_argument("--configs", default="64/64/4/2,64/32/4/2,64/128/4/2,128/64/8/2,64/64/4/3",
                   help="block_m/block_n/warps/stages[/maxnreg]")
    p.add_argument("--sweep", default="per_tensor,fast", help="recipes timed in every config (others: the first)")
    p.add_argument("--on-load", action="store_true", help="float16 inputs quantized on load (static ranges)")
    p.add_argument("--hi-sum", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--tail-rows", default=str(api.TAIL_ROWS),
                   help="comma list: rows of the last row block's own launch (0: none; default: the API's)")
    p.add_argument("--tail", default="",
                   help="comma list of keys/maxnreg/stages: that launch's one-tile key limit "
                        "(kernel.TAIL_ONE_TILE_KEYS), register cap (0: none) and stages; default: the API's")
    p.add_argument("--mma-order", default="on", help="comma list of on/off: pass 2 reads K's rows in the int8 "
                   "MMA operand's order (kernel.MMA_ORDER) or in their own")
    p.add_argument("--row-max-keys", default=str(qspec.ROW_MAX_KEYS[128]),
                   help="comma list: keys per full tile of the row-max pass at D = 128 (spec.ROW_MAX_KEYS)")
    p.add_argument("--row-sums", default="alu", help="comma list of alu/mma: two-pass 9-14-bit P's row "
                   "sums by dp4a or by MMAs against ones (spec.ALU_ROW_SUMS)")
    a = p.parse_args(argv)
    if a.hi_sum != "auto":  # every head dim, or none (KernelSpec.hi_sum reads the threshold per call)
        qspec.HI_SUM_HEAD_DIM = 0 if a.hi_sum == "on" else 1 << 30
    names = a.recipes.split(",")
    tail_defaults = (kernel.TAIL_ONE_TILE_KEYS, kernel.TAIL_OPTIONS)
    row_max_default = qspec.ROW_MAX_KEYS[128]
    if a.check:
        check(names)
    rows = []
    for w in a.workloads.split(","):
        batch = LLM_SHAPES[w][0] if w in LLM_SHAPES else 256
        base = sdpa_time(w, batch)
        rows.append((w, "sdpa", "-", base, 1.0))
        for name in names:
            for cfg in a.configs.split(",") if name in a.sweep.split(",") else a.configs.split(",")[:1]:
                bm, bn, warps, stages, *extra = map(int, cfg.split("/"))  # [maxnreg (0: none)]
                if not RECIPES[name].accumulation.two_pass and bn != 64:
                    continue
                tails = [(tail, v) for tail in map(int, a.tail_rows.split(",")) for v in (a.tail.split(",") if tail else [""])]
                for (tail, variant), order, max_keys, sums in itertools.product(
                        tails, a.mma_order.split(","), map(int, a.row_max_keys.split(",")), a.row_sums.split(",")):
                    kernel.MMA_ORDER = order == "on"
                    qspec.ROW_MAX_KEYS[128] = max_keys
                    qspec.ALU_ROW_SUMS = sums == "alu"
                    label = (cfg if tail == api.TAIL_ROWS else f"{cfg}/t{tail}") + (f"/{variant}" if variant else "") \
                        + ("" if order == "on" else "/keys") + ("" if max_keys == row_max_default else f"/max{max_keys}") \
                        + ("" if sums == "alu" else "/mma-sums")
                    kernel.TAIL_ONE_TILE_KEYS, kernel.TAIL_OPTIONS = tail_defaults  # the API's, unless given
                    if variant:
                        keys, cap, tail_stages = map(int, variant.split("/"))
                        kernel.TAIL_ONE_TILE_KEYS = keys
                        kernel.TAIL_OPTIONS = {"maxnreg": cap or None, "num_stages": tail_stages}
                    try:
                        t = kernel_time(w, batch, RECIPES[name], bm, bn, warps, stages, *extra, on_load=a.on_load,
                                        tail_rows=tail)
                    except Exception as err:  # a configuration out of resources: report, go on
                        print(f"{w} {name} {label}: {type(err).__name__} {str(err)[:120]}", flush=True)
                        continue
                    rows.append((w, name, label, t, t / base))
                    print(f"{w} b={batch} {name:12s} {label:18s} {t:8.1f} us  {t / base:5.2f}x sdpa", flush=True)
    print("\nworkload recipe config us ratio")
    for r in rows:
        print(f"{r[0]} {r[1]:12s} {r[2]:18s} {r[3]:8.1f} {r[4]:5.2f}")


if __name__ == "__main__":
    sys.exit(main())
