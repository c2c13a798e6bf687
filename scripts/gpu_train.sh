#!/usr/bin/env bash
# One training call on a lent GPU machine (no network, no PyAV: OpenCV decodes the clips there):
# the on-policy NTP stage of scripts/make_default_model.sh (stage 1c's settings), continued from
# the bundled model (or INIT) for MINUTES of wall time, then the bf16 export. Everything it writes
# is under $OUT: train.log, the run folder (checkpoints, metrics.jsonl) and export/.
#
#   bash scripts/gpu_train.sh --prepare   # here: gpu_data/ (the allowed clips + still images, ~30 MB)
#   device run: command "bash scripts/gpu_train.sh", carry ["gpu_data"], timeout_s 600
#   bash scripts/gpu_train.sh --dry-run   # here, on the CPU: the same path, 2 steps
#
# Only what shared/data/README.md allows for training and model selection goes into gpu_data/:
# train_videos/ (example_input, bigbuckbunny, opencv-doc's vtest, Megamind, tree), val_videos/
# (bikes, motion, kphotoalbum_demo: validation and model selection only) and still_images/.
# Knobs (environment): MINUTES (default 6), INIT, SEED (synthetic clips, default 15), LR (2e-4),
# STEPS (schedule length, default 3000), OUT, DATA, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
DATA=${DATA:-$repo/gpu_data}
python=${PYTHON:-$(command -v python3 || command -v python)}

if [[ "${1:-}" == "--prepare" ]]; then
  shared=${SHARED:-$repo/../shared}/data/videos
  opencv=/usr/share/doc/opencv-doc/examples/data
  for f in "$shared"/{example_input.mp4,bigbuckbunny.mp4,bikes.mp4,motion.mov,kphotoalbum_demo.avi} \
           "$opencv"/{vtest.avi,Megamind.avi,tree.avi}; do
    [[ -f $f ]] || { echo "gpu_train.sh --prepare: missing $f (opencv-doc: apt-get install opencv-doc)" >&2; exit 2; }
  done
  mkdir -p "$DATA/train_videos" "$DATA/val_videos"
  cp -L "$shared"/{example_input.mp4,bigbuckbunny.mp4} "$opencv"/{vtest.avi,Megamind.avi,tree.avi} \
    "$DATA/train_videos/"
  cp -L "$shared"/{bikes.mp4,motion.mov,kphotoalbum_demo.avi} "$DATA/val_videos/"
  [[ -d "$DATA/still_images" ]] || "$python" scripts/collect_still_images.py "$DATA/still_images"
  du -sh "$DATA"
  exit 0
fi

dry=0
case "${1:-}" in
  --dry-run) dry=1 ;;
  "") ;;
  *) echo "usage: bash scripts/gpu_train.sh [--prepare | --dry-run]" >&2; exit 2 ;;
esac
for d in train_videos val_videos still_images; do
  [[ -d "$DATA/$d" ]] || { echo "gpu_train.sh: $DATA/$d missing: run --prepare here and carry gpu_data" >&2; exit 2; }
done
OUT=${OUT:-$repo/gpu_train_out}
mkdir -p "$OUT"
INIT=${INIT:-$repo/python/autogaze_ext/assets/default_model}
start=$(date +%s)

if (( dry )); then
  extra=(run.device=cpu data.val_windows=1 data.max_frames=40)
  budget=(--until 2)
else
  # the package with its CUDA kernels, as scripts/gpu_check.sh builds it (no network)
  TORCH_CUDA_ARCH_LIST=9.0 AUTOGAZE_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=16 \
    "$python" -m pip install -q --no-build-isolation --no-deps --no-index \
    --config-settings=build-dir=/tmp/autogaze-build . > "$OUT/build.log" 2>&1 \
    || { tail -30 "$OUT/build.log"; exit 1; }
  extra=(run.device=cuda)
  budget=(--minutes "${MINUTES:-6}")
fi
echo "build and set-up: $(( $(date +%s) - start )) s"

# stage 1c's settings (scripts/make_default_model.sh), from INIT
source "$repo/scripts/onpolicy_args.sh"
cd "$DATA"
"$python" -m autogaze_ext.train "$repo/configs/default_model_ntp.toml" run.out="$OUT/run" \
  "model.init=$INIT" "${ONPOLICY[@]}" "data.synthetic_seed=${SEED:-15}" \
  algorithm.rollout_fraction=0.75 "optim.lr=${LR:-2e-4}" "run.steps=${STEPS:-3000}" \
  run.val_interval=250 "${extra[@]}" "${budget[@]}" 2>&1 | tee "$OUT/train.log"
"$python" "$repo/scripts/export_default_model.py" "$OUT/run/checkpoint_latest" \
  --name autogaze_ext-paint-gpu --ratio 0.3 --requirement none --out "$OUT/export" \
  --meta stage=ntp-on-policy-gpu "init=$INIT"
grep val_task_loss "$OUT/run/metrics.jsonl" | tail -5 || true
echo "total: $(( $(date +%s) - start )) s"
