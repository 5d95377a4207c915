#!/usr/bin/env bash
# Fine-tune the toon demo generator from the latest snapshot of the base (photo) run.
# NVIDIA's MetFaces recipe at our size: --resume <base network> --mirror --freezed (FreezeD), ADA.
# Usage: bash demo_runs/finetune_toon.sh [KIMG]     (default 40 kimg; pick 1800 / (the base's s/kimg) for ~30 min)
# OUTDIR and INIT_DIR override where the run and the copied snapshot go, DATA_DIR where the toon set is.
# Run it detached:  setsid nohup bash demo_runs/finetune_toon.sh > /work/demo_runs/toon.log 2>&1 &
set -euo pipefail
KIMG=${1:-40}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
DATA_DIR=${DATA_DIR:-/work/demo_data}
BASE_RUN=${BASE_RUN:-$(ls -d /work/demo_runs/base/*/ | sort | tail -1)}
SNAP=$(ls "$BASE_RUN"network-snapshot-*.pt | sort | tail -1)
# Copy the snapshot out of its run dir: a network-snapshot-*.pt beside its training-state-*.pt makes
# --resume CONTINUE the base run (photo data, no FreezeD) instead of fine-tuning from it.
INIT=${INIT_DIR:-/work/demo_runs}/toon_init_$(basename "$SNAP" .pt | sed 's/network-snapshot-/base/').pt
cp "$SNAP" "$INIT"
echo "fine-tuning from $SNAP (copied to $INIT)"
cd "$REPO"
exec env OMP_NUM_THREADS=1 PYTHONPATH="$REPO" "$PY" -m pstyle train \
    --data "$DATA_DIR/portraits_toon64.zip" --resume "$INIT" \
    --cfg auto --mirror --freezed 4 --ema 5 --kimg "$KIMG" --tick 2 --snap 5 --grid 8x8 \
    --workers 0 --device cpu --seed 0 --desc toon-ft --outdir "${OUTDIR:-/work/demo_runs/toon}"
