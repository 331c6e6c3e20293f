"""Latency of qflash against PyTorch SDPA (fp16), all measured in the same run.

``python -m qflash.benchmark`` prints the table of ``docs/performance.md``: workloads A1-A7
at batch 1, 8 and 256 plus A2 at 1024, with columns

* ``sdpa``: SDPA fp16, the best of its backends (default, flash, efficient, cuDNN);
* ``int8``: :func:`qflash.attention_int8`, int8 Q/K/V with calibrated per-tensor scales (the
  constant table derived once: one kernel launch per call), fp16 output;
* ``static``: :func:`qflash.attention` fp16 in and out with calibrated (static) scales;
* ``dynamic``: :func:`qflash.attention` with scales measured on the device per call;
* ``floor``: int8 Q/K/V read once and fp16 output written once, at the copy bandwidth
  measured in the same run;

and the ratio of each qflash column to ``sdpa``. Times are ``triton.testing.do_bench``
medians in microseconds. ``--sweep`` also times kernel tile configurations. The analysis
report imports :func:`measure` for its GPU latency table.
"""
from __future__ import annotations

import argparse
import datetime
import itertools

import numpy as np
import torch

import intsoftmax as ism
from intsoftmax.workloads import WORKLOADS, workload_shape

BATCHES = (1, 8, 256)
EXTRA = (("A2", 1024),)


def _bench(fn) -> float:
    import triton.testing
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3


def copy_bandwidth(device="cuda") -> float:
    """Bytes per second of a large device-to-device copy (bytes read plus bytes written)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    us = _bench(lambda: dst.copy_(src))
    return 2 * src.numel() / (us * 1e-6)


def sdpa_time(q, k, v) -> tuple[float, str]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    best = (float("inf"), "")
    backends = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION}
    for name, backend in backends.items():
        try:
            if backend is None:
                t = _bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
            else:
                with sdpa_kernel(backend):
                    t = _bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
        except RuntimeError:
            continue
        best = min(best, (t, name))
    return best


def int8_inputs(q, k, v, recipe: ism.Recipe):
    """Per-tensor int8 copies of q, k, v (scale 4/127; v with its keys contiguous, the layout the
    kernel reads fastest) and their static scales."""
    import qflash
    s = 4.0 / 127
    q8, k8 = ((x / s).round().clamp(-127, 127).to(torch.int8) for x in (q, k))
    v8 = (v / s).round().clamp(-127, 127).to(torch.int8).transpose(-1, -2).contiguous().transpose(-1, -2)
    static = qflash.static_scales(recipe, scales=(s, s, s), heads=q.shape[1], head_dim=q.shape[3], device="cuda")
    return q8, k8, v8, static


def measure(workload: str, batch: int, recipe: ism.Recipe, bandwidth: float) -> dict:
    """Every column for one workload and batch (microseconds)."""
    import qflash
    shape = workload_shape(workload, batch)
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.empty(shape, device="cuda", dtype=torch.float16).uniform_(-4, 4, generator=gen)
               for _ in range(3))
    row = dict(workload=workload, batch=batch)
    row["sdpa"], row["sdpa_backend"] = sdpa_time(q, k, v)
    q8, k8, v8, int8_static = int8_inputs(q, k, v, recipe)
    row["int8"] = _bench(lambda: qflash.attention_int8(q8, k8, v8, recipe=recipe, out_dtype=torch.float16,
                                                       static=int8_static))
    static = qflash.static_scales(recipe, 4.0, 4.0, 4.0, heads=shape[1], head_dim=shape[3], device="cuda")
    row["static"] = _bench(lambda: qflash.attention(q, k, v, recipe=recipe, static=static))
    row["dynamic"] = _bench(lambda: qflash.attention(q, k, v, recipe=recipe))
    elements = int(np.prod(shape))
    row["floor"] = (3 * elements + 2 * elements) / bandwidth * 1e6
    return row


def kernel_only(workload: str, batch: int, recipe: ism.Recipe, configs=None) -> list[dict]:
    """The fused kernel alone (int8 inputs and constant table prepared beforehand), for each
    tile configuration ``(block_m, num_warps, num_stages)``; the default is the API's choice."""
    from qflash import api, quantize as qz
    from qflash.kernel import launch
    from qflash.spec import KernelSpec, MaskKind, OutKind
    shape = workload_shape(workload, batch)
    q, k, v = (torch.empty(shape, device="cuda", dtype=torch.float16).uniform_(-4, 4) for _ in range(3))
    (q8, s_q), (k8, s_k), (v8, s_v) = qz.quantize_qkv(q, k, v, recipe)
    table = qz.table(recipe, s_q, s_k, s_v, shape[3] ** -0.5, shape[0], shape[1], shape[2])
    spec = KernelSpec.build(recipe, shape[3], MaskKind.NONE, OutKind.FLOAT)
    out = torch.empty(shape, device="cuda", dtype=torch.float16)
    lut = api._lut(recipe.exp, "cuda")
    if configs is None:
        cfg = api._launch_config(spec)
        configs = [(cfg["block_m"], cfg["num_warps"], cfg["num_stages"])]
    rows = []
    for config in configs:
        block_m, warps, stages = config[:3]
        extra = {"maxnreg": config[3]} if len(config) > 3 else {}
        try:
            t = _bench(lambda: launch(spec, q8, k8, v8, table, out, lut=lut, block_m=block_m, num_warps=warps,
                                      num_stages=stages, **extra))
        except Exception as err:  # out of resources for this tile: report and go on
            t = float("nan")
            print(f"  {workload} b={batch} {block_m}/{warps}/{stages}: {type(err).__name__}: {str(err)[:80]}")
        rows.append(dict(workload=workload, batch=batch, block_m=block_m, warps=warps, stages=stages,
                         maxnreg=extra.get("maxnreg"), us=t))
    return rows


