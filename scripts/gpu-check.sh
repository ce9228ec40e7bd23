#!/usr/bin/env bash
# One GPU check in at most ~8 minutes (issue 16): the device tests, the cost model on CUDA, and one
# real Table 1 cell on the full WordNet noun closure at reduced epochs (RQ and HRQ, 2 seeds
# trained as one stack), writing its table. Everything it prints also lands in $OUT (or
# results/gpu-check/) for the note.
#
#   bash scripts/gpu-check.sh                 # on a GPU machine, from the repo root
#   DEVICE=cpu DATASET=wordnet_mammal bash scripts/gpu-check.sh   # the same steps on a CPU (rehearsal)
#
# Each step is time-boxed (30 + 90 + 180 + 180 s), so the whole check ends within 8 minutes and
# says where it stopped. Rehearsed on 2 CPU cores (2026-12-02): machine, device tests and cost
# model pass; the Table 1 cell trains both tokenizer stacks and is stopped by its time box in the
# paper-size T5 (1 epoch + beam search on CPU). Calibrate the cell's box on the first GPU run.
#
# WordNet: the cell reads the WordNet 3.0 dict files from $WORDNET_DICT (default
# data/raw/wordnet-dict, else the system's /usr/share/wordnet). Copy them there (only the
# data.*, index.* and *.exc files, ~27 MB) on a machine without apt access to wordnet-base.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
DATASET=${DATASET:-wordnet}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUTDIR=${OUT:-results/gpu-check}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu-check.log"
: > "$LOG"
export MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
WORDNET_DICT=${WORDNET_DICT:-data/raw/wordnet-dict}
[ -d "$WORDNET_DICT" ] || WORDNET_DICT=/usr/share/wordnet
status=0
step() {  # step <seconds> <title> <command...>: time-boxed, its output to the console and the log
  local limit=$1 title=$2; shift 2
  echo "=== $title (limit ${limit}s) $(date -u +%H:%M:%S)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $title: exit $rc after $((SECONDS - t0))s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
}

step 30 "machine" bash -c "uptime; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo 'no nvidia-smi';
  $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"\")'"
step 90 "device tests" "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_devices.py
# eager steps: compiling the four tokenizer runs would take most of this step's minutes
step 180 "cost model" "$PY" benchmarks/cost.py --device "$DEVICE" --quick --eager --json "$OUTDIR/cost.json"
# The cell: results/gpu_check/tables/table1.md (preset gpu_check: k=4, s=256, h=32, seeds 0-1
# stacked, 3 tokenizer epochs, 1 seq2seq epoch).
step 180 "Table 1 cell, full $DATASET closure" "$PY" -m snakemake results/gpu_check/tables/table1.md --cores all \
  --config preset=gpu_check device="$DEVICE" "hierarchy={datasets: [$DATASET]}" \
  "datasets={wordnet: {dict_dir: $WORDNET_DICT}, wordnet_mammal: {dict_dir: $WORDNET_DICT}}"
cat results/gpu_check/tables/table1.md 2>/dev/null | tee -a "$LOG"
cp results/gpu_check/tables/table1.md "$OUTDIR/" 2>/dev/null
exit $status
