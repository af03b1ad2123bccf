#!/usr/bin/env bash
# One lent-GPU session (see docs/gan.md): train the shipped demo generator (tiny64) with
# `stylepath train-gan --local` on CUDA, export it, and time the paper256 preset.
# Needs: a CUDA machine with torch; the demo tiles at gpu/work/tiles
# (python scripts/tile_subset.py work/demo/tiles gpu/work/tiles --n 4096); wheels of packages
# the machine lacks in .whl (zarr, numcodecs, pydantic, ...). Results land in $OUT.
set -u
OUT=${OUT:-/tmp/stylepath-gpu}
TRAIN_S=${TRAIN_S:-280}   # seconds of demo-generator training
BENCH_S=${BENCH_S:-100}   # seconds of the paper256 timing run
mkdir -p "$OUT"
PY=${PY:-python3}
GPU=${GPU:-true}   # false: a dry run of this script on a CPU machine
WHEELS=${WHEELS:-.whl}  # folder of wheels to install first (none: skip)
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
SP="$PY -m tasks.cli"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"

DEMO=(--set workdir=gpu/work --set gan.use_gpu=$GPU --set gan.batch_size=64
      --set gan.total_kimg=100000 --set gan.tick_kimg=20 --set gan.metric_ticks=5
      --set gan.sample_ticks=5 --set gan.seed=0)

# 1. Smoke test of the whole path on CUDA (train, checkpoint, samples, export): seconds.
mkdir -p gpu/smoke && ln -sfn ../work/tiles gpu/smoke/tiles
$SP train-gan configs/demo.yaml --local --set workdir=gpu/smoke --set gan.use_gpu=$GPU \
  --set gan.batch_size=64 --set gan.total_kimg=0.512 --set gan.tick_kimg=0.256 \
  --set gan.metric_ticks=1 || { echo "SMOKE FAILED"; exit 1; }

# 2. The demo generator: trains until stopped (resumable; the last tick's checkpoint counts).
echo "== demo generator: ${TRAIN_S}s"
timeout -s INT "$TRAIN_S" $SP train-gan configs/demo.yaml --local "${DEMO[@]}" 2>&1 \
  | tee "$OUT/train_log.txt"
$SP export-gan configs/demo.yaml "${DEMO[@]}" --half "$OUT/demo_tiny64"
ls gpu/work/gan/samples | tail -1 | xargs -I{} cp gpu/work/gan/samples/{} "$OUT/samples_last.png"

# 3. paper256 timing (resized demo tiles; sec/kimg from the ticks after the first).
echo "== paper256: ${BENCH_S}s"
mkdir -p gpu/p256 && ln -sfn ../work/tiles gpu/p256/tiles
timeout -s INT "$BENCH_S" $SP train-gan configs/demo.yaml --local --set workdir=gpu/p256 \
  --set gan.use_gpu=$GPU --set gan.preset=paper256 --set gan.resize_tiles=true \
  --set gan.batch_size=32 --set gan.r1_gamma=1 --set gan.tick_kimg=2 --set gan.total_kimg=1000 \
  --set gan.metric_ticks=1000 --set gan.sample_ticks=1000 --set gan.metric_images=64 \
  --set gan.guard_d_loss=1000 2>&1 \
  | tee "$OUT/paper256_log.txt"
nvidia-smi --query-gpu=memory.used --format=csv,noheader || true
echo "== done"
