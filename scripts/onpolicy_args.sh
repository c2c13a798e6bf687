# Sourced by scripts/make_default_model.sh (stages 1b and 1c) and scripts/gpu_train.sh: the
# on-policy NTP settings they share, as autogaze-train overrides. 8-frame clips; soft oracle
# labels (the oracle's gain of every candidate, tau 0.05); the task-loss head weighted 30x; half
# of the on-policy rollouts stop on a requirement drawn from [0.02, 0.2], so the head learns
# where its own stops land. Each stage adds its run folder, seed, on-policy share and lr.
ONPOLICY=(data.clip_len=8 algorithm.soft_label_weight=1.0 algorithm.soft_label_temperature=0.05
  algorithm.rollout_requirement_fraction=0.5 algorithm.tlp_weight=30
  algorithm.requirement_min=0.02 algorithm.requirement_max=0.2)