def sweep(workload: str, batch: int, recipe: ism.Recipe) -> list[dict]:
    """Kernel-only time for each tile configuration."""
    stages = (1,) if recipe.exp.kind == "lut_exp2" else (2, 3)
    configs = list(itertools.product((64, 128), (4, 8), stages)) + [(64, 4, 3, r) for r in (128, 104, 96)]
    return kernel_only(workload, batch, recipe, configs)


#: Recipes whose kernel-only times attribute the cost: exp strategy, P width, accumulation rule.
COST_RECIPES = {
    "default (poly3, P11)": ism.Recipe.default(),
    "poly3, P8": ism.Recipe(p_bits=8),
    "poly2, P11": ism.Recipe(exp=ism.PolyExp2(degree=2)),
    "poly2, P7": ism.Recipe(exp=ism.PolyExp2(degree=2), p_bits=7),
    "shift-linear, P7": ism.Recipe(exp=ism.ShiftLinearExp2(), p_bits=7),
    "lut k6, P8": ism.Recipe(exp=ism.LutExp2(interpolate=False), p_bits=8),
    "qflash (paper)": ism.Recipe.qflash(),
    "default, two-pass": ism.Recipe(accumulation=ism.TwoPass()),
    "default, block_n 128": ism.Recipe(block_n=128),
    "default, block_n 256": ism.Recipe(block_n=256),
}


def _host_us(fn, iters: int = 300) -> float:
    """Host time per call in microseconds (the calls are queued, then synchronized once)."""
    import time
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    us = (time.perf_counter() - t0) / iters * 1e6
    torch.cuda.synchronize()
    return us


def launch_overhead(recipe: ism.Recipe) -> dict:
    """Host time of one attention-kernel launch at A2 b=1: Triton's ``kernel[grid](...)`` against
    :func:`qflash.launcher.launch` (the compiled binary, cached per specialization)."""
    from qflash import api, quantize as qz
    from qflash.kernel import launch
    from qflash.launcher import launch as fast
    shape = workload_shape("A2", 1)
    q, k, v = (torch.empty(shape, device="cuda", dtype=torch.float16).uniform_(-4, 4) for _ in range(3))
    (q8, s_q), (k8, s_k), (v8, s_v) = qz.quantize_qkv(q, k, v, recipe)
    table = qz.table(recipe, s_q, s_k, s_v, shape[3] ** -0.5, *shape[:3])
    spec = api._spec(recipe, shape[3], api.MaskKind.NONE, api.OutKind.FLOAT)
    out = torch.empty(shape, device="cuda", dtype=torch.float16)
    cfg = api._launch_config(spec)

    def triton_jit(kernel, grid, *args, **options):
        kernel[grid](*args, **options)

    return dict(triton_jit=_host_us(lambda: launch(spec, q8, k8, v8, table, out, launcher=triton_jit, **cfg)),
                qflash_launcher=_host_us(lambda: launch(spec, q8, k8, v8, table, out, launcher=fast, **cfg)))


