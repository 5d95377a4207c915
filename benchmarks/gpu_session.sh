#!/usr/bin/env bash
# Every GPU check of this project in one run, most important first, for a short lease on a GPU machine
# (about 10 minutes on one H100/H200 class GPU). Results go to $OUT (default ./gpu_results): copy the
# figures into docs/benchmarks.md with the GPU's name, and fix whatever the CUDA tests find first.
#
#   bash benchmarks/gpu_session.sh                 # from the repository root
#
# It installs nothing from the network. The GPU machine needs torch, torchvision, click, numpy, scipy,
# pillow, tqdm, safetensors, ninja and pytest; the pure-Python packages usually missing there travel as
# wheels in .whl/ and are installed into /tmp/site here:
#   pip download --no-deps -d .whl lpips==0.1.4 torch-fidelity==0.4.0 clean-fid==0.1.35
# (lpips for the projection benchmark; the other two are the metrics benchmark's baselines).
# Each step has its own time limit and a failing step does not stop the later ones.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.txt, note the exit code.
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date +%T))"
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc" | tee -a "$OUT/summary.txt"
    tail -n 4 "$OUT/$name.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1
python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())' >>"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

# 1. The CUDA kernels against the reference ops (never run on a GPU before this script was written).
step cuda_tests 240 python3 -m pytest tests/torch_utils -m cuda -q -x -p no:cacheprovider
# 2. The networks' fp16 blocks, CUDA paths and fixture parity on the GPU.
step network_tests 120 python3 -m pytest tests/models/test_networks.py tests/models/test_checkpoint_parity.py -q -p no:cacheprovider
# 3. Generator speed: reference ops vs CUDA ops vs fp16, forward and forward+backward.
step bench_generator 120 python3 -m pstyle bench generator --res 256 --res 1024 --batch 1 --batch 4 --batch 16 --device cuda --json "$OUT/generator.json"
# 4. Training step at 256^2 (NVIDIA's paper256 comparison point: 21.6-24.2 s/kimg on one V100).
step bench_training 120 python3 benchmarks/bench_training.py --cfg paper256 --res 256 --device cuda
# 5. Projection: batch 1 vs 8 (target: batch 8 well under 8x batch 1), fp32 vs fp16.
step bench_projection 120 python3 benchmarks/bench_projection.py --device cuda --res 256,1024 --batch 1,8 --precision fp32,fp16 --steps 10 --out "$OUT/projection.json"
# 6. Metrics: feature extraction and FID against torch-fidelity and clean-fid, measured in the same run.
step bench_metrics 90 python3 benchmarks/bench_metrics.py --n 256 --device cuda
echo "done; results in $OUT"
