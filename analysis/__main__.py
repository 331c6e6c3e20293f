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
            (q8, sq), (k8, sk), (v8, sv) = Recipe.default().quantize_inputs(q, k, v)
            ceil = sqnr_db(ref, float_attention(q8 * np.float64(sq), k8 * np.float64(sk), v8 * np.float64(sv)))
            print(f"{dist:9s} {w:3s} " + " ".join(f"{c:8.2f}" for c in cols) + f"  {ceil:8.2f}")


if __name__ == "__main__":
    main()
