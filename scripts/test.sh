#!/usr/bin/env bash
# The test command: set up ./.venv, then run the whole suite on the CPU.
# Triton kernels run in the Triton interpreter (TRITON_INTERPRET=1), where int8 tl.dot is exact.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export TRITON_INTERPRET=1 HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
exec .venv/bin/python -m pytest -q "$@"
