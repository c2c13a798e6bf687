"""``AutoGaze``: the gaze model, official checkpoints, generation, scoring and streaming."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import budget as budgets
from .checkpoint import (load_matching, load_safetensors, resolve_checkpoint_dir,
                         save_safetensors)
from .config import AutoGazeConfig, check_stop_by
from .decoder import GazeDecoder
from .encoder import Connector, ShallowVideoConvNet
from .generation import (DecodeState, Sampling, decode_op, frame_capacity, gaze_frame,
                         new_state, selection_op)
from .graphs import GraphCache
from .layout import (GazeOutput, assemble, cut_tiles, from_mask, merge_tile_masks, tile_grid,
                     unpad)
from .preprocess import ProcessorConfig, preprocess
from .tasks.paint_stop import PaintStop


class GazingModel(nn.Module):
    """``gazing_model.*`` of the checkpoint: conv net, connector, decoder."""

    def __init__(self, config: AutoGazeConfig):
        super().__init__()
        vis, dec = config.vision, config.decoder
        self.vision_model = ShallowVideoConvNet(vis)
        self.connector = Connector(vis.num_tokens, dec.hidden_size)
        self.gaze_decoder = GazeDecoder(dec)


@dataclass
class StreamState:
    """Everything a stream carries between frames: decoder state and the conv cache."""
    decode: DecodeState
    conv_cache: list | None = None
    frames_seen: int = 0
    paint: PaintStop | None = None  # the measured stop's reconstruction (stop_by="paint")


@contextlib.contextmanager
def exact_float32(enabled: bool):
    """Turn TF32 off for convolutions and matmuls inside, as float32 exact mode requires."""
    if not enabled:
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class AutoGaze(nn.Module):
    """The AutoGaze gaze model (spec §1-§8), loading official checkpoints.

    Call it on a preprocessed video ``(B,T,3,H,W)`` to get the gaze (see ``forward``).
    Float32 (the default) is the exact mode; ``model.to(torch.bfloat16)`` is opt-in.
    ``stop_by`` (from the config, settable): under a task-loss requirement, a frame stops on the
    head's predicted loss (``"head"``, official) or on its measured Paint loss (``"paint"``).
    """

    def __init__(self, config: AutoGazeConfig, processor: ProcessorConfig | None = None):
        super().__init__()
        self.config = config
        self.processor = processor or ProcessorConfig.release()
        self.gazing_model = GazingModel(config)
        self.cuda_graphs = GraphCache()
        self.name_or_path = ""  # where the weights came from (set by from_pretrained)
        self.stop_by = config.task_loss_requirement_stop_by

    @property
    def stop_by(self) -> str:
        return self._stop_by

    @stop_by.setter
    def stop_by(self, value: str) -> None:
        self._stop_by = check_stop_by(value)

    # ---- checkpoints ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None, dtype=None) -> "AutoGaze":
        """Load an official-format folder (config.json, model.safetensors,
        preprocessor_config.json) or a Hugging Face hub id. Weights are upcast to float32
        unless ``dtype`` says otherwise."""
        folder = resolve_checkpoint_dir(path, required=("config.json", "model.safetensors"))
        config = AutoGazeConfig.from_json_file(folder / "config.json")
        proc_file = folder / "preprocessor_config.json"
        processor = ProcessorConfig.from_json_file(proc_file) if proc_file.is_file() else None
        model = cls(config, processor)
        model.load_weights(load_safetensors(folder / "model.safetensors"))
        model.name_or_path = str(path)
        return model.to(device=device, dtype=dtype or torch.float32).eval()

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Load a state dict with the official keys; every key and shape must match."""
        load_matching(self, state, "the config")

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write config.json, model.safetensors and preprocessor_config.json (official format)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / "config.json")
        save_safetensors(self.state_dict(), folder / "model.safetensors")
        self.processor.to_json_file(folder / "preprocessor_config.json")

    # ---- properties ---------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def scales(self) -> list[int]:
        return self.config.scales

    @property
    def device(self) -> torch.device:
        return self.gazing_model.connector.pos_embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.gazing_model.connector.pos_embed.dtype

    def preprocess(self, frames) -> torch.Tensor:
        """uint8 frames (T,H,W,3) or (B,T,H,W,3) → float video as the checkpoint's processor."""
        return preprocess(frames, config=self.processor)

    def preprocess_full(self, frames) -> torch.Tensor:
        """Like ``preprocess`` but keeping the full resolution (for tiling)."""
        frames = torch.as_tensor(frames)
        return preprocess(frames, size=tuple(frames.shape[-3:-1]), config=self.processor)

    # ---- vision tokens ------------------------------------------------------------------------
    def _check_video(self, video, name="video") -> torch.Tensor:
        if isinstance(video, dict):
            if "video" not in video:
                raise ValueError(f"{name}: a dict input must hold the key 'video'")
            video = video["video"]
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (B,T,3,H,W), got {type(video).__name__}")
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"{name} must have shape (B,T,3,H,W), got {tuple(video.shape)}")
        if not video.is_floating_point():
            raise TypeError(f"{name} must be a float tensor (preprocessed frames), got "
                            f"{video.dtype}; use model.preprocess(frames) for uint8 frames")
        if video.shape[0] == 0 or video.shape[1] == 0:
            raise ValueError(f"{name} has no frames: shape {tuple(video.shape)}")
        if min(video.shape[3:]) == 0:
            raise ValueError(f"{name} has empty frames: shape {tuple(video.shape)}")
        if video.device != self.device:
            raise ValueError(f"{name} is on {video.device} but the model is on {self.device}")
        if not bool(torch.isfinite(video).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return video.to(self.dtype).contiguous()

    def embed(self, video: torch.Tensor, conv_cache: list | None = None):
        """video (B,T,3,H,W) → vision tokens (B,T',P,D) and the conv cache (spec §4.1b-4.3)."""
        b, t, c, h, w = video.shape
        size = self.config.vision.input_img_size
        if (h, w) != (size, size):
            flat = F.interpolate(video.reshape(b * t, c, h, w).float(), size=(size, size),
                                 mode="bicubic", align_corners=False)
            video = flat.to(video.dtype).view(b, t, c, size, size)
        tokens, cache = self.gazing_model.vision_model(video, conv_cache)
        return self.gazing_model.connector(tokens), cache

    # ---- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, video, gazing_ratio=None, task_loss_requirement=None, target_scales=None,
                target_patch_size=None, do_sample=False, temperature=1.0, generator=None,
                official_batching=False, backend="auto", cuda_graph=False,
                candidates=None) -> GazeOutput:
        """Gaze a preprocessed video.

        video: (B,T,3,H,W) float (or ``{"video": video}``). gazing_ratio: float in (0,1] or a
        sequence of T floats (per-frame budgets ``max(1, trunc(ratio·N))``). task_loss_requirement:
        float or (B,T) tensor; a frame stops once the predicted loss is at most this. With neither
        given, the checkpoint's inference settings apply. target_scales/target_patch_size: gaze
        for a ViT of another resolution (tiles, spec §8.1). official_batching: reproduce the
        official coupled batching; by default each clip's gaze equals that of the clip alone.
        candidates: None (every id) or a (N,) bool tensor: the ids the decoder may pick (e.g.
        only the finest scale); a budget larger than the allowed count stops there.

        Returns a ``GazeOutput`` with the official padded fields (``gazing_pos`` (B,S),
        ``if_padded_gazing`` (B,S), ``num_gazing_each_frame`` (T,), ``gazing_mask`` list of
        (B,T,n_s)) and the padding-free ``ids`` (L,) and ``frame_offsets`` (B·T+1,).
        """
        video = self._check_video(video)
        sampling = budgets.check_sampling(do_sample, temperature, generator, backend, candidates,
                                          self.num_tokens)
        with exact_float32(self.dtype == torch.float32):
            if target_scales is not None or target_patch_size is not None:
                tiled = self._tiled(video, gazing_ratio, task_loss_requirement, target_scales,
                                    target_patch_size, sampling, official_batching)
                if tiled is not None:
                    return tiled
            return self._generate(video, gazing_ratio, task_loss_requirement, sampling,
                                  official_batching, cuda_graph)

    def _generate(self, video, gazing_ratio, task_loss_requirement, sampling, coupled,
                  cuda_graph=False):
        if cuda_graph and video.is_cuda and not sampling.do_sample and self.stop_by == "head":
            tokens, counts, requirement = self._generate_graphed(video, gazing_ratio,
                                                                 task_loss_requirement, sampling,
                                                                 coupled)
        else:
            tokens, counts, requirement = self.generate_frames(video, gazing_ratio,
                                                               task_loss_requirement, sampling,
                                                               coupled)
        eos = self.gazing_model.gaze_decoder.cfg.eos_token_id
        return self._output(assemble(tokens, counts, self.num_tokens, self.config.tokens_per_scale,
                                     eos), requirement)

    def generate_frames(self, video, gazing_ratio, task_loss_requirement, sampling: Sampling,
                        coupled: bool):
        """Raw generation: per frame, tokens (B,M_t) (EOS pads) and slot counts (B,), plus the
        (B,T) requirement or None. ``video`` must already be checked."""
        frame_budgets, requirement = self._budgets(video, gazing_ratio, task_loss_requirement,
                                                   sampling)
        tokens, counts = self._run_frames(video, frame_budgets, requirement, sampling, coupled)
        return tokens, counts, requirement

    def _budgets(self, video, gazing_ratio, task_loss_requirement, sampling: Sampling):
        """Per-frame budgets M_t and the (B,T) requirement or None of a generation call."""
        return budgets.resolve(self.config, gazing_ratio, task_loss_requirement, video.shape[0],
                               video.shape[1], video.device, sampling.generator)

    def _generate_graphed(self, video, gazing_ratio, task_loss_requirement, sampling, coupled):
        """``generate_frames`` through a cached whole-clip CUDA graph (greedy only)."""
        frame_budgets, requirement = self._budgets(video, gazing_ratio, task_loss_requirement,
                                                   sampling)
        key = (tuple(video.shape), video.dtype, video.device, tuple(frame_budgets),
               requirement is not None, coupled, sampling.backend,
               None if sampling.candidates is None else tuple(sampling.candidates.tolist()))

        def program(clip, req):
            return self._run_frames(clip, frame_budgets, req, sampling, coupled)

        tokens, counts = self.cuda_graphs.run(key, program, video, requirement,
                                              self.graph_tensors())
        return tokens, counts, requirement

    def graph_tensors(self) -> list[torch.Tensor]:
        """Every tensor a captured clip reads by address: the parameters and the buffers (such
        as the decoder's RoPE ``inv_freq``). CUDA graphs are keyed by their addresses."""
        return [*self.parameters(), *self.buffers()]

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        # graphs of weights that .to() moved or cast point at freed memory: never replay them
        self.cuda_graphs.keep_only(self.graph_tensors())
        return self

    def _run_frames(self, video, frame_budgets, requirement, sampling: Sampling, coupled: bool):
        """The clip program: embed, then every frame's generation; no host reads on CUDA."""
        vision, _ = self.embed(video)
        batch = vision.shape[0]
        decoder = self.gazing_model.gaze_decoder
        k = decoder.cfg.num_multi_token_pred
        capacity = sum(frame_capacity(vision.shape[2], m, k) for m in frame_budgets)
        state = new_state(decoder, batch, capacity)
        select = selection_op(sampling.backend, video.device)
        decode = decode_op(sampling.backend, decoder)
        measure = None
        if requirement is not None and self.stop_by == "paint":
            measure = PaintStop.for_model(self.config, batch, video.device)
        tokens, counts = [], []
        for t, budget in enumerate(frame_budgets):
            req = None if requirement is None else requirement[:, t]
            if measure is not None:
                measure.begin_frame(video[:, t])
            tok, n = gaze_frame(decoder, state, vision[:, t], budget, req, sampling, coupled,
                                early_exit=video.device.type == "cpu", select=select,
                                decode=decode, measure=measure)
            if measure is not None:
                measure.end_frame()
            tokens.append(tok)
            counts.append(n)
        return tokens, counts

    def _output(self, fields: dict, requirement) -> GazeOutput:
        fields.update(scales=list(self.scales), num_vision_tokens_each_frame=self.num_tokens,
                      scale_grids=[(math.isqrt(n),) * 2 for n in self.config.tokens_per_scale],
                      frame_sampling_rate=self.config.vision.temporal_patch_size,
                      has_task_loss_requirement=requirement is not None,
                      task_loss_requirement=requirement)
        return GazeOutput(fields)

    def _tiled(self, video, gazing_ratio, task_loss_requirement, target_scales, patch, sampling,
               coupled):
        if target_scales is None or patch is None:
            raise ValueError("target_scales and target_patch_size must be given together")
        target = [int(s) for s in target_scales]
        per_scale = self.config.tokens_per_scale
        if target == self.scales and [(s // patch) ** 2 for s in target] == per_scale:
            return None  # the model's own layout: no tiling (as officially)
        if len(target) != len(self.scales) or sorted(target) != target:
            raise ValueError(f"target_scales must be {len(self.scales)} ascending sizes, got "
                             f"{target_scales}")
        if any(s % patch for s in target) or patch <= 0:
            raise ValueError(f"target_scales {target} must be multiples of target_patch_size {patch}")
        b, t, _, h, w = video.shape
        if h != w or h != target[-1]:
            raise ValueError(f"video frames must be {target[-1]}x{target[-1]} (the largest target "
                             f"scale) for target_scales, got {h}x{w}")
        tile_g, full_g, tiles = tile_grid(per_scale, target, patch)
        clips = cut_tiles(video, tile_g[-1] * patch, tiles, tiles)
        if isinstance(task_loss_requirement, torch.Tensor) and task_loss_requirement.dim() == 2:
            task_loss_requirement = task_loss_requirement.repeat_interleave(tiles * tiles, 0)
        inner = self._generate(clips, gazing_ratio, task_loss_requirement, sampling, coupled)
        mask = merge_tile_masks(inner["gazing_mask"], b, tile_g, tiles, tiles, crop=full_g)
        requirement = inner["task_loss_requirement"]
        if requirement is not None:
            requirement = requirement[:: tiles * tiles]
        out = self._output(from_mask(mask, [g * g for g in full_g]), requirement)
        out["num_vision_tokens_each_frame"] = sum(g * g for g in full_g)
        out["scale_grids"] = [(g, g) for g in full_g]
        return out

    # ---- teacher-forced scoring ---------------------------------------------------------------
    def score(self, video, gazing_info) -> GazeOutput:
        """Teacher-forced pass over given gaze (spec §7): ``log_action_probs`` (B,S) =
        log(p + 1e-8) of each slot's id (pads scored as EOS) and ``task_loss_prediction`` (B,S),
        float32, aligned with ``gazing_info["gazing_pos"]``. Differentiable (for training)."""
        video = self._check_video(video)
        for key in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame"):
            if key not in gazing_info:
                raise ValueError(f"gazing_info lacks {key!r}")
        decoder = self.gazing_model.gaze_decoder
        cfg = decoder.cfg
        k, eos = cfg.num_multi_token_pred, cfg.eos_token_id
        counts = [int(c) for c in gazing_info["num_gazing_each_frame"]]
        with exact_float32(self.dtype == torch.float32):
            vision, _ = self.embed(video)
            b, frames, p, _ = vision.shape
            if len(counts) != frames:
                raise ValueError(f"gazing_info has {len(counts)} frames, the video {frames}")
            ids = unpad(gazing_info["gazing_pos"].to(video.device),
                        gazing_info["if_padded_gazing"].to(video.device), counts, self.num_tokens,
                        eos)
            pieces, visible, slot_index, slot_rank = [], [], [], []
            start = 0
            for t, n in enumerate(counts):
                frame_ids = ids[:, t, :n]
                pieces += [vision[:, t], decoder.embed(frame_ids).to(vision.dtype)]
                visible += [torch.ones(b, p, dtype=torch.bool, device=video.device),
                            frame_ids != eos]
                slot_index.append(start + p + torch.arange(n, device=video.device))
                slot_rank.append(torch.arange(n, device=video.device) % k)
                start += p + n
            x, vis_mask = torch.cat(pieces, 1), torch.cat(visible, 1)
            positions = vis_mask.long().cumsum(1) - 1
            cache = decoder.new_cache(b, x.shape[1])
            hidden = decoder(x, positions, vis_mask, cache)
            index, rank = torch.cat(slot_index), torch.cat(slot_rank)
            targets = torch.cat([ids[:, t, :n] for t, n in enumerate(counts)], 1)
            # slot j of a K-block is predicted by head j%K at the token before its block
            source = hidden[:, index - rank - 1]
            logits = decoder.lm_head(source).float().unflatten(-1, (k, cfg.vocab_size))
            logits = logits.gather(2, rank.view(1, -1, 1, 1).expand(b, -1, 1, cfg.vocab_size))
            probs = logits.squeeze(2).softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            # the loss predicted once slots 0..j are gazed: head (j+1)%K at slot j+1's source
            nxt = (rank + 1) % k
            loss_all = decoder.task_loss_prediction_head(hidden[:, index - nxt]).float()
            loss_pred = loss_all.gather(2, nxt.view(1, -1, 1).expand(b, -1, 1)).squeeze(-1)
        return GazeOutput(log_action_probs=torch.log(probs + 1e-8), gaze_probs=probs,
                          task_loss_prediction=loss_pred)

    # ---- streaming --------------------------------------------------------------------------------
    def init_stream(self, batch_size: int = 1) -> StreamState:
        """A fresh streaming state for ``batch_size`` parallel streams."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if self.config.vision.temporal_patch_size != 1:
            raise NotImplementedError("streaming needs temporal_patch_size 1")
        decoder = self.gazing_model.gaze_decoder
        k = decoder.cfg.num_multi_token_pred
        per_frame = frame_capacity(self.config.vision.num_tokens, self.num_tokens, k)
        return StreamState(new_state(decoder, batch_size, 4 * per_frame))

    @torch.no_grad()
    def stream_step(self, frame, state: StreamState, gazing_ratio=None, task_loss_requirement=None,
                    do_sample=False, temperature=1.0, generator=None,
                    official_batching=False, backend="auto") -> GazeOutput:
        """Gaze one preprocessed frame (B,3,H,W) of a stream; ids are frame-local (0…N−1)."""
        if not isinstance(frame, torch.Tensor) or frame.dim() != 4:
            raise ValueError(f"frame must be a tensor (B,3,H,W), got "
                             f"{tuple(frame.shape) if isinstance(frame, torch.Tensor) else type(frame)}")
        if frame.shape[0] != state.decode.valid_count.shape[0]:
            raise ValueError(f"frame has batch {frame.shape[0]}, the stream was started with "
                             f"{state.decode.valid_count.shape[0]}")
        video = self._check_video(frame.unsqueeze(1), name="frame")
        sampling = budgets.check_sampling(do_sample, temperature, generator, backend)
        frame_budgets, requirement = budgets.resolve(
            self.config, gazing_ratio, task_loss_requirement, video.shape[0], 1, video.device,
            sampling.generator)  # before touching the state: a rejected call leaves it intact
        with exact_float32(self.dtype == torch.float32):
            vision, state.conv_cache = self.embed(video, state.conv_cache)
            req = None if requirement is None else requirement[:, 0]
            if self.stop_by == "paint" and state.paint is None:
                state.paint = PaintStop.for_model(self.config, video.shape[0], video.device)
            measure = state.paint if self.stop_by == "paint" else None
            if measure is not None:
                measure.begin_frame(video[:, 0])
            tok, n = gaze_frame(self.gazing_model.gaze_decoder, state.decode, vision[:, 0],
                                frame_budgets[0], req, sampling, official_batching,
                                early_exit=video.device.type == "cpu",
                                select=selection_op(sampling.backend, video.device),
                                decode=decode_op(sampling.backend, self.gazing_model.gaze_decoder),
                                measure=measure)
            if measure is not None:
                measure.end_frame()
        state.frames_seen += 1
        eos = self.gazing_model.gaze_decoder.cfg.eos_token_id
        return self._output(assemble([tok], [n], self.num_tokens, self.config.tokens_per_scale, eos),
                            requirement)
