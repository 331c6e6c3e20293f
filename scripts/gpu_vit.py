"""End-to-end timm models with qflash attention on a CUDA GPU: correctness and latency.

    PYTHONPATH=. python3 scripts/gpu_vit.py                  # all three models, batches 1, 64, 256
    PYTHONPATH=. python3 scripts/gpu_vit.py --models vit_small_patch16_224 --batches 1 64 --iters 10

Needs CUDA and timm (no weights are downloaded: ``pretrained=False``, random initialisation).
For each model (eval mode, ``--dtype``, default float16):

1. patch a copy with ``qflash.patch`` (the report must list every attention module) and
   calibrate a second copy with ``qflash.calibrate`` on random images;
2. correctness: relative error ``||y - y_float|| / ||y_float||`` of the logits and top-1 agreement
   with the float model, static and dynamic, on a batch of random images; and, for the first two
   attention modules (for Swin, a plain and a shifted-window one), whether the kernel's output
   equals the golden model's (``Recipe.attention``) bit for bit on the inputs they receive;
3. host synchronisation: one forward of each model under
   ``torch.cuda.set_sync_debug_mode("error")`` (the float model is the control);
4. latency: median milliseconds per forward over ``--iters`` timed runs (CUDA events, after
   warm-up), for float SDPA / patched static / patched dynamic at each batch size.

The last thing printed is the latency table.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import traceback
import warnings

import torch

MODELS = ("vit_small_patch16_224", "deit_small_patch16_224", "swin_tiny_patch4_window7_224")
EXPECTED_MODULES = {"vit_small_patch16_224": 12, "deit_small_patch16_224": 12, "swin_tiny_patch4_window7_224": 12}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def images(batch: int, dtype, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(batch, 3, 224, 224, device="cuda", generator=g).to(dtype)


@torch.no_grad()
def latency_ms(model, x, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


@torch.no_grad()
def host_syncs(model, x) -> str:
    """'none' if a forward runs without synchronising with the host, else where the first one is."""
    torch.cuda.synchronize()
    warnings.filterwarnings("ignore", message="Synchronization debug mode is a prototype")
    torch.cuda.set_sync_debug_mode("error")
    try:
        model(x)
        return "none"
    except RuntimeError as e:
        frame = traceback.extract_tb(e.__traceback__)[-1]
        return f"at {frame.filename.rsplit('/', 2)[-1] if '/' in frame.filename else frame.filename}:{frame.lineno} " \
               f"({frame.line})"
    finally:
        torch.cuda.set_sync_debug_mode("default")


@torch.no_grad()
def matches_golden(model, path: str, x) -> bool:
    """Whether one patched module's kernel output equals the golden model's bit for bit, on the
    inputs (and Swin mask) that the module receives inside ``model(x)``."""
    module = model.get_submodule(path)
    seen = {}
    hook = module.register_forward_hook(lambda m, a, kw, out: seen.update(a=a, kw=kw, out=out), with_kwargs=True)
    try:
        model(x)
    finally:
        hook.remove()
    module.backend = "golden"
    try:
        golden = module(*seen["a"], **seen["kw"])
    finally:
        module.backend = "auto"
    return torch.equal(golden, seen["out"])


def check_model(name: str, args, recipe, log) -> list[dict]:
    import timm
    import qflash

    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False).eval().to("cuda", dtype)
    dynamic, static = copy.deepcopy(ref), copy.deepcopy(ref)
    report = qflash.patch(dynamic, recipe=recipe)
    qflash.patch(static, recipe=recipe)
    log(str(report).splitlines()[0] + f" ({report.replaced[0].kind}, {len(report.skipped)} skipped)")
    for path, why in report.skipped:
        log(f"  skipped {path}: {why}")
    if len(report) != EXPECTED_MODULES.get(name, len(report)):
        log(f"  WARNING: expected {EXPECTED_MODULES[name]} attention modules, replaced {len(report)}")
    with torch.no_grad():
        calib = qflash.calibrate(static, [images(args.calib_batch, dtype, seed=100 + i) for i in range(args.calib_batches)])
    log(f"  calibrated on {calib.batches} x {args.calib_batch} random images")

    x = images(args.check_batch, dtype, seed=1)
    with torch.no_grad():
        y = ref(x).float()
        for label, m in (("static", static), ("dynamic", dynamic)):
            out = m(x).float()
            rel = ((out - y).norm() / y.norm()).item()
            agree = (out.argmax(-1) == y.argmax(-1)).float().mean().item() * 100
            log(f"  {label:7s}: logits rel. error {rel:.2e}, top-1 agreement {agree:.1f} % (batch {args.check_batch})")
        x2 = x[:2]
        for label, m in (("static", static), ("dynamic", dynamic)):
            same = [matches_golden(m, r.path, x2) for r in report.replaced[:2]]
            log(f"  {label:7s}: kernel == golden model on {', '.join(r.path for r in report.replaced[:2])}: "
                f"{'yes' if all(same) else 'NO ' + str(same)}")
    syncs = {label: host_syncs(m, x) for label, m in (("float", ref), ("static", static), ("dynamic", dynamic))}
    for label, where in syncs.items():
        log(f"  host syncs, {label}: {where}")

    rows = []
    for batch in args.batches:
        xb = images(batch, dtype, seed=2)
        try:
            ms = {label: latency_ms(m, xb, args.warmup, args.iters)
                  for label, m in (("float", ref), ("static", static), ("dynamic", dynamic))}
        except torch.cuda.OutOfMemoryError:
            log(f"  batch {batch}: out of memory")
            torch.cuda.empty_cache()
            continue
        rows.append(dict(model=name, batch=batch, **ms))
        log(f"  batch {batch:3d}: float {ms['float']:.2f} ms, static {ms['static']:.2f} ms, "
            f"dynamic {ms['dynamic']:.2f} ms")
    del ref, static, dynamic
    torch.cuda.empty_cache()
    return rows


def table(rows: list[dict], dtype: str, device: str) -> str:
    lines = [f"End-to-end latency, {dtype}, {device} (median ms per forward; x = vs float SDPA)", "",
             "| model | batch | float SDPA (ms) | qflash static (ms) | qflash dynamic (ms) | static x | dynamic x |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['float']:.2f} | {r['static']:.2f} | {r['dynamic']:.2f} | "
                     f"{r['static'] / r['float']:.2f} | {r['dynamic'] / r['float']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64, 256])
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    ap.add_argument("--recipe", choices=["per_tensor", "default", "qflash"], default="per_tensor")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--check-batch", type=int, default=32)
    ap.add_argument("--calib-batch", type=int, default=32)
    ap.add_argument("--calib-batches", type=int, default=4)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_vit.py needs a CUDA device", file=sys.stderr)
        return 2
    try:
        import timm
    except ImportError:
        print("gpu_vit.py needs timm (pip install timm); no weights are downloaded", file=sys.stderr)
        return 2
    from intsoftmax import Recipe

    recipe = {"per_tensor": Recipe.per_tensor(), "default": Recipe.default(), "qflash": Recipe.qflash()}[args.recipe]
    device = torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, timm {timm.__version__}, {device}, {args.dtype}, recipe {args.recipe}",
          flush=True)
    rows = []
    for name in args.models:
        print(f"\n== {name}", flush=True)
        rows += check_model(name, args, recipe, lambda s: print(s, flush=True))
    print("\n" + table(rows, args.dtype, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
