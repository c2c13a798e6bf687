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

# v2 = the v1 weights (autogaze_ext-paint-ntp-v1, see git history of the model card) after two
# on-policy NTP stages. Both use oracle labels at six budgets, soft labels (the oracle's gain of
# every candidate, tau 0.05), and half of the steps on-policy (the model's own greedy gaze
# relabelled with the oracle's gains at every state it visits); 8-frame clips, bf16 autocast.
V1=${V1:-$repo/python/autogaze_ext/assets/default_model}

# 1a. from v1, lr 5e-4 on a 3000-step schedule, stopped at step 650 (where the run was stopped)
python -m autogaze_ext.train "$repo/configs/default_model_ntp.toml" run.out=runs/dagger8 \
  "model.init=$V1" data.clip_len=8 algorithm.soft_label_weight=1.0 \
  algorithm.soft_label_temperature=0.05 algorithm.rollout_fraction=0.5 optim.lr=5e-4 \
  run.val_interval=200 --until 650

# 1b. lr 4e-4, 3000 steps; the task-loss head weighted 30x, and half of the on-policy rollouts
#     stop on a sampled requirement in [0.02, 0.2], so the head learns where its own stops land
source "$repo/scripts/onpolicy_args.sh"  # ONPOLICY: the settings 1b, 1c and gpu_train.sh share
python -m autogaze_ext.train "$repo/configs/default_model_ntp.toml" run.out=runs/dagger8b \
  model.init=runs/dagger8/checkpoint_latest "${ONPOLICY[@]}" data.synthetic_seed=12 \
  algorithm.rollout_fraction=0.5 optim.lr=4e-4 run.val_interval=200

# (A head-only calibration stage, configs/default_model_head.toml, was tried on top of 1b and
#  made the requirement stops worse on val_videos; see docs/evaluation.md. It is not part of v2.)

# v3 = v2 after one more on-policy stage:
# 1c. from the v2 weights (1b's float32 checkpoint), lr 2e-4 on a 3000-step schedule, three
#     quarters of the steps on-policy, fresh synthetic clips; the best validation loss (ratio
#     0.2) was at step 1750, where the run is stopped
python -m autogaze_ext.train "$repo/configs/default_model_ntp.toml" run.out=runs/dagger8c \
  model.init=runs/dagger8b/checkpoint_latest "${ONPOLICY[@]}" data.synthetic_seed=13 \
  algorithm.rollout_fraction=0.75 optim.lr=2e-4 run.val_interval=250 --until 1750
FINAL=runs/dagger8c/checkpoint_latest

# (Tried on top of 1c and not used, docs/evaluation.md: a full-batch refit of the gaze readout,
#  python -m autogaze_ext.training.refit readout ... --batches 150: patches needed 73.9 -> 89;
#  and a closed-form refit of the task-loss head, refit head configs/default_model_head.toml
#  --batches 100: last-slot Spearman 0.64 -> 0.61, and at R = 0.1 frames within ±30 % of R
#  48 % -> 18 %.)
# (Also tried and not used: a stage 1d from the bundled v3 weights, lr 1.5e-4 on 2500 steps,
#  the rest as 1c with data.synthetic_seed=14: validation loss 0.0873 -> 0.0858 at its best
#  (step 1750), but patches needed 74.1 -> 74.0 and last-slot Spearman 0.65 -> 0.57.)
# (And a stage from v3 with data.freeze_fraction=0.3, lr 1.5e-4 on 1900 steps, data.synthetic_seed=16:
#  at R = 0.1, frames within ±30 % 47.8 % -> 42 %, frozen frames' tokens 16.8 % -> 20.7 % of N.)
# (And GRPO on the Paint reward from v3, configs/default_model_grpo.toml, 300 steps, 26 min: the
#  trainer's validation loss at ratio 0.2 fell 0.0873 -> 0.0804 and patches needed 74.1 -> 71.7,
#  but the greedy gaze got worse at the other budgets (loss at ratio 0.3 0.083 -> 0.116) and the
#  head's last-slot Spearman fell to 0.48: see docs/evaluation.md.)

# (And, in the sixth session, head steps that also train the last decoder layer
#  (configs/default_model_tail.toml) or every parameter under a KL anchor, and an on-policy stage
#  with the expected-regret term (algorithm.regret_weight=3, 3000 steps): at R = 0.1 with the
#  head's stops, frames within ±30 % 11 %, 14 % and 37 % (v3 50 %); patches needed 73.8 for the
#  regret stage (v3 74.1). None shipped: docs/evaluation.md.)
# (And, in the seventh session, a per-scale prior on v3's gaze logits folded into lm_head:
#  python -m autogaze_ext.training.refit scale-prior configs/default_model_ntp.toml
#  model.init=<v3> data.synthetic_fraction=0 --offsets 0,-2,0,0 --batches 20 --holdout 5, the
#  offsets chosen on 3 windows of each training clip (patches needed there 122 -> 114). On the
#  validation split patches needed fell 74.1 -> 67.0, but the loss rose at ratios 0.05, 0.1 and
#  0.3, the bundled defaults took 60.9 ids a frame instead of 58.0 for the same loss, and the
#  head's last-slot Spearman fell to 0.48 (0.55 after refit head). Not shipped: docs/evaluation.md.)
# (And, in the eighth session, on-policy stages from that prior model (refit scale-prior ...
#  --out runs/v3prior), as stage 1c with lr 1e-4 and float32:
#  python -m autogaze_ext.train "$repo/configs/default_model_ntp.toml" run.out=runs/stage_e \
#    model.init=runs/v3prior "${ONPOLICY[@]}" data.synthetic_seed=17 \
#    algorithm.rollout_fraction=0.75 optim.lr=1e-4 run.steps=2000 run.bf16_cpu=false --until 500
#  and the same with data.synthetic_fraction=0 (real clips only), run.steps=1200, --until 600.
#  Patches needed on the validation split: 75.9 and 84.2 (the prior alone 67.0, v3 74.1): the
#  on-policy labels undo the prior, and real clips alone are too few. Not shipped.)

# 2. export: bf16 weights, inference defaults: a task-loss requirement of 0.07 that each frame
#    meets by its measured Paint loss (stop_by = paint; the head's own stops miss it too often:
#    docs/evaluation.md), under a budget cap of 0.75·N per frame
python "$repo/scripts/export_default_model.py" "$FINAL" \
  --name autogaze_ext-paint-v3 --ratio "${RATIO:-0.75}" --requirement "${REQUIREMENT:-0.07}" \
  --stop-by "${STOP_BY:-paint}" \
  --meta stage=ntp-on-policy "steps=v1 + 650 + 3000 + 1750" \
  "data=5 training clips + synthetic clips over 164 still images (MODEL_CARD.md)"
