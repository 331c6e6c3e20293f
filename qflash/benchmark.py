"""qflash against PyTorch SDPA (fp16), everything measured in the same run (CUDA only).

``python -m qflash.benchmark --json docs/performance.json`` measures every row of
:data:`ROWS` (A1-A7 at batch 1, 8 and 256, A2 at 1024, the LLM shape L1, L1 causal as "L1c", the
decode shape D1 (one query against 32768 keys) at batch 1 and 8, and D2, D1 with 8 K/V heads) and
prints a table:

* SDPA fp16: GPU time by CUDA-graph replay of the fastest of its backends (``sdpa_graph_us``,
  ``sdpa_backend``); eager time (``sdpa_eager_us``, ``triton.testing.do_bench``) and host time per
  call (``sdpa_host_us``, calls queued back to back) of the plain call a user makes (default
  dispatch, no backend context manager);
* per recipe (``per_tensor``, ``fast``; on the LLM rows also ``long_context`` and
  ``int_flashattention``; on A1-A7 at batch 256 also ``default``, the input transforms' recipe; a
  recipe whose key limit the row exceeds is left out) and path (:func:`recipe_calls`): ``int8`` is
  :func:`qflash.attention_int8` on int8 Q/K/V with calibrated scales; ``static`` and ``dynamic``
  are :func:`qflash.attention` on the fp16 inputs with calibrated and measured ranges. Split-key
  calls also give ``splits`` and the unsplit int8 time ``int8_unsplit_graph_us``. Each path's GPU time by graph replay
  (``<path>_graph_us``), eager time (``<path>_eager_us``) and host time (``<path>_host_us``);
  ``sqnr_db`` on the batch-1 rows: the dynamic float path on U[-4, 4] float32 inputs (seed 0)
  against float64 attention.

Then the QFlash paper's two headline comparisons: the unfused integer pipeline
(:mod:`qflash.unfused`) beside the fused kernel, and energy per call from NVML's total-energy
counter under graph replay, beside SDPA. Times are medians in microseconds; ratios are against
SDPA's graph time of the same row. The table is printed last.

A whole run outlasts the lent H200's 10 minutes per command: run it in parts of one commit
(``--rows <the A rows> --no-extras``; ``--rows L1:2,L1c:2,D1:1,D1:8,D2:8 --no-extras``; ``--rows
A7:1`` for the comparisons, each ``--json $OUT/<part>.json``), then ``--merge <parts> --json
docs/performance.json`` (:func:`merge`; no GPU). Parts that a session's device time did not
reach may be carried from an earlier commit's results (``--carry``): each such row keeps its
commit, and the tables name it.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import subprocess
import sys
import time

import numpy as np
import torch

import intsoftmax as ism
from intsoftmax.workloads import WORKLOADS, qkv, workload_shape

#: The per-tensor recipes every row times (``per_tensor`` was named ``default`` until issue 11).
RECIPES = {"per_tensor": ism.Recipe.per_tensor(), "fast": ism.Recipe.fast()}
#: ``Recipe.default()`` (input transforms, Q per token) on the A1-A7 rows at batch 256: what its
#: static path (the transforms folded, Q's ranges per call) costs against ``per_tensor``'s (issue 11).
DEFAULT_RECIPES = {"default": ism.Recipe.default()}
#: LLM shapes (B, H, N, D) of the queries at their usual batch, named like the workloads; "L1c" is
#: L1 with ``is_causal=True``; D1 decodes one query per (batch, head) against :data:`KEYS` keys.
LLM_SHAPES = {"L1": (2, 32, 4096, 128), "L1c": (2, 32, 4096, 128), "D1": (8, 32, 1, 128), "D2": (8, 32, 1, 128)}
KEYS = {"D1": 32768, "D2": 32768}
#: K/V heads where fewer than the query heads (GQA, ``enable_gqa=True``): D2 is D1 with 8 K/V heads.
KV_HEADS = {"D2": 8}
CAUSAL = {"L1c"}
#: The LLM rows also measure the long-context recipe and INT-FlashAttention's design (issue 12).
LONG_RECIPES = {"long_context": ism.Recipe.long_context(), "int_flashattention": ism.Recipe.int_flashattention()}
ROWS = [(w, b) for w in WORKLOADS for b in (1, 8, 256)] + [("A2", 1024), ("L1", 2), ("L1c", 2), ("D1", 1), ("D1", 8),
                                                            ("D2", 8)]
#: Where energy is compared (the paper: A2, batch 8), and two larger shapes.
ENERGY_ROWS = [("A2", 8), ("A2", 1024), ("A4", 256)]
#: The unfused pipeline runs the fast recipe (7-bit P: one int8 GEMM for P.V).
UNFUSED_RECIPE = ism.Recipe.fast()
UNFUSED_ROWS = [("A2", 8), ("A2", 256), ("A7", 256)]


def shape_of(workload: str, batch: int) -> tuple:
    """The queries' (B, H, N, D)."""
    return (batch,) + LLM_SHAPES[workload][1:] if workload in LLM_SHAPES else workload_shape(workload, batch)


