"""Pre-train a MAEReconstruction task on random multi-scale gaze (the task's own training).

    python scripts/pretrain_mae.py VIDEO... --out DIR [--steps 400] [--frames 8] [--batch 2]
        [--lr 1e-3] [--train-fraction 0.8] [--seed 0]

Frames are decoded once and preprocessed like the gaze model's input (224², release processor);
every step draws random windows of ``--frames`` frames from the first ``--train-fraction`` of each
video (the rest is held out for evaluation) and random gaze with ratios in [0.05, 0.5] per frame.
Writes DIR (``save_pretrained``) and DIR/metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import autogaze_ext as ag
from autogaze_ext.preprocess import preprocess
from autogaze_ext.tasks import MAEConfig, MAEReconstruction


def load_frames(paths, fraction):
    videos = []
    for path in paths:
        frames = ag.read_video(path)
        keep = max(1, int(len(frames) * fraction))
        # squashed to 224² like the model sees it after its own resize (and as the tasks need)
        videos.append(preprocess(frames[:keep], size=(224, 224)))
        print(f"{path}: {keep} of {len(frames)} frames for training", flush=True)
    return videos


def windows(videos, batch, frames, gen):
    picks = []
    for _ in range(batch):
        v = videos[int(torch.randint(len(videos), (1,), generator=gen))]
        start = int(torch.randint(max(1, v.shape[0] - frames + 1), (1,), generator=gen))
        clip = v[start:start + frames]
        if clip.shape[0] < frames:
            clip = torch.cat([clip, clip[-1:].expand(frames - clip.shape[0], *clip.shape[1:])])
        picks.append(clip)
    return torch.stack(picks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-fraction", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    videos = load_frames(args.videos, args.train_fraction)
    task = MAEReconstruction(MAEConfig.small())
    opt = torch.optim.AdamW(task.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "metrics.jsonl", "w")
    start = time.time()
    for step in range(args.steps):
        clip = windows(videos, args.batch, args.frames, gen)
        loss = task.pretrain_loss(clip, generator=gen, frames="all")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 1.0)
        opt.step()
        sched.step()
        row = {"step": step + 1, "loss": float(loss.detach()), "lr": sched.get_last_lr()[0],
               "seconds": round(time.time() - start, 1)}
        log.write(json.dumps(row) + "\n")
        log.flush()
        if step % 20 == 0 or step + 1 == args.steps:
            print(row, flush=True)
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            task.save_pretrained(args.out)
    task.save_pretrained(args.out)


if __name__ == "__main__":
    main()
