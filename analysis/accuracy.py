"""Accuracy of patched models on real data: the tiny ViT and Swin-style models trained on
scikit-learn's 8x8 digits (``scripts/train_digits.py``, ``checkpoints/``), held-out top-1 in float
and with every attention replaced by the integer golden model (``qflash.patch``), for
``Recipe.qflash()`` and ``Recipe.default()``, with calibrated (static) and measured (dynamic)
INT8 ranges.

    python -m analysis.accuracy          # the full table, as markdown

Static ranges: :func:`qflash.calibrate` on the first ``CALIB_IMAGES`` training images (for the
recipe with input transforms it also folds their statistics into the projections first).
Dynamic ranges are measured per evaluation batch of ``EVAL_BATCH`` images (per-tensor ranges
depend on the batch, exactly as on the GPU).
"""
from __future__ import annotations

import copy
import pathlib
import time

import torch

import qflash
from intsoftmax import ChannelBalance, KeyOffset, Recipe, ValueOffset, sqnr_db
from intsoftmax.granularity import PerHead
from qflash.nn import tiny

CHECKPOINTS = pathlib.Path(__file__).resolve().parents[1] / "checkpoints"
ARCHS = {"vit": "ViT (4 blocks, 17 tokens)", "swin": "Swin (2+2 blocks, 4x4 windows, shifted)"}
CALIB_IMAGES, CALIB_BATCH, EVAL_BATCH = 256, 64, 150
TARGET_POINTS = 0.5


def recipes(quick: bool) -> dict[str, Recipe]:
    # default: the transforms (static: folded into the projections), Q's ranges per call
    out = {"qflash": Recipe.qflash(), "default": Recipe.default()}
    if not quick:  # does per-head INT8 recover what per-tensor loses? do the exact input transforms help?
        out["per_tensor"] = Recipe.per_tensor()
        out["per_tensor, per-head Q/K/V"] = Recipe.per_tensor().replace(
            q_granularity=PerHead(), k_granularity=PerHead(), v_granularity=PerHead())
        out["per_tensor + transforms (static: folded)"] = Recipe.per_tensor().replace(
            transforms=(KeyOffset(), ChannelBalance(), ValueOffset()))
    return out


def load(arch: str):
    path = CHECKPOINTS / f"digits_{arch}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python scripts/train_digits.py` to train it (CPU, minutes)")
    return tiny.load(path)


@torch.no_grad()
def logits(model, x) -> torch.Tensor:
    """Held-out logits, evaluated in batches of ``EVAL_BATCH``."""
    return torch.cat([model(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]).double()


def study(quick: bool = False) -> list[dict]:
    """Rows of the accuracy table: ``model``, ``arch``, ``recipe`` ('float', 'qflash', 'default', ...),
    ``scales`` ('float', 'static' or 'dynamic'), ``top1`` (held-out, %), ``delta`` (points vs
    float), ``errors`` and ``n`` (misclassified / held-out images), ``agree`` (% of images
    predicted as in float), ``sqnr_db`` (logits vs float) and ``seconds``.
    ``quick``: static ranges only, and no per-head row."""
    x_tr, _, x_te, y_te = tiny.digits()
    calib = [x_tr[i:i + CALIB_BATCH] for i in range(0, CALIB_IMAGES, CALIB_BATCH)]
    rows = []
    for arch, label in ARCHS.items():
        model, _ = load(arch)
        ref = logits(model, x_te)
        base = 100.0 * float((ref.argmax(-1) == y_te).double().mean())

        def row(recipe, scales, out, start):
            err = int((out.argmax(-1) != y_te).sum())
            top1 = 100.0 * (len(y_te) - err) / len(y_te)
            return dict(model=label, arch=arch, recipe=recipe, scales=scales, top1=top1,
                        delta=top1 - base, errors=err, n=len(y_te),
                        agree=100.0 * float((out.argmax(-1) == ref.argmax(-1)).double().mean()),
                        sqnr_db=sqnr_db(ref.numpy(), out.numpy()), seconds=time.perf_counter() - start)

        rows.append(row("float", "float", ref, time.perf_counter()))
        for name, recipe in recipes(quick).items():
            for scales in (("static",) if quick else ("static", "dynamic")):
                start = time.perf_counter()
                m = copy.deepcopy(model)
                qflash.patch(m, recipe=recipe, backend="golden")
                if scales == "static":
                    qflash.calibrate(m, calib)
                rows.append(row(name, scales, logits(m, x_te), start))
    return rows


def markdown(rows: list[dict]) -> str:
    """The table as markdown, with the 0.5-point target checked for ``Recipe.default()``."""
    lines = ["| model | attention | INT8 ranges | held-out top-1 (%) | vs float (points) | errors | "
             "same prediction as float (%) | logits SQNR vs float (dB) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        flt = r["recipe"] == "float"
        lines.append(f"| {r['model']} | {r['recipe']} | {r['scales']} | {r['top1']:.2f} | "
                     f"{'' if flt else format(r['delta'], '+.2f')} | {r['errors']}/{r['n']} | "
                     f"{'' if flt else format(r['agree'], '.1f')} | {'' if flt else format(r['sqnr_db'], '.1f')} |")
    gate = [r for r in rows if r["recipe"] == "default"]
    worst = min(r["delta"] for r in gate) if gate else float("nan")
    ok = bool(gate) and worst >= -TARGET_POINTS
    lines += ["", f"Target: `Recipe.default()` loses at most {TARGET_POINTS} points against float: "
                  f"{'met' if ok else 'NOT met'} (worst {worst:+.2f} points)."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(study(quick=False)))
