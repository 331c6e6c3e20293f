#!/usr/bin/env bash
# Profile the fused kernel with Nsight Compute on the GPU machine: one launch per named recipe
# (qflash.benchmark.COST_RECIPES), A2 at batch 256. Prints pipe utilisation, occupancy and stalls.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for name in "$@"; do
  echo "=== $name"
  ncu --clock-control none --kernel-name regex:_qflash_fwd --launch-skip 5 --launch-count 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats \
      --section LaunchStats --section SchedulerStats \
      python3 -m qflash.benchmark --once "$name" --workloads A2 --batches 256 2>&1 \
    | grep -vE '^\s*$|==PROF==|----' | grep -E 'Pipe|Issue|Occupancy|Registers|Stall|Warp Cycles|Throughput|Duration|Eligible|Executed Ipc|Shared Memory Config|Block Limit|Threads|Waves' | head -60
done
