#!/usr/bin/env bash
# The GPU suite, for the lent H200 (torch, triton and numpy are already there): every kernel
# test on CUDA tensors (the transforms' torch twins and the patched models' kernel backend
# included), then the GPU-only checks (full-size workloads bit for bit, CUDA-graph
# replay, torch.compile). Serially the whole suite takes ~9 minutes (mostly Triton compiling),
# next to the device's 10-minute limit per command, so it runs on 8 pytest-xdist workers where
# xdist is installed (it is on the lent H200), and can run in two halves: `scripts/gpu_suite.sh 1`,
# then `... 2` (no argument, or `all`: both). Further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
FIRST=(tests/test_kernel_exp.py tests/test_kernel_golden.py tests/test_kernel_split.py tests/test_intfa.py tests/test_unfused.py)
SECOND=(tests/test_api.py tests/test_registry.py tests/test_transforms.py tests/test_nn.py tests/test_gpu.py)
part=all
case "${1:-}" in 1 | 2 | all) part=$1; shift ;; esac
case $part in
  1) files=("${FIRST[@]}") ;;
  2) files=("${SECOND[@]}") ;;
  *) files=("${FIRST[@]}" "${SECOND[@]}") ;;
esac
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())'
workers=()
if python3 -c 'import xdist' 2>/dev/null; then workers=(-n 8); fi
python3 -m pytest -q -p no:cacheprovider "${workers[@]}" "${files[@]}" "$@"
