#!/usr/bin/env bash
# The recipe of the bundled default model (python/autogaze_ext/assets/default_model), as run on
# the project's 2-core CPU. Every stage is resumable: rerun the same line with run.resume=true.
#
# Data (only what ../shared/data/README.md allows for training and model selection):
#   train_videos/  example_input.mp4, bigbuckbunny.mp4 (shared/data/videos) and vtest.avi,
#                  Megamind.avi, tree.avi (Debian opencv-doc)
#   val_videos/    bikes.mp4, motion.mov, kphotoalbum_demo.avi (shared/data/videos): whole clips
#                  that no training step sees; used for validation and model selection only
#   still_images/  scripts/collect_still_images.py (Debian opencv-doc, plasma-workspace-wallpapers,
#                  gnome-backgrounds; PyPI scikit-image): backgrounds and objects of the synthetic
#                  clips (autogaze_ext.synthetic), 75 % of all training clips
#
#   WORK=/path/to/workdir bash scripts/make_default_model.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
WORK=${WORK:?a work folder (data and runs go there)}
SHARED=${SHARED:-$repo/../shared}
OPENCV=/usr/share/doc/opencv-doc/examples/data
mkdir -p "$WORK/train_videos" "$WORK/val_videos" "$WORK/runs"
cd "$WORK"
ln -sf "$SHARED"/data/videos/{example_input.mp4,bigbuckbunny.mp4} train_videos/
ln -sf "$OPENCV"/{vtest.avi,Megamind.avi,tree.avi} train_videos/
ln -sf "$SHARED"/data/videos/{bikes.mp4,motion.mov,kphotoalbum_demo.avi} val_videos/
[ -d still_images ] || python "$repo/scripts/collect_still_images.py" still_images

# 1. NTP from the v1 weights: oracle labels at six budgets, soft labels (the oracle's gain of
#    every candidate), half of the steps on-policy (the model's own greedy gaze relabelled with
#    the oracle's gains at every state it visits), 8-frame clips.
python -m autogaze_ext.train "$repo/configs/default_model_ntp.toml" run.out=runs/default_ntp \
  "model.init=$repo/python/autogaze_ext/assets/default_model" \
  algorithm.soft_label_weight=1.0 algorithm.soft_label_temperature=0.05 \
  algorithm.rollout_fraction=0.5 data.clip_len=8 optim.lr=5e-4 run.val_interval=200

# 2. task-loss head calibrated on the model's own rollouts (head only), 16-frame clips
python -m autogaze_ext.train "$repo/configs/default_model_head.toml" run.out=runs/default_head \
  model.init=runs/default_ntp/checkpoint_latest

# 3. export: bf16 weights, inference defaults (the requirement chosen on val_videos, see
#    docs/evaluation.md)
python "$repo/scripts/export_default_model.py" runs/default_head/checkpoint_latest \
  --name autogaze_ext-paint-v2 --ratio "${RATIO:-0.75}" --requirement "${REQUIREMENT:?from the evaluation}"
