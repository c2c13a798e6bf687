"""The training loop: single process or ``torchrun`` DDP, NTP or GRPO (spec §9.1, §9.7).

* Distributed: initialised from the torchrun env vars (NCCL on CUDA, gloo on CPU); the loss is
  computed inside a ``DistributedDataParallel``-wrapped module so gradients are all-reduced;
  accumulation micro-steps run under ``no_sync``. Per-rank seeds ``seed·(rank+1)``.
* bf16 autocast of the training passes on CUDA only; rollouts/labels run in float32.
* Rank 0 logs (a progress line, ``metrics.jsonl``, TensorBoard when installed) and writes
  ``checkpoint_latest/`` = ``save_pretrained`` (loadable by ``AutoGaze.from_pretrained``) +
  ``trainer_state.pt`` (optimizer, scheduler, step, data position) + ``rng_rank{r}.pt`` (python,
  numpy, torch, CUDA and rollout-generator RNG states of every rank).
* ``run.resume=true`` restores all of it, **including the gaze weights**: the official trainer's
  resume calls ``from_pretrained`` and discards the result, so its weights restart from the
  initialisation (spec §13 row 11); here the weights are loaded into the model before DDP.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import load_safetensors
from ..config import AutoGazeConfig
from ..model import AutoGaze
from ..tasks import PaintReconstruction
from .algorithms import (check_finite, grpo_loss_from_rollout, grpo_rollout, ntp_step,
                         rollout_labels, scheduled_temperature, task_outputs)
from .config import TrainConfig
from .data import ClipDataset, RankSampler
from .head import head_loss, head_rollout
from .labels import LabelStore
from .stream import TrainStream, batches

CHECKPOINT = "checkpoint_latest"


# ---- construction helpers ------------------------------------------------------------------
def build_model(cfg: TrainConfig) -> AutoGaze:
    """The gaze model: ``model.init`` (a checkpoint folder), else a fresh model of
    ``model.config`` (a config.json), else of ``AutoGazeConfig.build(**model.build)``."""
    if cfg.model.init:
        return AutoGaze.from_pretrained(cfg.model.init)
    if cfg.model.config:
        return AutoGaze(AutoGazeConfig.from_json_file(cfg.model.config))
    kwargs = dict(cfg.model.build)
    kwargs.setdefault("max_num_frames", cfg.data.clip_len)
    return AutoGaze(AutoGazeConfig.build(**kwargs))


def build_task(cfg: TrainConfig, model: AutoGaze, device: torch.device):
    """The task: PaintReconstruction or (duck-typed) MAEReconstruction."""
    kwargs = dict(cfg.task.kwargs)
    if cfg.task.name == "paint":
        return PaintReconstruction.from_config(model.config, **kwargs)
    from ..tasks.mae import MAEReconstruction  # written separately; optional

    if hasattr(MAEReconstruction, "from_config"):
        task = MAEReconstruction.from_config(model.config, **kwargs)
    else:
        task = MAEReconstruction(**kwargs)
    return task.to(device) if hasattr(task, "to") else task


def task_frame_size(task, model: AutoGaze) -> int:
    return int(getattr(task, "frame_size", max(model.scales)))


def lr_lambda(cfg: TrainConfig):
    """LR factor per optimizer step: linear 1→min_lr/lr, linear with warmup → 0, constant."""
    total, optim = cfg.run.steps, cfg.optim

    def factor(step: int) -> float:
        if optim.schedule == "constant":
            return 1.0
        if optim.schedule == "linear":
            return 1.0 + (optim.min_lr / optim.lr - 1.0) * min(step / total, 1.0)
        warm = int(total * optim.warmup_fraction)
        if step < warm:
            return step / max(1, warm)
        return max(0.0, (total - step) / max(1, total - warm))
    return factor


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(generator: torch.Generator | None) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def parameter_hash(model: nn.Module) -> str:
    h = hashlib.sha1()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class LossModule(nn.Module):
    """What DDP wraps: the model plus the loss of one micro-step (so DDP sees a forward)."""

    def __init__(self, model: AutoGaze, cfg: TrainConfig, reference: AutoGaze | None = None):
        super().__init__()
        self.model = model
        self.cfg = cfg
        # frozen copy of the initial model (the KL anchor of head steps); not a submodule, so
        # it is neither saved nor seen by DDP
        self.__dict__["reference"] = reference

    def forward(self, kind: str, payload: dict):
        algo = self.cfg.algorithm
        if kind == "ntp":
            return ntp_step(self.model, payload["batch"], payload["labels"], algo.scoring,
                            algo.optimize_task_loss_prediction, algo.soft_label_weight,
                            algo.soft_label_temperature, payload.get("hard_weight", 1.0),
                            algo.tlp_weight, algo.head_error, algo.head_error_floor,
                            algo.regret_weight)
        if kind == "head":
            return head_loss(self.model, payload, algo.tlp_weight, algo.head_error,
                             algo.head_error_floor, algo.anchor_kl, self.reference)
        return grpo_loss_from_rollout(self.model, payload, algo)


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512-BF16 or AMX); elsewhere torch emulates it."""
    cpu = torch.cpu
    return any(getattr(cpu, name, lambda: False)() for name in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


# ---- the trainer ---------------------------------------------------------------------------------
class Trainer:
    """Build everything from a ``TrainConfig`` and ``train()``."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self._init_distributed()
        run = cfg.run
        self.out = Path(run.out)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        seed_everything(run.seed)  # identical initial weights on every rank
        self.model = build_model(cfg).to(self.device).train()
        self.task = build_task(cfg, self.model, self.device)
        self.data = ClipDataset(cfg.data, self.model.processor,
                                task_frame_size(self.task, self.model))
        # only its position (draws consumed) is used: the stream maps draws to clips
        self.sampler = RankSampler(max(1, len(self.data.train)), run.seed, self.rank, self.world)
        self.labels = None
        if cfg.algorithm.name == "ntp":
            if not isinstance(self.task, PaintReconstruction):
                raise ValueError("algorithm ntp: oracle labels need task.name = 'paint'")
            folder = cfg.algorithm.label_cache or self.out / "labels"
            self.labels = LabelStore(folder, self.task, cfg.algorithm.label_ratio,
                                     cfg.algorithm.label_requirement, cfg.algorithm.label_k,
                                     soft=cfg.algorithm.soft_label_weight > 0)
        self.stream = TrainStream(cfg, self.data, self.rank, self.world, self.labels)
        self._batches = None  # the batch iterator, started at the sampler's position
        self.reference = None
        if cfg.algorithm.anchor_kl > 0:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        if cfg.algorithm.train_params != "all":
            decoder = self.model.gazing_model.gaze_decoder
            trained = [decoder.task_loss_prediction_head]
            if cfg.algorithm.train_params == "decoder_tail":
                trained += [decoder.model.layers[-1], decoder.model.norm]
            self.model.requires_grad_(False)
            for module in trained:
                module.requires_grad_(True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        task_params = [p for p in getattr(self.task, "parameters", lambda: [])()
                       if p.requires_grad and getattr(self.task, "trainable", False)]
        self.optimizer = build_optimizer(cfg, params + task_params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.generator = torch.Generator(device=self.device)
        self.step = 0
        seed_everything(run.seed * (self.rank + 1))
        self.generator.manual_seed(run.seed * (self.rank + 1) + 1)
        if run.resume:
            self._resume()
        self.module = LossModule(self.model, cfg, self.reference)
        self.ddp = None
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # every parameter is in every loss (the task-loss head at least as 0·mean), so DDP
            # needs no unused-parameter search
            self.ddp = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        self.writer = self._tensorboard()

    # ---- setup ------------------------------------------------------------------------------
    def _init_distributed(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        want = self.cfg.run.device
        if want == "auto":
            want = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(want)
        if self.device.type == "cpu":
            # Adam moments and small gradients underflow into denormals, which make CPU float
            # math ~15x slower; flushing them to zero costs nothing measurable in accuracy
            torch.set_flush_denormal(True)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend)

    def _tensorboard(self):
        if self.rank != 0:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    # ---- checkpoints -----------------------------------------------------------------------
    def save(self) -> Path:
        """Write ``checkpoint_latest/`` atomically (a temp folder renamed at the end)."""
        final, tmp = self.out / CHECKPOINT, self.out / (CHECKPOINT + ".tmp")
        self._barrier()
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            self.model.save_pretrained(tmp)
            torch.save({"optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "step": self.step,
                        "sampler": self.sampler.state_dict(), "world_size": self.world,
                        "config": self.cfg.to_dict()}, tmp / "trainer_state.pt")
        self._barrier()
        torch.save(rng_state(self.generator), tmp / f"rng_rank{self.rank}.pt")
        self._barrier()
        if self.rank == 0:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        self._barrier()
        return final

    def _resume(self) -> None:
        folder = self.out / CHECKPOINT
        if not (folder / "trainer_state.pt").is_file():
            if self.rank == 0:
                print(f"[autogaze-train] resume: no checkpoint in {folder}; starting fresh",
                      flush=True)
            return
        self.model.load_weights(load_safetensors(folder / "model.safetensors"))
        state = torch.load(folder / "trainer_state.pt", map_location=self.device,
                           weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.sampler.load_state_dict(state["sampler"])
        rng_file = folder / f"rng_rank{self.rank}.pt"
        if rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=False), self.generator)

    # ---- one optimizer step ----------------------------------------------------------------
    def _autocast(self):
        if self.device.type == "cuda" and self.cfg.run.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.device.type == "cpu" and self.cfg.run.bf16_cpu:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _next_batch(self) -> dict:
        size = self.cfg.data.batch_size
        if self._batches is None:
            self._batches = batches(self.stream, self.sampler.position // size,
                                    self.cfg.data.workers)
        batch = next(self._batches)
        self.sampler.position += size
        batch["video"] = batch["video"].to(self.device)
        batch["video_for_task"] = batch["video_for_task"].to(self.device)
        return batch

    def train_step(self) -> dict:
        cfg, accum = self.cfg, self.cfg.optim.grad_accum
        runner = self.ddp or self.module
        totals: dict = {}
        for micro in range(accum):
            batch = self._next_batch()
            sync = self.ddp is None or micro == accum - 1
            with (contextlib.nullcontext() if sync else self.ddp.no_sync()):
                if cfg.algorithm.name == "ntp":
                    payload = {"batch": batch, "labels": batch["labels"]}
                    rng = random.Random(cfg.run.seed * 1_000_003 + self.step * 64 + micro)
                    on_policy = rng.random() < cfg.algorithm.rollout_fraction
                    if on_policy:
                        algo = cfg.algorithm
                        requirements = [rng.uniform(algo.requirement_min, algo.requirement_max)
                                        if rng.random() < algo.rollout_requirement_fraction else None
                                        for _ in batch["ratios"]]
                        payload["labels"] = rollout_labels(self.model, self.task, batch,
                                                           batch["ratios"], requirements)
                        payload["hard_weight"] = 0.0
                    with self._autocast():
                        loss, metrics = runner("ntp", payload)
                    metrics["on_policy"] = float(on_policy)
                elif cfg.algorithm.name == "head":
                    rng = random.Random(cfg.run.seed * 1_000_003 + self.step)
                    rollout = head_rollout(self.model, self.task, batch, cfg.algorithm, rng)
                    with self._autocast():
                        loss, metrics = runner("head", rollout)
                else:
                    rng = random.Random(cfg.run.seed * 1_000_003 + self.step)  # same on all ranks
                    tau = scheduled_temperature(cfg.algorithm, self.step, cfg.run.steps)
                    rollout = grpo_rollout(self.model, self.task, batch, cfg.algorithm, tau, rng,
                                           self.generator)
                    with self._autocast():
                        loss, metrics = runner("grpo", rollout)
                check_finite(loss)
                (loss / accum).backward()
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value / accum
        if cfg.optim.grad_clip > 0:
            totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], cfg.optim.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        totals["lr"] = self.scheduler.get_last_lr()[0]
        return totals

    # ---- validation --------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Greedy gaze on this rank's share of the val windows: mean task loss and tokens per
        frame, averaged over all ranks (weighted by clips)."""
        algo, run = self.cfg.algorithm, self.cfg.run
        ratio = run.val_ratio or (algo.label_ratio if algo.name == "ntp" else algo.ratio)
        windows = self.data.val[self.rank::self.world]
        sums = torch.zeros(3, dtype=torch.float64)  # loss·clips, tokens, frames
        self.model.eval()
        for i in range(0, len(windows), self.cfg.data.batch_size):
            batch = self.data.batch(windows[i:i + self.cfg.data.batch_size])
            video = batch["video"].to(self.device)
            out = self.model(video, gazing_ratio=ratio, task_loss_requirement=run.val_requirement)
            losses, *_ = task_outputs(self.task, batch["video_for_task"].to(self.device),
                                      out["ids"], out["frame_offsets"])
            sums += torch.tensor([losses.float().mean(1).sum().item(), out["ids"].numel(),
                                  video.shape[0] * video.shape[1]], dtype=torch.float64)
        self.model.train()
        clips = torch.tensor([float(len(windows))], dtype=torch.float64)
        if self.world > 1:
            both = torch.cat((sums, clips)).to(self.device)
            dist.all_reduce(both)
            sums, clips = both[:3].cpu(), both[3:].cpu()
        if clips.item() == 0:
            return {}
        return {"val_task_loss": sums[0].item() / clips.item(),
                "val_tokens_per_frame": sums[1].item() / max(sums[2].item(), 1)}

    # ---- logging -------------------------------------------------------------------------------
    def log(self, metrics: dict, final: bool = False) -> None:
        if self.rank != 0:
            return
        record = {"step": self.step, "world_size": self.world, **metrics}
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, self.step)
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                         if k in ("loss", "ntp_loss", "soft_loss", "grpo_loss", "tlp_loss", "task_loss",
                                  "val_task_loss", "val_tokens_per_frame", "lr", "temperature"))
        line = f"step {self.step}/{self.cfg.run.steps} {shown}"
        if sys.stdout.isatty() and not final:
            print("\r" + line[:200].ljust(120), end="", flush=True)
        else:
            print(("\n" if sys.stdout.isatty() else "") + line, flush=True)

    def train(self, until: int | None = None, minutes: float | None = None) -> dict:
        """Run until ``run.steps`` optimizer steps (or stop and checkpoint at step ``until``, or
        at the first step that ends after ``minutes`` of wall time, as an interrupted run would);
        returns the last metrics."""
        run = self.cfg.run
        stop = run.steps if until is None else min(until, run.steps)
        deadline = None if minutes is None else time.monotonic() + 60.0 * minutes
        if self.rank == 0:
            print(f"[autogaze-train] {self.cfg.algorithm.name} world_size={self.world} "
                  f"device={self.device} train_windows={len(self.data.train)} "
                  f"val_windows={len(self.data.val)} start_step={self.step}", flush=True)
            if self.device.type == "cpu" and run.bf16_cpu and not native_cpu_bf16():
                print("[autogaze-train] warning: run.bf16_cpu on a CPU without AVX-512-BF16 or AMX: "
                      "bf16 is emulated there, several times slower than float32 "
                      "(run.bf16_cpu=false)", file=sys.stderr, flush=True)
        metrics: dict = {}
        if run.val_interval and self.step == 0 and self.data.val:
            self.log(self.validate())
        while self.step < stop:
            metrics = self.train_step()
            if run.val_interval and self.step % run.val_interval == 0 and self.data.val:
                metrics.update(self.validate())
            if self.step % run.log_interval == 0 or self.step == run.steps:
                self.log(metrics)
            if run.save_interval and self.step % run.save_interval == 0:
                self.save()
            if deadline is not None and self._past(deadline):
                if self.rank == 0:
                    print(f"[autogaze-train] {minutes:g} min of wall time reached at step "
                          f"{self.step}", flush=True)
                break
        self.save()
        digest = parameter_hash(self.model)
        (self.out / f"param_hash_rank{self.rank}.txt").write_text(digest + "\n")
        if self.rank == 0:
            print(f"[autogaze-train] done: step {self.step}, checkpoint "
                  f"{self.out / CHECKPOINT}, params sha1 {digest[:12]}", flush=True)
        if self.writer is not None:
            self.writer.close()
        return metrics

    def _past(self, deadline: float) -> bool:
        """Whether rank 0's clock has passed ``deadline`` (every rank gets rank 0's answer, so
        all ranks stop at the same step)."""
        flag = torch.tensor([float(time.monotonic() > deadline)], device=self.device)
        if self.world > 1:
            dist.broadcast(flag, 0)
        return bool(flag.item())

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
