#!/usr/bin/env bash
# Executed instructions per pipe, registers, occupancy and issue activity of the fused kernel
# (Nsight Compute, one launch per recipe of scripts/gpu_tune.py, A2 at batch 256, the API's
# launch configuration). On the GPU machine: scripts/ncu_profile.sh default fast
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
M=gpu__time_duration.sum,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active
M=$M,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum
for pipe in alu fmaheavy fmalite lsu uniform xu tensor; do M=$M,smsp__inst_executed_pipe_$pipe.sum; done
for name in "$@"; do
  echo "=== $name"
  ncu --clock-control none --kernel-name regex:_qflash_fwd --launch-skip 2 --launch-count 1 --metrics "$M" \
      python3 scripts/gpu_tune.py --recipes "$name" --workloads A2 --configs 64/64/4/3/128 2>&1 \
    | grep -E "gpu__|launch__|sm__|smsp__"
done
