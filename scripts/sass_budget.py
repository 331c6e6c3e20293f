"""Instruction budget of the fused kernel per score element and pipe, from its SASS (no GPU).

    python scripts/sass_budget.py                      # per_tensor and fast, A2 and A7 shapes
    python scripts/sass_budget.py --recipes fast --workloads A2 --dump /tmp/fast.sass
    python scripts/sass_budget.py --on-load            # float16 inputs quantized on load

Compiles ``_qflash_fwd`` for sm_90 exactly as :func:`qflash.kernel.launch` specialises it for the
API's launch configuration (CPU tensors stand in for the arguments; nothing runs), disassembles
it with the ``cuobjdump`` Triton ships, and classifies the instructions of each loop by the pipe
that issues them. A loop's count divided by the score elements one thread handles per iteration
is the static budget per element; ``ncu`` (``scripts/ncu_profile.sh``) gives the executed one.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

import intsoftmax as ism
from intsoftmax.workloads import workload_shape
from qflash import api
from qflash.benchmark import LLM_SHAPES
from qflash.kernel import launch
from qflash.spec import KernelSpec, MaskKind, OutKind
from qflash.table import NCOL

TARGET = GPUTarget("cuda", 90, 32)
PIPES = [  # first match wins
    ("tensor", r"^(IMMA|HMMA|IGMMA|HGMMA|QGMMA)"),
    ("fma (IMAD)", r"^(IMAD|IMUL|IDP)"),
    ("fma (fp32)", r"^(FFMA|FADD|FMUL)"),
    ("xu", r"^(MUFU|I2F\b|I2F\.|F2I|F2F|POPC|FLO|BREV|FRND)"),
    ("lsu", r"^(LD|ST|ATOM|RED|SHFL|LDSM|STSM|LDGSTS|UTMA|DEPBAR|LDGDEPBAR)"),
    ("uniform", r"^(U|R2UR|S2UR)"),
    ("control", r"^(BRA|BAR|EXIT|WARPSYNC|BSSY|BSYNC|NOP|WARPGROUP|MEMBAR|FENCE)"),
    ("alu", r"."),
]


def loop_labels(recipe, head_dim) -> list:
    """``(label, score elements per thread per iteration)`` of a two-pass kernel's loops in code
    order (64 x 64 tiles over 128 threads): the row-max pass's wide tiles where the kernel has
    them (:meth:`qflash.spec.KernelSpec.row_max_keys`), its full and 32-key tail tiles, then pass 2's."""
    wide = KernelSpec.build(recipe, head_dim, MaskKind.NONE, OutKind.FLOAT).row_max_keys(1)
    return ([(f"pass 1, {wide}-key tile", wide // 2)] if wide else []) + [
        ("pass 1, full tile", 32), ("pass 1, tail tile", 16), ("pass 2, full tile", 32), ("pass 2, tail tile", 16)]


RECIPES = {"per_tensor": ism.Recipe.per_tensor(), "fast": ism.Recipe.fast(),
           "old-default": ism.Recipe(exp=ism.PolyExp2(), accumulation=ism.ScaleRelease()), "qflash": ism.Recipe.qflash(),
           # a calibrated model's Recipe.default(): transforms folded, Q per token, K and V per head
           "default-folded": ism.Recipe.default().replace(transforms=()), "long_context": ism.Recipe.long_context()}


def compile_only(kernel, grid, *args, **options):
    """A ``launcher`` for :func:`qflash.kernel.launch` that compiles for sm_90 and runs nothing."""
    backend = make_backend(TARGET)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, spec, opts = binder(*args, **options)
    options, signature, constexprs, attrs = kernel._pack_args(backend, opts, bound, spec, opts)
    compile_only.last = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=TARGET,
                                       options=options.__dict__)


def compiled(recipe, shape, on_load=False):
    """The kernel for int8 inputs (V stored as the quantization launch stores it) or, ``on_load``,
    for float16 inputs with static per-tensor ranges (quantized on load)."""
    B, H, N, D = shape
    if on_load:
        q8, k8, v8 = (torch.zeros(shape, dtype=torch.float16) for _ in range(3))
        amax = (torch.ones(1, dtype=torch.float32),) * 3
    else:
        q8, k8 = torch.zeros(shape, dtype=torch.int8), torch.zeros(shape, dtype=torch.int8)
        v8 = torch.zeros((B, H, D, -(-N // 16) * 16), dtype=torch.int8)[..., :N].transpose(-1, -2)
        amax = None
    spec = KernelSpec.build(recipe, D, MaskKind.NONE, OutKind.FLOAT)
    launch(spec, q8, k8, v8, torch.zeros((1, 1, NCOL), dtype=torch.int32), torch.zeros(shape, dtype=torch.float16),
           lut=api._lut(recipe.exp, "cpu"), launcher=compile_only, amax=amax, **api._launch_config(spec))
    return compile_only.last


def sass(kernel) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    path = "/tmp/qflash_sass_budget.cubin"
    with open(path, "wb") as f:
        f.write(kernel.asm["cubin"])
    return subprocess.run([tool, "-sass", path], capture_output=True, text=True, check=True).stdout


def instructions(text):
    """``(address, opcode)`` of every instruction."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)", line)
        if m:
            out.append((int(m.group(1), 16), m.group(2)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default="per_tensor,fast")
    p.add_argument("--workloads", default="A2,A7")
    p.add_argument("--dump", help="also write the SASS here")
    p.add_argument("--on-load", action="store_true", help="float16 inputs quantized on load (static ranges)")
    a = p.parse_args(argv)
    for name in a.recipes.split(","):
        for w in a.workloads.split(","):
            shape = LLM_SHAPES[w] if w in LLM_SHAPES else workload_shape(w, 256)
            k = compiled(RECIPES[name], shape, a.on_load)
            text = sass(k)
            if a.dump:
                with open(a.dump, "w") as f:
                    f.write(text)
            ins = [(addr, op, line) for (addr, op), line in zip(instructions(text), _lines(text))]
            print(f"{name} {w} (D={shape[3]}, batch {shape[0]}): {len(ins)} instructions in the kernel")
            big = [(lo, hi) for lo, hi in _loops(ins) if sum(lo <= a <= hi for a, _, _ in ins) >= 40]
            # two-pass kernels: pass 1 full and tail tiles, then pass 2 full and tail tiles
            labels = loop_labels(RECIPES[name], shape[3]) if RECIPES[name].accumulation.two_pass else []
            labels = labels if len(labels) == len(big) else [("loop", 32)] * len(big)
            for (lo, hi), (label, per_thread) in zip(big, labels):
                mix = collections.Counter(_pipe(op) for addr, op, _ in ins if lo <= addr <= hi)
                n = sum(mix.values())
                print(f"  {label:18s} {n:4d} instructions, {n / per_thread:5.1f} per score element: "
                      + ", ".join(f"{k} {v / per_thread:.1f}" for k, v in mix.most_common()))
    return 0


def _lines(text):
    return [line for line in text.splitlines() if re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?[A-Z]", line)]


def _loops(ins):
    out = set()
    for addr, op, line in ins:
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)\s*;", line.split("BRA", 1)[1])
            if m and int(m.group(1), 16) <= addr:
                out.add((int(m.group(1), 16), addr))
    return sorted(out)


def _pipe(op):
    return next(name for name, pat in PIPES if re.match(pat, op))


if __name__ == "__main__":
    sys.exit(main())
