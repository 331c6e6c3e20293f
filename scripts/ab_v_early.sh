#!/usr/bin/env bash
# one-off A/B of the one-tile V load (deleted after the session)
set -e
export PYTHONPATH=$PWD
T="python3 scripts/gpu_tune.py --workloads A7,A4 --recipes fast,default --configs 64/64/4/3/96 --sweep none"
$T 2>&1 | grep -E "^A[0-9] " > /tmp/after.txt
cp qflash/kernel.py /tmp/kernel_after.py
cp scripts/kernel_before_v_early.py qflash/kernel.py
$T 2>&1 | grep -E "^A[0-9] " > /tmp/before.txt
cp /tmp/kernel_after.py qflash/kernel.py
echo "before:"; cat /tmp/before.txt; echo "after:"; cat /tmp/after.txt
