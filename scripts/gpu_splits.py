"""Split-key decoding on the GPU: the int8 call's graph time at forced split counts beside the
API's choice (``qflash.api._splits``) and SDPA fp16, same run. Development tool, on the GPU machine:

    PYTHONPATH=. python3 scripts/gpu_splits.py [--counts 1,2,4,8,16,32,64]

Rows: the benchmark's decode rows (D1 at batch 1 and 8; D2, D1 with 8 K/V heads packed into rows)
and a 131072-key row for the long-context recipe. The best count per row shows whether
``SPLIT_PROGRAMS_PER_SM`` and ``SPLIT_MIN_KEYS`` need retuning; every call is also checked
against the unsplit one (equal outputs: the splits add the same integers).
"""
from __future__ import annotations

import argparse
import sys

import torch

import intsoftmax as ism
import qflash
from qflash import api
from qflash.benchmark import best_sdpa, graph_us, int8_inputs, uniform

#: (label, q shape, K/V shape, recipe name)
ROWS = [("D1 b=1", (1, 32, 1, 128), (1, 32, 32768, 128), "fast"),
        ("D1 b=8", (8, 32, 1, 128), (8, 32, 32768, 128), "fast"),
        ("D2 b=8 (GQA 4:1)", (8, 32, 1, 128), (8, 8, 32768, 128), "fast"),
        ("D1 b=1, 131072 keys", (1, 32, 1, 128), (1, 32, 131072, 128), "long_context")]
RECIPES = {"fast": ism.Recipe.fast(), "long_context": ism.Recipe.long_context()}


def forced(count: int):
    """Make every call use ``count`` splits (recorded plans dropped so none replays an old count)."""
    api._splits = lambda spec, call, block_m: count if spec.two_pass else 1
    api._PLANS.plans.clear()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="1,2,4,8,16,32,64")
    a = p.parse_args(argv)
    counts = [int(c) for c in a.counts.split(",")]
    policy = api._splits
    lines = []
    for label, q_shape, kv_shape, name in ROWS:
        recipe = RECIPES[name]
        q, k, v = uniform(q_shape, kv_shape=kv_shape)
        gqa = kv_shape[1] != q_shape[1]
        sdpa_us, backend, _ = best_sdpa(q, k, v)
        q8, k8, v8, static8 = int8_inputs(q, k, v, recipe)

        def call():
            return qflash.attention_int8(q8, k8, v8, recipe=recipe, static=static8, out_dtype=torch.float16,
                                         enable_gqa=gqa)
        api._splits = policy
        api._PLANS.plans.clear()
        spec = api._spec(recipe, q_shape[3], api.MaskKind.NONE, api.OutKind.FLOAT)
        groups = q_shape[1] // kv_shape[1]
        chosen = policy(spec, api.Call((q_shape[0],), q_shape[0], 1, kv_shape[1], q_shape[2] * groups, kv_shape[2],
                                       q_shape[3], 1.0, api.MaskKind.NONE, q.device), 64)
        times = {}
        forced(1)
        reference = call()
        for c in sorted(set(counts) | {chosen}):
            forced(c)
            if not torch.equal(call(), reference):
                print(f"{label}: {c} splits differ from the unsplit output", file=sys.stderr)
                return 1
            times[c] = graph_us(call)
        api._splits = policy
        api._PLANS.plans.clear()
        best = min(times, key=times.get)
        lines.append(f"{label:22s} {name:12s} SDPA {sdpa_us:8.1f} ({backend})  policy {chosen:3d}: "
                     f"{times[chosen]:8.1f}  best {best:3d}: {times[best]:8.1f}  | "
                     + " ".join(f"{c}:{t:.1f}" for c, t in times.items()))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
