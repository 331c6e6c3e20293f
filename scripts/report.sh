#!/usr/bin/env bash
# The main job: set up ./.venv, then render the analysis report (CPU, golden models).
# Extra arguments go to `python -m analysis` (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m analysis "$@"
