#!/usr/bin/env bash
# The two synthetic portrait sets of the demo networks (issue #12), bit-exact from seed 0:
# photo images 0..9999 (the base's training set) and toon images 0..4999 (the same faces, toon rendering).
# Usage: bash demo_runs/make_data.sh            (DATA_DIR, NUM_PHOTO, NUM_TOON override; ~20 minutes on one thread)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
DATA_DIR=${DATA_DIR:-/work/demo_data}
cd "$REPO"
export PYTHONPATH="$REPO"
"$PY" -m pstyle dataset --synthetic portraits --style photo --seed 0 --max-images "${NUM_PHOTO:-10000}" \
    --resolution 64 --dest "$DATA_DIR/portraits_photo64.zip"
"$PY" -m pstyle dataset --synthetic portraits --style toon --seed 0 --max-images "${NUM_TOON:-5000}" \
    --resolution 64 --dest "$DATA_DIR/portraits_toon64.zip"
