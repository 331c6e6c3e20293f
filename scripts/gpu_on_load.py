"""Where static ranges should be quantized on load: ``qflash.attention`` with static ranges at
small batches (graph time: the call captured in a CUDA graph, which quantizes on load only with
one row block per slice; eager and host time: the call as made), with the on-load threshold (``qflash.api.ON_LOAD_PROGRAMS_PER_SM``) at several
values, GPU time (graph replay), eager and host time per call, beside the int8 call and SDPA
(same run). Development tool: ``python3 scripts/gpu_on_load.py`` on the GPU machine."""
from __future__ import annotations

import argparse
import sys

import intsoftmax as ism
from qflash import api, benchmark

ROWS = [("A1", 1), ("A2", 1), ("A3", 1), ("A1", 8), ("A2", 8), ("A3", 8), ("A2", 32), ("A2", 256)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--per-sm", default="0,1,4", help="values of ON_LOAD_PROGRAMS_PER_SM to compare")
    p.add_argument("--rows", default=",".join(f"{w}:{b}" for w, b in ROWS))
    a = p.parse_args(argv)
    rows = [(w, int(b)) for w, b in (x.split(":") for x in a.rows.split(","))]
    lines = []
    for per_sm in map(int, a.per_sm.split(",")):
        api.ON_LOAD_PROGRAMS_PER_SM = per_sm
        for w, b in rows:
            row = benchmark.measure_row(w, b, recipes={"per_tensor": ism.Recipe.per_tensor()}, log=lambda s: None)
            r = row["recipes"]["per_tensor"]
            lines.append(f"{per_sm:6d} {w} {b:4d} sdpa {row['sdpa_graph_us']:6.1f}/{row['sdpa_eager_us']:6.1f}/"
                         f"{row['sdpa_host_us']:6.1f}  int8 {r['int8_graph_us']:6.1f}/{r['int8_eager_us']:6.1f}/"
                         f"{r['int8_host_us']:6.1f}  static {r['static_graph_us']:6.1f}/{r['static_eager_us']:6.1f}/"
                         f"{r['static_host_us']:6.1f}")
            print(lines[-1], flush=True)
    print("\nper_sm row batch: graph/eager/host us (SDPA, int8, static)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