def kv_shape_of(workload: str, batch: int) -> tuple:
    """The keys' and values' (B, H, N, D)."""
    B, H, N, D = shape_of(workload, batch)
    return B, KV_HEADS.get(workload, H), KEYS.get(workload, N), D


def row_recipes(workload: str, batch: int) -> dict:
    """The recipes measured on a row: those whose key limit it keeps, plus the long-context one on LLM rows."""
    recipes = {**RECIPES, **(LONG_RECIPES if workload in LLM_SHAPES else {}),
               **(DEFAULT_RECIPES if workload in WORKLOADS and batch == 256 else {})}
    keys = kv_shape_of(workload, batch)[2]
    return {name: r for name, r in recipes.items() if keys <= r.max_seq_len()}


# -- timing ----------------------------------------------------------------------------------------
def graph_us(fn, min_us: float = 20000.0) -> float:
    """Median GPU microseconds of one call, replayed from a CUDA graph holding enough calls to run
    for about ``min_us`` (so launch gaps and event resolution vanish)."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    reps = int(min(max(min_us / max((time.perf_counter() - t0) * 1e6, 1.0), 1), 200))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / reps)
    return float(np.median(times))


def eager_us(fn) -> float:
    """``triton.testing.do_bench`` median (an L2 flush before each call; host time can leak in)."""
    import triton.testing
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3)


def host_runs(fn, iters: int = 100, repeats: int = 5) -> list:
    """Host microseconds per call in each of ``repeats`` runs of ``iters`` calls queued back to
    back, each run ended by one synchronisation."""
    fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        runs.append((time.perf_counter() - t0) / iters * 1e6)
        torch.cuda.synchronize()
    return runs


def host_us(fn) -> float:
    """Host microseconds per call: the median of :func:`host_runs` (other work on the host only
    adds time, and one run of a few ms catches it whole)."""
    return float(np.median(host_runs(fn)))


def energy_mj(fn, seconds: float = 2.0) -> float:
    """Millijoules per call: NVML's total-energy counter across graph replays lasting ``seconds``."""
    import pynvml
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(20):
            fn()
    g.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    g.replay()
    torch.cuda.synchronize()
    replays = max(int(seconds / max(time.perf_counter() - t0, 1e-6)), 1)
    e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    for _ in range(replays):
        g.replay()
    torch.cuda.synchronize()
    e1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    return (e1 - e0) / (replays * 20)


# -- the calls measured ----------------------------------------------------------------------------
def sdpa_backends():
    from torch.nn.attention import SDPBackend
    return {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}


def sdpa_call(q, k, v, backend, is_causal=False):
    from torch.nn.attention import sdpa_kernel
    f = torch.nn.functional.scaled_dot_product_attention
    gqa = k.shape[1] != q.shape[1]

    def call():
        with sdpa_kernel(backend):
            return f(q, k, v, is_causal=is_causal, enable_gqa=gqa)
    return call


def best_sdpa(q, k, v, is_causal=False):
    """``(graph_us, name, call)`` of the fastest SDPA backend for these inputs (GQA where k has
    fewer heads than q)."""
    best = (math.inf, "", None)
    for name, backend in sdpa_backends().items():
        call = sdpa_call(q, k, v, backend, is_causal)
        try:
            t = graph_us(call)
        except RuntimeError:  # the backend does not take this shape
            continue
        best = min(best, (t, name, call), key=lambda x: x[0])
    return best


