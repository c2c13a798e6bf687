"""Does a gaze model's next-id distribution follow the content, or only an id prior?

    python scripts/gaze_signal.py MODEL VIDEO:START [VIDEO:START ...] [--frames 8] [--budget 53]

For each clip (``--frames`` frames from START), the greedy Paint oracle gazes ``--budget`` ids per
frame and records every candidate's gain at every slot. The model then scores the oracle's own
rollout (generation-consistent, ``training.policy.score_rollout``). Over the slots of frames
after the first, the script prints the expected gain of one draw, as a fraction of the slot's
best gain, under four distributions:

* the model's own distribution;
* its average over slots (the id prior alone);
* uniform over the allowed ids;
* the model's divided by its average (logit adjustment, τ = 0.5, 1, 1.5).

It also prints the gain of each distribution's argmax. Gains are Paint-loss decreases: a
negative gain means painting that cell would make the frame worse.
"""

from __future__ import annotations

import argparse

import torch

from autogaze_ext import AutoGaze
from autogaze_ext.preprocess import preprocess
from autogaze_ext.tasks import PaintReconstruction, greedy_oracle
from autogaze_ext.training.policy import score_rollout
from autogaze_ext.video import read_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("clips", nargs="+", metavar="VIDEO:START")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--budget", type=int, default=53, help="oracle ids per frame")
    args = parser.parse_args()
    model = AutoGaze.from_pretrained(args.model).float()
    task = PaintReconstruction.from_config(model.config)
    size = model.config.vision.input_img_size
    n = model.num_tokens
    probs, gains, allowed = [], [], []
    for item in args.clips:
        path, _, start = item.rpartition(":")
        frames = read_video(path, start=int(start), num_frames=args.frames)
        video = preprocess(frames, size=(size, size), config=model.processor)[None]
        oracle = greedy_oracle(task, video, args.budget, return_gains=True)
        with torch.no_grad():
            scored = score_rollout(model, video, oracle.ids, oracle.frame_offsets,
                                   return_distribution=True)
        frame = torch.repeat_interleave(torch.arange(video.shape[1]), oracle.frame_offsets.diff())
        later = frame > 0
        gain = oracle.gains.float()[later]
        probs.append(scored.log_dist[later, :n].exp())
        allowed.append(torch.isfinite(gain))
        gains.append(torch.where(torch.isfinite(gain), gain, torch.zeros_like(gain)))
    p, g, ok = torch.cat(probs), torch.cat(gains), torch.cat(allowed)
    best = g.amax(1).clamp(min=1e-9)
    prior = p.mean(0, keepdim=True)

    def report(name: str, dist: torch.Tensor) -> None:
        dist = dist * ok
        dist = dist / dist.sum(1, keepdim=True)
        expected = ((dist * g).sum(1) / best).mean().item()
        top = (g.gather(1, dist.argmax(1, keepdim=True)).squeeze(1) / best).mean().item()
        print(f"{name:<22} expected gain {expected:6.3f}   argmax gain {top:7.3f}")

    print(f"{p.shape[0]} slots of frames after the first")
    report("model", p)
    report("id prior (mean)", prior.expand_as(p))
    report("uniform", torch.ones_like(p))
    for tau in (0.5, 1.0, 1.5):
        report(f"model / prior^{tau}", p / prior.clamp(min=1e-9) ** tau)


if __name__ == "__main__":
    main()
