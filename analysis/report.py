"""Runs the studies and renders ``results.md`` with its figures; the command line of ``python -m analysis``.

Every number is computed by the run that writes it (nothing is cached), and every section
and figure names the command and commit that produced it.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import pathlib
import platform
import sys
import time
from collections.abc import Callable

from . import accumulation, exp_error, granularity, latency, long_rows, pareto, robustness, transforms, workload_table
from .progress import Progress, quiet
from .provenance import REPO, Provenance


@dataclasses.dataclass(frozen=True)
class Study:
    """A section of the report: how to compute it, draw it and write it."""

    name: str  # command-line name
    title: str
    intro: str
    compute: Callable  # (quick, progress) -> result
    markdown: Callable  # result -> str
    figures: Callable | None = None  # (result, figure_dir, note) -> list of written paths


def _plots():
    """:mod:`analysis.plots`, imported when a figure is drawn (matplotlib is the analysis extra)."""
    try:
        return importlib.import_module("analysis.plots")
    except ImportError as err:
        raise ImportError("the report's figures need matplotlib: pip install 'intsoftmax[analysis]'") from err


def _exp_figures(result, fig_dir, note):
    return _plots().exp_errors(result, fig_dir / "exp_relative_error.png", fig_dir / "exp_absolute_error.png", note)


def _one(name, filename):
    return lambda result, fig_dir, note: [getattr(_plots(), name)(result, fig_dir / filename, note)]


STUDIES = [
    Study("exp", "Exp approximations",
          "Each exp strategy's golden model on every input of its integer domain, against the exact "
          "`one * 2^-x` and its stated bound `rel * exact + abs` (what `error_bound()` returns). "
          "\"ops / element in a recipe\" adds the shared pipeline (`Recipe.op_count()`). Raw-unit strategies "
          "(QFlash's exp2, the exact reference) are planned for per-tensor INT8 inputs of amplitude `a` at head "
          "dim 64; QFlash's is also shown at `a = 0.5`, where its range reduction breaks down.",
          exp_error.compute, exp_error.markdown, _exp_figures),
    Study("workloads", "SQNR on workloads A1-A7",
          "Each cell is `sqnr_db(float_attention(q, k, v), recipe.attention(q, k, v))` on one draw "
          "`intsoftmax.workloads.qkv(workload, distribution, seed=0)`. The INT8 ceiling is float attention on "
          "the dequantized per-tensor INT8 inputs (`Recipe.quantized_reference`): what the input quantization "
          "alone allows. A recipe can land a few hundredths of a dB above it when its errors happen to cancel "
          "quantization errors.",
          workload_table.compute, workload_table.markdown, _one("workloads", "workloads.png")),
    Study("accumulation", "Accumulation rules against sequence length",
          "`Recipe.per_tensor()` with each accumulation rule, on growing prefixes of one long sequence. Naive "
          "accumulation multiplies by the integer rescale factor without releasing its scale, so its sums grow "
          "by a factor `one = 2^15` per rescale; it runs with `check_limits=False`, so the golden model computes "
          "until it raises `IntegerOverflowError`. The worst-case input is the staircase of "
          "`tests/test_accumulation.py`; its first overflowing N is found by search and compared with "
          "`Recipe.max_seq_len()`. Two-pass rounds every key's P against the final row max, while scale release "
          "sums the keys seen before the max moved at a finer resolution and rounds their sum once per rescale, "
          "so at long N it can be the more accurate of the two (the gap shrinks as `p_bits` grows).",
          accumulation.compute, accumulation.markdown, _one("accumulation", "accumulation.png")),
    Study("granularity", "Quantization granularity",
          "Per-tensor, per-head, per-token and per-block INT8 scales for Q, K and V, `Recipe.per_tensor()` otherwise, on inputs "
          "whose heads span 2^-2 .. 2^2 and whose tokens vary by 2^U[-2, 2] (A2's shape). K and V must share one "
          "scale across keys (integer comparability, docs/algorithms.md §7); the Recipe rejects the other "
          "combinations when it is built.",
          granularity.compute, granularity.markdown, _one("granularity", "granularity.png")),
    Study("robustness", "Robustness to input amplitude",
          "SQNR on A2 with U[-a, a] inputs for a = 2^-4 .. 2^7, every recipe of the workload table, beside the "
          "INT8 ceiling. Large amplitudes make attention nearly one-hot and the INT8 logits coarse, so every "
          "recipe and the ceiling fall together. Small amplitudes make attention nearly uniform, which exposes "
          "an exp's relative error (6 % for the shift-linear line) that one-hot attention hides; QFlash's raw-unit "
          "exp additionally loses its range reduction there and collapses (docs/algorithms.md §9).",
          robustness.compute, robustness.markdown, _one("robustness", "robustness.png")),
    Study("pareto", "Cost against accuracy, and `select`",
          "Integer ops per score element (`Recipe.op_count().total`) against SQNR for the catalog of "
          "`intsoftmax.select` (every integer exp strategy x P widths 7, 8, 11 x scale release, lazy rescale, "
          "two-pass; plus the paper's recipe), on A2 with seed 0. The op count does not depend on the P width or "
          "the rule, so each cost level is a column of points; the front keeps the best of each column that beats "
          "every cheaper one. `select` answers for the named data only: the cheapest recipe on U[-4, 4] may "
          "fail at other amplitudes (see the robustness study).",
          pareto.compute, pareto.markdown, _one("pareto", "pareto.png")),
    Study("transforms", "Exact input transforms",
          "Key offset, value offset and Q/K channel balance (`intsoftmax.transforms`, docs/algorithms.md §11): "
          "rewrites of the float inputs that leave attention unchanged in real arithmetic and shrink what INT8 "
          "must cover, alone and combined, with `Recipe.per_tensor()` on A2's shape. The ceilings are float "
          "attention on the dequantized INT8 inputs, without and with all three transforms.",
          transforms.compute, transforms.markdown, _one("transforms", "transforms.png")),
    Study("long_rows", "Long rows: SQNR against N, and INT-FlashAttention's design",
          "128 queries against the first N keys of one sequence (2 heads, D = 128), seed 0: the integer recipes "
          "against `Recipe.int_flashattention()`, INT-FlashAttention's design as a baseline (per-token int8 Q and K, "
          "a float32 online softmax, 7-bit P; docs/algorithms.md §12), beside float attention on per-tensor and on "
          "per-token INT8 inputs. `per_tensor` stops at its 8196 keys; `long_context` is its 11-bit P with an int64 "
          "accumulator (§4) and a degree-2 exp. A 7-bit P loses resolution as each key's share of the row shrinks, whatever the "
          "softmax's arithmetic.",
          long_rows.compute, long_rows.markdown, _one("long_rows", "long_rows.png")),
    Study("latency", "GPU latency",
          "The qflash kernel against PyTorch SDPA (fp16) through `qflash.benchmark.measure`, on a CUDA device "
          "only.",
          latency.compute, latency.markdown),
]
ACCURACY = "accuracy"
ACCURACY_TITLE = "ViT accuracy on handwritten digits"
NAMES = [s.name for s in STUDIES] + [ACCURACY]


def accuracy_section(quick: bool) -> str:
    """The ViT-accuracy study of ``analysis/accuracy.py`` if it exists, else a note saying so."""
    try:
        study = importlib.import_module(f"{__package__}.accuracy")  # written separately; optional until it lands
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.accuracy":
            raise  # the module exists but one of its own imports is missing: a real error
        return "Not available yet: `analysis/accuracy.py` (the ViT-accuracy study) is not in this checkout."
    return study.markdown(study.study(quick))


def render(names: list[str], quick: bool, out: pathlib.Path, provenance: Provenance, show_progress: bool = True,
           log=sys.stderr) -> pathlib.Path:
    """Run the named studies and write ``out/results.md`` and ``out/figures/*.png``; returns the path."""
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown studies {unknown}; choose from {NAMES}")
    progress = Progress if show_progress else quiet
    fig_dir = out / "figures"
    note = provenance.figure_note()
    stamp = provenance.markdown()
    started = time.perf_counter()
    sections = []
    number = 0
    for study in STUDIES:
        if study.name not in names:
            continue
        number += 1
        t0 = time.perf_counter()
        result = study.compute(quick, progress)
        paths = study.figures(result, fig_dir, note) if study.figures else []
        body = study.markdown(result)
        images = "\n\n".join(f"![{study.title}: {p.stem}](figures/{p.name})" for p in paths)
        took = time.perf_counter() - t0
        log.write(f"[{study.name}] done in {took:.1f} s\n")
        sections.append(f"## {number}. {study.title}\n\n{study.intro}\n\n{stamp} ({took:.1f} s)\n\n{body}"
                        + (f"\n\n{images}" if images else ""))
    if ACCURACY in names:
        number += 1
        t0 = time.perf_counter()
        body = accuracy_section(quick)
        took = time.perf_counter() - t0
        sections.append(f"## {number}. {ACCURACY_TITLE}\n\n{stamp} ({took:.1f} s)\n\n{body}")
    total = time.perf_counter() - started
    mode = "quick mode (CI-sized)" if quick else "full run"
    header = (f"# Analysis results: error, SQNR and cost of the integer softmax recipes\n\n"
              f"Produced by `{provenance.command}` at commit `{provenance.revision}`: {mode}, {total:.0f} s on "
              f"{platform.machine() or 'a'} CPU through the golden models (`Recipe.attention`). Nothing is cached: "
              "every number and figure below was computed by that run, and each section repeats the command and "
              "commit. Regenerate with `./scripts/report.sh` (full run) or `python -m analysis --quick`.\n\n"
              "SQNR is `intsoftmax.sqnr_db` against float64 attention (`intsoftmax.float_attention`) on the "
              "unquantized inputs; seeds are fixed, so a re-run gives the same numbers.\n")
    text = header + "\n" + "\n\n".join(sections) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.md"
    path.write_text(text)
    log.write(f"wrote {path} ({len(sections)} sections) in {total:.1f} s\n")
    return path


def default_out(names: list[str], quick: bool) -> pathlib.Path:
    """docs/ for the full run of every study (the committed report); build/analysis/ for a quick or
    partial run, which must never replace the committed figures."""
    complete = not quick and set(names) == set(NAMES)
    return REPO / ("docs" if complete else "build/analysis")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Render the SQNR / error / cost analyses to results.md with PNG figures.",
        epilog="Studies: " + ", ".join(NAMES) + ". With none named, all run (the main job: ./scripts/report.sh).")
    parser.add_argument("studies", nargs="*", metavar="STUDY", help="run only these studies")
    parser.add_argument("--quick", action="store_true", help="CI-sized sweeps (under a minute on 2 cores)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="output folder for results.md and figures/ (default: docs/ for the full run of "
                             "every study, build/analysis/ otherwise, so a partial or quick run never "
                             "overwrites the committed report)")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    bad = [n for n in args.studies if n not in NAMES]
    if bad:
        parser.error(f"unknown study {bad[0]!r}; choose from {', '.join(NAMES)}")
    names = args.studies or NAMES
    out = default_out(names, args.quick) if args.out is None else args.out
    render(names, args.quick, out, Provenance.current(argv), show_progress=not args.no_progress)
    return 0
