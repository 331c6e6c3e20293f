#!/usr/bin/env bash
# Create ./.venv (if needed) and install the project with everything the tests and the
# report need. torch is installed first and pinned (2.13.0, the local CPU build), so no
# later requirement can pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==2.13.0"
# this machine's pins beside the project's own (lower-bound) requirements: the CPU torch build
# stays, triton matches it, and numpy stays below 2.4 (triton 3.6's interpreter, how CI runs
# the kernel, calls int() on 1-element arrays, which numpy 2.4 rejects)
.venv/bin/python -m pip install -q -e ".[kernel,test,analysis]" "torch==2.13.0" "triton==3.6.0" "numpy<2.4"
