#!/usr/bin/env bash
# Create .venv/ at the repo root with the pinned dependencies and hrq installed editable.
# Usage: bash scripts/setup.sh        (PYTHON=python3.11 to choose the interpreter)
# Prints one line per package as pip resolves and installs it (a fresh install takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
step() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
if [ ! -x .venv/bin/python ]; then
  step "1/4 creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
else
  step "1/4 .venv exists ($(.venv/bin/python --version 2>&1))"
fi
step "2/4 upgrading pip"
.venv/bin/python -m pip install --quiet --upgrade pip
# torch is pinned exactly (constraints.txt): never let a dependency pull another build.
step "3/4 installing hrq and its pinned dependencies (torch==2.13.0 is the largest, ~200 MB)"
.venv/bin/python -m pip install --progress-bar off -c constraints.txt -e '.[dev,bench,slurm]' 2>&1 \
  | grep --line-buffered -E '^(Collecting|Downloading|Installing collected|Successfully|ERROR|error)' \
  | sed -u -E 's/^Installing collected packages: (.{0,100}).*/Installing collected packages: \1 .../' || {
    status=${PIPESTATUS[0]}; [ "$status" = 0 ] || { echo "pip install failed (exit $status)" >&2; exit "$status"; }; }
step "4/4 checking the install"
.venv/bin/python - <<'PY'
import torch, geoopt, hrq
print(f"hrq {hrq.__version__} ready: torch {torch.__version__}, geoopt {geoopt.__version__}, "
      f"cuda available: {torch.cuda.is_available()}")
PY
