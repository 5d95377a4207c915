#!/usr/bin/env bash
# Train the base demo generator (photo rendering) from scratch: the options of the shipped run.
# Usage: bash demo_runs/train_base.sh [KIMG]   (default 500; DATA_DIR and OUTDIR override; one thread)
# Run it detached:  setsid nohup bash demo_runs/train_base.sh > /work/demo_runs/base.log 2>&1 &
# To continue a run instead: pstyle train --resume <its run dir> (demo_runs/README.md).
set -euo pipefail
KIMG=${1:-500}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
DATA_DIR=${DATA_DIR:-/work/demo_data}
cd "$REPO"
exec env OMP_NUM_THREADS=1 PYTHONPATH="$REPO" "$PY" -m pstyle train --data "$DATA_DIR/portraits_photo64.zip" \
    --cfg auto --fmaps 0.015625 --cmax 32 --zdim 64 --map 2 --mirror --kimg "$KIMG" --tick 2 --snap 5 \
    --grid 8x8 --metrics "${METRICS:-proxyfid2k_full}" --workers 0 --device cpu --seed 0 --desc base \
    --outdir "${OUTDIR:-/work/demo_runs/base}"
