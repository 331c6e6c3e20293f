#!/usr/bin/env bash
# one-off: the session's last GPU call (deleted after it): suite, the V-early A/B (kept only if faster), benchmark
export PYTHONPATH=$PWD
scripts/gpu_suite.sh all > $OUT/suite.log 2>&1; tail -1 $OUT/suite.log
scripts/ab_v_early.sh > $OUT/ab.log 2>&1; cat $OUT/ab.log | awk '{print $1, $2, $3, $4, $5}'
keep=$(python3 - <<'PY'
import re
def t(f):
    return {tuple(l.split()[:3]): float(l.split()[4]) for l in open(f) if l.startswith("A") and " us " in l}
b, a = t("/tmp/before.txt"), t("/tmp/after.txt")
r = [a[k] / b[k] for k in a if k in b]
print("keep" if r and sum(r) / len(r) < 0.995 else "revert", round(sum(r) / max(len(r), 1), 4))
PY
)
echo "v-early: $keep"
case $keep in revert*) cp scripts/kernel_before_v_early.py qflash/kernel.py ;; esac
python3 -m qflash.benchmark --json $OUT/performance.json --commit "$1" > $OUT/bench.log 2>&1; echo "bench rc $?"
tail -22 $OUT/bench.log | cut -c1-250