def host_overhead(recipe: ism.Recipe, iters: int = 200) -> dict:
    """Host time per call (microseconds) of each API path at A2, batch 1 (:func:`_host_us`),
    against the GPU time of the same call replayed from a CUDA graph."""
    import qflash
    shape = workload_shape("A2", 1)
    q, k, v = (torch.empty(shape, device="cuda", dtype=torch.float16).uniform_(-4, 4) for _ in range(3))
    q8, k8, v8, int8_static = int8_inputs(q, k, v, recipe)
    static = qflash.static_scales(recipe, 4.0, 4.0, 4.0, heads=shape[1], head_dim=shape[3], device="cuda")
    calls = {
        "int8": lambda: qflash.attention_int8(q8, k8, v8, recipe=recipe, out_dtype=torch.float16, static=int8_static),
        "static": lambda: qflash.attention(q, k, v, recipe=recipe, static=static),
        "dynamic": lambda: qflash.attention(q, k, v, recipe=recipe),
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
    }
    out = {}
    for name, fn in calls.items():
        host = _host_us(fn, iters)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        out[name] = dict(host=host, graph=_bench(graph.replay))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=["default", "qflash"], default="default")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--sweep", action="store_true", help="time tile configurations on A2 and A7 at b=256")
    parser.add_argument("--costs", action="store_true", help="kernel-only time of several recipes, A2 and A7 b=256")
    parser.add_argument("--overhead", action="store_true", help="host time per call and CUDA-graph replay, b=1")
    parser.add_argument("--once", metavar="NAME", help="run one COST_RECIPES kernel a few times (for a profiler)")
    parser.add_argument("--host-profile", action="store_true", help="cProfile of the API's host work at b=1")
    parser.add_argument("--launch-overhead", action="store_true", help="host time of one kernel launch, two ways")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("qflash.benchmark needs a CUDA device")
    recipe = ism.Recipe.default() if args.recipe == "default" else ism.Recipe.qflash()
    if args.launch_overhead:
        for name, us in launch_overhead(recipe).items():
            print(f"one attention-kernel launch, A2 b=1, {name:16s}: {us:7.1f} us host time")
    if args.host_profile:
        import cProfile
        import pstats
        host_overhead(recipe, iters=5)  # compile and warm up
        cProfile.runctx("host_overhead(recipe, iters=100)", globals(), {"recipe": recipe, "host_overhead": host_overhead},
                        "/tmp/qflash_host.prof")
        pstats.Stats("/tmp/qflash_host.prof").sort_stats("tottime").print_stats(25)
        return
    if args.once:
        for w in args.workloads.split(","):
            kernel_only(w, int(args.batches.split(",")[-1]), COST_RECIPES[args.once])
        return
    if args.sweep:
        for w in ("A2", "A7"):
            for row in sweep(w, 256, recipe):
                print(f"sweep {args.recipe} {w} b=256 block_m={row['block_m']} warps={row['warps']} "
                      f"stages={row['stages']} maxnreg={row['maxnreg']}: {row['us']:.1f} us")
    if args.costs:
        for name, r in COST_RECIPES.items():
            times = [kernel_only(w, 256, r)[0]["us"] for w in ("A2", "A7")]
            print(f"kernel-only {name:22s} A2 b=256 {times[0]:7.1f} us   A7 b=256 {times[1]:7.1f} us")
    if args.overhead:
        for name, t in host_overhead(recipe).items():
            print(f"b=1 A2 {name:8s}: host {t['host']:7.1f} us per call, CUDA-graph replay {t['graph']:6.1f} us")
    bw = copy_bandwidth()
    cases = [(w, int(b)) for w in args.workloads.split(",") for b in args.batches.split(",")]
    cases += [c for c in EXTRA if c[0] in args.workloads.split(",")]
    rows = [measure(w, b, recipe, bw) for w, b in cases]
    print(f"\n{datetime.date.today()} {torch.cuda.get_device_name()} recipe={args.recipe} "
          f"copy bandwidth {bw / 1e12:.2f} TB/s; times in us (median); ratio = time / sdpa")
    print(f"{'wl':3s} {'b':>5s} {'sdpa':>8s} {'int8':>8s} {'static':>8s} {'dynamic':>8s} {'floor':>7s} "
          f"{'r_int8':>7s} {'r_stat':>7s} {'r_dyn':>7s}  sdpa backend")
    for r in rows:
        print(f"{r['workload']:3s} {r['batch']:5d} {r['sdpa']:8.1f} {r['int8']:8.1f} {r['static']:8.1f} "
              f"{r['dynamic']:8.1f} {r['floor']:7.1f} {r['int8'] / r['sdpa']:7.2f} {r['static'] / r['sdpa']:7.2f} "
              f"{r['dynamic'] / r['sdpa']:7.2f}  {r['sdpa_backend']}")


if __name__ == "__main__":
    main()
