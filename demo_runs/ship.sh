#!/usr/bin/env bash
# Ship the demo networks: G_ema and D of the base and toon snapshots as fp16 safetensors (no training G),
# and optionally the encoder of the base (train_encoder.sh's encoder.safetensors, its weights in fp16), into
# models/demo/ (DEST overrides), and print their sha256 for models/demo.py and docs/demo_networks.md.
# Usage: bash demo_runs/ship.sh BASE_SNAPSHOT.pt TOON_SNAPSHOT.pt [ENCODER.safetensors]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
DEST=${DEST:-$REPO/models/demo}
cd "$REPO"
export PYTHONPATH="$REPO"
"$PY" -m pstyle convert "$1" "$DEST/demo.safetensors" --skip-g --fp16
"$PY" -m pstyle convert "$2" "$DEST/demo-toon.safetensors" --skip-g --fp16
SHIPPED=("$DEST/demo.safetensors" "$DEST/demo-toon.safetensors")
if [ $# -ge 3 ]; then
    "$PY" -c 'import sys; from pstyle.projectors.encoder import save_encoder_fp16; save_encoder_fp16(sys.argv[1], sys.argv[2])' \
        "$3" "$DEST/demo-encoder.safetensors"
    SHIPPED+=("$DEST/demo-encoder.safetensors")
fi
sha256sum "${SHIPPED[@]}"
