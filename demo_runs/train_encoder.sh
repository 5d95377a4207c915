#!/usr/bin/env bash
# The encoder shipped as `demo-encoder` (issue #13): `pstyle train-encoder` for the shipped `demo` base on its own
# renders (60 kimg), then a photo phase (45 kimg) on the first 5000 images of the photo set, unpacked flat.
# Usage: bash demo_runs/train_encoder.sh [KIMG] [PHOTO_KIMG]   (DATA_DIR, OUTDIR, NUM_PHOTOS override;
#        about 45 minutes on one idle thread, 90 on a loaded machine)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
DATA_DIR=${DATA_DIR:-/work/demo_data}
OUTDIR=${OUTDIR:-$REPO/demo_runs/encoder}
PHOTOS="$DATA_DIR/photo_flat"
cd "$REPO"
export PYTHONPATH="$REPO"
if [ ! -d "$PHOTOS" ]; then
    mkdir -p "$PHOTOS.tmp"
    "$PY" - "$DATA_DIR/portraits_photo64.zip" "$PHOTOS.tmp" "${NUM_PHOTOS:-5000}" <<'PYEOF'
import sys, zipfile
from pathlib import Path
src, dest, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
with zipfile.ZipFile(src) as z:
    names = sorted(n for n in z.namelist() if n.endswith('.png'))[:count]
    for n in names:
        (dest / Path(n).name).write_bytes(z.read(n))
PYEOF
    mv "$PHOTOS.tmp" "$PHOTOS"
fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" -m pstyle train-encoder --network demo --kimg "${1:-60}" \
    --photos "$PHOTOS" --photo-kimg "${2:-45}" --outdir "$OUTDIR" --desc demo --device cpu --tick 2 --quiet
