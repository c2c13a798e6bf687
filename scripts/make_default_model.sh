#!/usr/bin/env bash
# The recipe of the bundled default model (python/autogaze_ext/assets/default_model), as run on
# the project's 2-core CPU. Data: every clip of $DATA (the three clips of shared/data/videos plus
# vtest.avi, Megamind.avi and tree.avi from the Debian package opencv-doc); the last 20 % of every
# video is held out (the trainer's "time" split) and used by the evaluation.
#   DATA=/path/to/videos RUNS=/path/to/runs bash scripts/make_default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?folder of training videos}
RUNS=${RUNS:-runs}
mkdir -p "$RUNS"

# 1. the small MAE reconstruction task (for evaluation under MAEReconstruction)
python scripts/pretrain_mae.py "$DATA"/* --out "$RUNS/mae_small" --steps 600 --frames 8 --batch 2

# 2. NTP on greedy-oracle Paint labels (ratio 0.3), release architecture, from scratch
python -m autogaze_ext.train configs/train_paint_ntp.toml "data.paths=[\"$DATA\"]" \
  data.max_frames=800 data.batch_size=1 algorithm.label_ratio=0.3 run.steps=900 \
  run.val_interval=150 "run.out=$RUNS/ntp"

# 3. GRPO on the Paint reward from the NTP checkpoint
python -m autogaze_ext.train configs/default_model_grpo.toml \
  "model.init=$RUNS/ntp/checkpoint_latest" "data.paths=[\"$DATA\"]" "run.out=$RUNS/grpo"
