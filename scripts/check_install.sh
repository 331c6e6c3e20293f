#!/usr/bin/env bash
# Installs the project without extras into a fresh venv (CPU torch first, as a user would) and
# checks that intsoftmax and qflash import and that qflash.attention answers on CPU tensors
# (the golden model) with no triton installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$VENV")"' EXIT
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q .
cd "$(dirname "$VENV")"  # away from the source tree: import the installed packages
"$VENV/bin/python" - <<'PY'
import importlib.util
import torch
import intsoftmax as ism
import qflash
assert importlib.util.find_spec("triton") is None, "triton should not be installed without the kernel extra"
q, k, v = (torch.randn(1, 2, 16, 32) for _ in range(3))
out = qflash.attention(q, k, v)
ref = torch.from_numpy(ism.Recipe.default().attention(q.numpy(), k.numpy(), v.numpy())).float()
assert out.shape == q.shape and torch.equal(out, ref), "CPU qflash.attention must equal the golden model"
print("install without extras: import intsoftmax, qflash and a CPU qflash.attention call work;", qflash.__file__)
PY