def int8_inputs(q, k, v, recipe: ism.Recipe, amax: float = 4.0):
    """Per-tensor int8 copies of q, k, v at scale ``amax / 127`` and their static scales; v is
    stored (B, H, D, N) with rows of keys padded to 16 bytes, the layout the kernel reads fastest
    (the one :func:`qflash.quantize.quantize_qkv` writes)."""
    import qflash
    s = amax / 127
    q8, k8 = ((x / s).round().clamp(-127, 127).to(torch.int8) for x in (q, k))
    B, H, N, D = v.shape
    v8 = torch.zeros((B, H, D, -(-N // 16) * 16), dtype=torch.int8, device=v.device)[..., :N]
    v8.copy_((v / s).round().clamp(-127, 127).to(torch.int8).transpose(-1, -2))
    v8 = v8.transpose(-1, -2)
    static = qflash.static_scales(recipe, scales=(s, s, s), heads=q.shape[1], head_dim=q.shape[3], device=q.device)
    return q8, k8, v8, static


def uniform(shape, seed: int = 0, kv_shape=None):
    """fp16 q, k, v on U[-4, 4]; k and v of ``kv_shape`` where given."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return tuple(torch.empty(s, device="cuda", dtype=torch.float16).uniform_(-4, 4, generator=gen)
                 for s in (shape, kv_shape or shape, kv_shape or shape))


def sqnr_db(workload: str, recipe: ism.Recipe) -> float:
    """The dynamic float path on U[-4, 4] float32 inputs (seed 0, batch 1) against float64 attention."""
    import qflash
    q, k, v = qkv(workload, "uniform", seed=0) if workload in WORKLOADS else \
        (np.random.default_rng(0).uniform(-4, 4, shape_of(workload, 1)) for _ in range(3))
    out = qflash.attention(*(torch.from_numpy(x.astype(np.float32)).cuda() for x in (q, k, v)), recipe=recipe)
    return float(ism.sqnr_db(ism.float_attention(q, k, v), out.double().cpu().numpy()))


def measure_row(workload: str, batch: int, recipes=None, log=print) -> dict:
    """Every column of one row (see the module docstring); ``recipes``: :func:`row_recipes` by default."""
    shape = shape_of(workload, batch)
    causal = workload in CAUSAL
    q, k, v = uniform(shape, kv_shape=kv_shape_of(workload, batch))
    t, backend, _ = best_sdpa(q, k, v, causal)

    gqa = workload in KV_HEADS

    def plain():  # what a user calls: SDPA's default dispatch
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    row = dict(workload=workload, batch=batch, shape=list(shape), sdpa_backend=backend, sdpa_graph_us=t,
               sdpa_eager_us=eager_us(plain), sdpa_host_us=host_us(plain), recipes={})
    if causal:
        row["is_causal"] = True
    if workload in KEYS:
        row["keys"] = KEYS[workload]
    for name, recipe in (recipes or row_recipes(workload, batch)).items():
        calls = recipe_calls(recipe, q, k, v, causal, gqa)
        r = {}
        for path, fn in calls.items():
            r[f"{path}_graph_us"] = graph_us(fn)
            r[f"{path}_eager_us"] = eager_us(fn)
            r[f"{path}_host_us"] = host_us(fn)
        splits = split_count(recipe, shape, kv_shape_of(workload, batch))
        if splits > 1:  # split-key decoding: the int8 call without it, for the gain in the same run
            r["splits"] = splits
            with unsplit():
                r["int8_unsplit_graph_us"] = graph_us(calls["int8"])
        if batch == 1 and workload in WORKLOADS:
            r["sqnr_db"] = sqnr_db(workload, recipe)
        row["recipes"][name] = r
    log(format_row(row))
    return row


def recipe_calls(recipe: ism.Recipe, q, k, v, causal: bool, gqa: bool) -> dict:
    """A recipe's timed calls on fp16 q, k, v: ``int8`` (:func:`qflash.attention_int8` on int8
    copies), ``static`` (calibrated ranges) and ``dynamic`` (measured per call). A recipe whose Q
    is per token or that has input transforms runs its int8 and static calls as a calibrated
    model does: transforms folded away (the recipe without them), Q's scales per call; the float
    softmax baseline has no static path."""
    import qflash
    folded = recipe.replace(transforms=())
    q_rows = recipe.q_granularity.block()[1] is not None
    plain = not (q_rows or recipe.transforms or recipe.accumulation.float_softmax)
    q8, k8, v8, static8 = int8_inputs(q, k, v, recipe if plain else ism.Recipe.per_tensor())
    kw = dict(is_causal=causal, enable_gqa=gqa)
    calls = {"dynamic": lambda: qflash.attention(q, k, v, recipe=recipe, **kw)}
    if plain:
        calls["int8"] = lambda: qflash.attention_int8(q8, k8, v8, recipe=recipe, out_dtype=torch.float16,
                                                      static=static8, **kw)
    else:
        s = int8_scales(folded, q, k, 4.0 / 127)
        calls["int8"] = lambda: qflash.attention_int8(q8, k8, v8, *s, recipe=folded, out_dtype=torch.float16, **kw)
    if not recipe.accumulation.float_softmax:
        heads = [g.block()[0] for g in (folded.q_granularity, folded.k_granularity, folded.v_granularity)]
        ranges = [[4.0] * q.shape[1] if h is not None else 4.0 for h in heads]
        static = qflash.static_scales(folded, None if q_rows else ranges[0], *ranges[1:], heads=q.shape[1],
                                      head_dim=q.shape[3], device=q.device)
        calls["static"] = lambda: qflash.attention(q, k, v, recipe=folded, static=static, **kw)
    return {p: calls[p] for p in ("int8", "static", "dynamic") if p in calls}


def int8_scales(recipe: ism.Recipe, q, k, s: float) -> list:
    """``(s_q, s_k, s_v)`` of value ``s`` shaped as :func:`qflash.attention_int8` takes them for the
    recipe's granularities: (1,) per tensor, (B*H,) per head, (B*H, N) per token (K's per K/V head)."""
    out = []
    for g, x in zip((recipe.q_granularity, recipe.k_granularity, recipe.v_granularity), (q, k, k)):
        heads, rows = g.block()
        bh = x.shape[0] * x.shape[1]
        out.append(torch.full((1,) if heads is None else (bh,) if rows is None else (bh, x.shape[2]), s, device=q.device))
    return out


def split_count(recipe, shape, kv_shape) -> int:
    """How many key splits the API gives an int8 call of this shape (:func:`qflash.api._splits`); a
    grouped one packs its query heads into the rows of each K/V head."""
    from qflash import api
    B, H, NQ, D = shape
    H_kv, keys = kv_shape[1], kv_shape[2]
    spec = api._spec(recipe, D, api.MaskKind.NONE, api.OutKind.FLOAT)
    call = api.Call((B,), B, 1, H_kv, NQ * (H // H_kv), keys, D, 1.0, api.MaskKind.NONE, torch.device("cuda"))
    return api._splits(spec, call, api._launch_config(spec)["block_m"])


@contextlib.contextmanager
def unsplit():
    """Calls inside run unsplit (one program per row block); recorded call plans are dropped on
    entry and exit, since a plan replays the launches it recorded."""
    from qflash import api
    saved = api._splits
    api._splits = lambda spec, call, block_m: 1
    api._PLANS.plans.clear()
    try:
        yield
    finally:
        api._splits = saved
        api._PLANS.plans.clear()


def energy_rows(log=print) -> list:
    """mJ per call under graph replay: SDPA (fastest backend) and each recipe's int8 path."""
    import qflash
    out = []
    for workload, batch in ENERGY_ROWS:
        q, k, v = uniform(shape_of(workload, batch))
        _, backend, call = best_sdpa(q, k, v)
        row = dict(workload=workload, batch=batch, sdpa_backend=backend, sdpa_mj=energy_mj(call))
        for name, recipe in RECIPES.items():
            q8, k8, v8, static8 = int8_inputs(q, k, v, recipe)
            row[f"{name}_mj"] = energy_mj(lambda: qflash.attention_int8(q8, k8, v8, recipe=recipe,
                                                                        out_dtype=torch.float16, static=static8))
        log(f"energy {workload} b={batch}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.endswith("_mj")))
        out.append(row)
    return out


def unfused_rows(log=print) -> list:
    """The unfused pipeline against the fused kernel on the same int8 inputs and recipe (equal outputs)."""
    import qflash
    from qflash import unfused
    out = []
    for workload, batch in UNFUSED_ROWS:
        q, k, v = uniform(shape_of(workload, batch))
        q8, k8, v8, static8 = int8_inputs(q, k, v, UNFUSED_RECIPE)
        buffers = unfused.make_buffers(q8)
        fused = qflash.attention_int8(q8, k8, v8, recipe=UNFUSED_RECIPE, out_dtype=torch.float16, static=static8)
        apart = unfused.attention_int8(q8, k8, v8, static8.table, UNFUSED_RECIPE, buffers=buffers)
        row = dict(workload=workload, batch=batch, recipe=UNFUSED_RECIPE.name, equal=bool(torch.equal(fused, apart)),
                   fused_graph_us=graph_us(lambda: qflash.attention_int8(q8, k8, v8, recipe=UNFUSED_RECIPE,
                                                                         out_dtype=torch.float16, static=static8)),
                   unfused_graph_us=graph_us(lambda: unfused.attention_int8(q8, k8, v8, static8.table, UNFUSED_RECIPE,
                                                                            buffers=buffers)))
        log(f"unfused {workload} b={batch}: fused {row['fused_graph_us']:.1f} us, unfused "
            f"{row['unfused_graph_us']:.1f} us, outputs equal: {row['equal']}")
        out.append(row)
    return out


def format_row(row: dict) -> str:
    """GPU time and its ratio to SDPA's per recipe and path; host time ratios (to SDPA's host time)."""
    base, host = row["sdpa_graph_us"], row["sdpa_host_us"]
    cells = [f"{row['workload']:3s} {row['batch']:5d} {base:8.1f}"]
    for name, r in row["recipes"].items():
        paths = [p for p in ("int8", "static", "dynamic") if f"{p}_graph_us" in r]
        cells.append(f"{name} {r['int8_graph_us']:8.1f} ({r['int8_graph_us'] / base:4.2f}x) "
                     + " ".join(f"{p[:4]} {r[p + '_graph_us'] / base:4.2f}x" for p in paths[1:])
                     + " host " + "/".join(f"{r[p + '_host_us'] / host:4.2f}" for p in paths) + "x"
                     + (f" {r['sqnr_db']:5.2f} dB" if "sqnr_db" in r else ""))
    return "  ".join(cells) + f"  [{row['sdpa_backend']}, host {host:.1f} us]"


def markdown(result: dict) -> str:
    """The tables of ``docs/performance.md`` from a results file: latency (GPU time, ratios to SDPA;
    the float paths as multiples of the int8 call), host time at batch 1 and 8 (the first recipe),
    the unfused pipeline and energy."""
    names = list(next(iter(result["rows"]))["recipes"])
    long_rows = [row for row in result["rows"] if row["workload"] in LLM_SHAPES]
    out = ["| workload | batch | SDPA fp16 (backend) | " + " | ".join(f"{n} int8 | {n} / SDPA" for n in names)
           + " | " + " | ".join(f"{n} static / dynamic ÷ int8" for n in names) + " | SQNR " + " / ".join(names)
           + " (dB) |", "|---|---:|---:|" + "---:|" * (3 * len(names) + 1)]
    for row in result["rows"]:
        if not set(names) <= set(row["recipes"]):
            continue
        rs = [row["recipes"][n] for n in names]
        base = row["sdpa_graph_us"]
        sqnr = " / ".join(f"{r['sqnr_db']:.2f}" for r in rs if "sqnr_db" in r)
        out.append(f"| {_label(row)} | {row['batch']} | {base:.1f} ({row['sdpa_backend']}) | "
                   + " | ".join(f"{r['int8_graph_us']:.1f} | {r['int8_graph_us'] / base:.2f}" for r in rs) + " | "
                   + " | ".join(f"{r['static_graph_us'] / r['int8_graph_us']:.2f} / "
                                f"{r['dynamic_graph_us'] / r['int8_graph_us']:.2f}" for r in rs) + f" | {sqnr} |")
    if long_rows:
        every = list(dict.fromkeys(n for row in long_rows for n in row["recipes"]))
        out += ["", "| workload | batch | keys | SDPA fp16 (backend) | "
                + " | ".join(f"{n} int8 | {n} / SDPA" for n in every) + " |",
                "|---|---:|---:|---:|" + "---:|" * (2 * len(every))]
        for row in long_rows:
            base = row["sdpa_graph_us"]
            out.append(f"| {_label(row)} | {row['batch']} | {row.get('keys', row['shape'][2])} | {base:.1f} "
                       f"({row['sdpa_backend']}) | " + " | ".join(_long_cell(row["recipes"].get(n), base) for n in every)
                       + " |")
    transformed = [row for row in result["rows"] if set(DEFAULT_RECIPES) <= set(row["recipes"])]
    if transformed:  # issue 11: the default's paths against the per-tensor recipe's
        paths = ("int8", "static", "dynamic")
        out += ["", "| workload | batch | per_tensor int8 / static / dynamic (µs) | default int8 / static / dynamic (µs) "
                "| default ÷ per_tensor |", "|---|---:|---:|---:|---:|"]
        for row in transformed:
            d, a = row["recipes"]["per_tensor"], row["recipes"]["default"]
            out.append(f"| {_label(row)} | {row['batch']} | " + " / ".join(f"{d[p + '_graph_us']:.1f}" for p in paths)
                       + " | " + " / ".join(f"{a[p + '_graph_us']:.1f}" for p in paths) + " | "
                       + " / ".join(f"{a[p + '_graph_us'] / d[p + '_graph_us']:.2f}" for p in paths) + " |")
    out += ["", "| workload | batch | SDPA (plain call) | int8 | static | dynamic | int8 / static / dynamic ÷ SDPA |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        if row["batch"] <= 8 and names[0] in row["recipes"]:
            r, host = row["recipes"][names[0]], row["sdpa_host_us"]
            out.append(f"| {_label(row)} | {row['batch']} | {host:.1f} | " + " | ".join(
                f"{r[p + '_host_us']:.1f}" for p in ("int8", "static", "dynamic")) + " | " + " / ".join(
                f"{r[p + '_host_us'] / host:.2f}" for p in ("int8", "static", "dynamic")) + " |")
    if "unfused" in result:
        out += ["", "| workload | batch | fused kernel | unfused pipeline | unfused / fused | outputs equal |",
                "|---|---:|---:|---:|---:|---|"]
        out += [f"| {_label(r)} | {r['batch']} | {r['fused_graph_us']:.1f} µs | {r['unfused_graph_us']:.1f} µs | "
                f"{r['unfused_graph_us'] / r['fused_graph_us']:.1f}× | {r['equal']} |" for r in result["unfused"]]
    if "energy" in result:
        out += ["", "| workload | batch | SDPA fp16 | " + " | ".join(names) + f" | {names[-1]} / SDPA |",
                "|---|---:|---:|" + "---:|" * (len(names) + 1)]
        out += [f"| {_label(r)} | {r['batch']} | {r['sdpa_mj']:.2f} mJ ({r['sdpa_backend']}) | "
                + " | ".join(f"{r[n + '_mj']:.2f} mJ" for n in names) + f" | {r[names[-1] + '_mj'] / r['sdpa_mj']:.2f} |"
                for r in result["energy"]]
    return "\n".join(out)


def _label(row: dict) -> str:
    """A row's workload, with the commit it was measured at when carried from an earlier run."""
    return row["workload"] + (f" (at {row['commit'][:7]})" if "commit" in row else "")


def _long_cell(r, base: float) -> str:
    """An LLM row's int8 time and ratio; split-key calls also give their splits and unsplit time."""
    if r is None:
        return "— | —"
    split = f" ({r['splits']} splits; unsplit {r['int8_unsplit_graph_us']:.1f})" if "splits" in r else ""
    return f"{r['int8_graph_us']:.1f}{split} | {r['int8_graph_us'] / base:.2f}"


def merge(parts: list, names: list, carried: list = (), carried_names: list = ()) -> dict:
    """One results file from the files of several runs of one commit on one GPU (``names``: their
    paths, for the record): the rows in the benchmark's order, a row measured twice taken from the
    later file, the unfused and energy comparisons from the last file that has them. Each row's
    ratios stay against the SDPA time of its own run. ``carried``: results of earlier commits
    (same GPU) whose rows and comparisons fill in what ``parts`` did not measure, each keeping its
    own ``commit``, so that a partial run does not drop the rest of the record."""
    commits = {part["commit"] for part in parts}
    if len(commits) > 1:
        raise ValueError(f"results from different commits cannot be merged: {sorted(commits)}; merge one "
                         "commit's runs, and pass earlier commits' results as carried")
    gpus = {part["gpu"] for part in [*parts, *carried]}
    if len(gpus) > 1:
        raise ValueError(f"results from different GPUs cannot be merged: {sorted(gpus)}")
    commit = parts[0]["commit"]
    old = [dict(part, rows=[{**r, "commit": r.get("commit", part["commit"])} for r in part["rows"]],
                **{k: [{**x, "commit": x.get("commit", part["commit"])} for x in part[k]]
                   for k in ("unfused", "energy") if k in part})
           for part in carried if part["commit"] != commit]
    rows = {(r["workload"], r["batch"]): r for part in [*old, *parts] for r in part["rows"]}
    order = {key: i for i, key in enumerate(ROWS)}
    out = dict(date=max(part["date"] for part in parts), gpu=parts[0]["gpu"], commit=commit,
               command="python -m qflash.benchmark --merge " + " ".join(names)
               + (" --carry " + " ".join(carried_names) if carried_names else ""),
               runs=[part["command"] for part in parts], torch=parts[0].get("torch"),
               rows=sorted(rows.values(), key=lambda r: order.get((r["workload"], r["batch"]), len(order))))
    for key in ("unfused", "energy"):
        found = [part[key] for part in [*old, *parts] if key in part]
        if found:
            out[key] = found[-1]
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qflash.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here (docs/performance.json)")
    parser.add_argument("--rows", help="comma-separated workload:batch subset, e.g. A2:256,A7:256")
    parser.add_argument("--commit", default=None, help="the commit measured (default: git rev-parse HEAD)")
    parser.add_argument("--no-extras", action="store_true", help="skip the energy and unfused comparisons")
    parser.add_argument("--markdown", metavar="JSON", help="print docs/performance.md's tables from a results file "
                        "and exit (no GPU)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="merge the results files of several runs (one "
                        "commit, one GPU: a run longer than the device allows, split by --rows) into --json; no GPU")
    parser.add_argument("--carry", nargs="+", default=[], metavar="JSON", help="with --merge: earlier commits' "
                        "results, whose rows fill in those not measured (each keeps its commit)")
    args = parser.parse_args(argv)
    if args.merge:
        if not args.json:
            raise SystemExit("--merge writes the merged results to --json FILE")
        parts = []
        for name in [*args.merge, *args.carry]:
            with open(name) as f:
                parts.append(json.load(f))
        with open(args.json, "w") as f:
            json.dump(merge(parts[:len(args.merge)], args.merge, parts[len(args.merge):], args.carry), f, indent=1)
        return 0
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)))
        return 0
    if not torch.cuda.is_available():
        raise SystemExit("qflash.benchmark needs a CUDA device")
    rows = ROWS if not args.rows else [(w, int(b)) for w, b in (x.split(":") for x in args.rows.split(","))]
    result = dict(date=str(datetime.date.today()), gpu=torch.cuda.get_device_name(), commit=args.commit or git_commit(),
                  command="python -m qflash.benchmark" + (f" --json {args.json}" if args.json else "")
                  + (f" --rows {args.rows}" if args.rows else "") + (" --no-extras" if args.no_extras else ""),
                  torch=torch.__version__, rows=[])

    def save():  # after every row, so an interrupted run keeps what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)

    for w, b in rows:
        result["rows"].append(measure_row(w, b))
        save()
    if not args.no_extras:
        result["unfused"] = unfused_rows()
        save()
        result["energy"] = energy_rows()
        save()
    print(f"\n{result['date']} {result['gpu']} {result['commit'][:10]}; GPU time by CUDA-graph replay, us; "
          "x = time / SDPA fp16 (same row)")
    print(f"{'wl':3s} {'b':>5s} {'sdpa':>8s}  " + "  ".join(f"{n} int8 (x), static x, dynamic x, host int8/static/dynamic x"
                                                          for n in RECIPES))
    for row in result["rows"]:
        print(format_row(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
