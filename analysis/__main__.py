"""Main job (interim): the SQNR table of the built-in recipes on workloads A1-A7."""
from __future__ import annotations

import numpy as np

from intsoftmax import Recipe, float_attention, sqnr_db
from intsoftmax.workloads import WORKLOADS, qkv


def main() -> None:
    recipes = {"qflash": Recipe.qflash(), "default": Recipe.default()}
    print("SQNR (dB) vs float64 attention, per-tensor INT8, seed 0")
    print(f"{'dist':9s} {'wl':3s} " + " ".join(f"{n:>8s}" for n in recipes) + "  int8-ceiling")
    for dist in ("uniform", "gaussian"):
        for w in WORKLOADS:
            q, k, v = qkv(w, dist, seed=0)
            ref = float_attention(q, k, v)
            cols = [sqnr_db(ref, r.attention(q, k, v)) for r in recipes.values()]
            ceil = sqnr_db(ref, Recipe.default().quantized_reference(q, k, v))
            print(f"{dist:9s} {w:3s} " + " ".join(f"{c:8.2f}" for c in cols) + f"  {ceil:8.2f}")


if __name__ == "__main__":
    main()
