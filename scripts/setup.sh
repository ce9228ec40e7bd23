#!/usr/bin/env bash
# Create .venv/ at the repo root with the pinned dependencies and hrq installed editable.
# Usage: bash scripts/setup.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch is pinned exactly (constraints.txt): never let a dependency pull another build.
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev,bench,slurm]'
.venv/bin/python - <<'PY'
import torch, geoopt, hrq
print(f"hrq {hrq.__version__} ready: torch {torch.__version__}, geoopt {geoopt.__version__}, "
      f"cuda available: {torch.cuda.is_available()}")
PY
